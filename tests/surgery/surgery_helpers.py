"""Small backbones for the surgery tests: losses with literal gradients, and a video-audio-text model."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from meltr.models.losses import info_nce, mil_nce


class LinearLosses(nn.Module):
    """``l_t = <c_t, w>``: task ``t``'s gradient is the literal vector ``c_t``, whatever ``w``.

    Args:
        coefficients: ``[T, P]``, one row per task.
        shapes: the parameters' shapes (their sizes add up to ``P``).
        tasks: the task names.
    """

    def __init__(self, coefficients: Tensor, shapes: list[tuple[int, ...]], tasks: tuple[str, ...]) -> None:
        super().__init__()
        self.tasks = tasks
        self.register_buffer("coefficients", coefficients.double())
        self.weights = nn.ParameterList(nn.Parameter(torch.ones(shape, dtype=torch.float64)) for shape in shapes)

    def forward(self, batch=None) -> dict[str, Tensor]:
        flat = torch.cat([w.reshape(-1) for w in self.weights])
        return {t: self.coefficients[i] @ flat for i, t in enumerate(self.tasks)}


class VideoAudioText(nn.Module):
    """Three linear towers into one space; per-sample NCE (video-audio) and MIL-NCE (video-text) losses ``[B]``."""

    def __init__(self, video_dim: int = 5, audio_dim: int = 4, text_dim: int = 3, embed_dim: int = 4) -> None:
        super().__init__()
        self.video = nn.Sequential(nn.Linear(video_dim, 6), nn.Tanh(), nn.Linear(6, embed_dim))
        self.audio = nn.Linear(audio_dim, embed_dim)
        self.text = nn.Linear(text_dim, embed_dim)

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        video = self.video(batch["video"])
        return {
            "va": info_nce(video, self.audio(batch["audio"]), temperature=0.5, reduction="none"),
            "vt": mil_nce(video, self.text(batch["text"]), temperature=0.5, reduction="none"),
        }


def video_audio_text_batch(batch_size: int = 6, bag: int = 3, seed: int = 0) -> dict[str, Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "video": torch.randn(batch_size, 5, generator=g, dtype=torch.float64),
        "audio": torch.randn(batch_size, 4, generator=g, dtype=torch.float64),
        "text": torch.randn(batch_size, bag, 3, generator=g, dtype=torch.float64),
    }


def build_video_audio_text(seed: int = 0) -> VideoAudioText:
    torch.manual_seed(seed)
    return VideoAudioText().double()


def flat_grad(output: Tensor, params: list[Tensor]) -> Tensor:
    """``grad output`` w.r.t. ``params``, flattened and concatenated (zeros for unused parameters)."""
    grads = torch.autograd.grad(output, params, retain_graph=True, allow_unused=True)
    return torch.cat(
        [(torch.zeros_like(p) if g is None else g).reshape(-1) for p, g in zip(params, grads, strict=True)]
    )


def unflatten(flat: Tensor, params: list[Tensor]) -> list[Tensor]:
    out, offset = [], 0
    for p in params:
        out.append(flat[offset : offset + p.numel()].view_as(p))
        offset += p.numel()
    return out
