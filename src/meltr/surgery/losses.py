"""The cross-modal alignment losses of VATT-style pre-training (Sec. 2 of Wu et al., NeurIPS 2022).

``CMA_va``: NCE between a video and its audio, the other clips of the batch as negatives. ``CMA_vt``: MIL-NCE
(Miech et al., "End-to-End Learning of Visual Representations from Uncurated Instructional Videos", CVPR 2020,
Eq. 1) between a video and a *bag* ``P_k`` of ``k`` temporally neighbouring captions, any of which may be the one that
matches::

    CMA_vt(i) = -log( sum_{t in P_k(i)} e^{v_i . t / tau} / (sum_{t in P_k(i)} e^{v_i . t / tau}
                                                              + sum_{(v', t') in N(i)} e^{v' . t' / tau}) ).

Both return per-sample losses ``[B]`` with ``reduction="none"``, the shape the per-sample curriculum needs. A sample's
loss depends on the other samples (its negatives); its gradient is taken as such.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def _check(temperature: float, reduction: str) -> None:
    if not temperature > 0:
        raise ValueError(f"the temperature must be positive, got {temperature}")
    if reduction not in ("none", "mean"):
        raise ValueError(f"reduction must be 'none' (per-sample [B]) or 'mean', got {reduction!r}")


def _reduce(losses: Tensor, reduction: str) -> Tensor:
    return losses if reduction == "none" else losses.mean()


def info_nce(
    video: Tensor,
    audio: Tensor,
    temperature: float = 0.07,
    symmetric: bool = True,
    normalize: bool = True,
    reduction: str = "mean",
) -> Tensor:
    """NCE (InfoNCE) between paired embeddings, the other pairs of the batch as negatives.

    With ``s_ij = v_i . a_j / tau``: ``l_i = -log softmax_j(s_ij)[i]`` (video -> audio); symmetric:
    ``l_i = (-log softmax_j(s_ij)[i] - log softmax_j(s_ji)[i]) / 2``, adding audio -> video.

    Args:
        video: ``[B, D]`` embeddings.
        audio: ``[B, D]`` embeddings, ``audio[i]`` the positive of ``video[i]``.
        temperature: ``tau``.
        symmetric: average both directions.
        normalize: L2-normalise the embeddings first (cosine similarities, as VATT).
        reduction: ``"none"`` for per-sample ``[B]``, ``"mean"`` for a scalar.
    """
    _check(temperature, reduction)
    if video.dim() != 2 or video.shape != audio.shape:
        raise ValueError(f"expected two [B, D] embeddings of one shape, got {tuple(video.shape)}, {tuple(audio.shape)}")
    if normalize:
        video, audio = F.normalize(video, dim=-1), F.normalize(audio, dim=-1)
    logits = video @ audio.T / temperature
    losses = -logits.log_softmax(dim=1).diagonal()
    if symmetric:
        losses = (losses - logits.log_softmax(dim=0).diagonal()) / 2
    return _reduce(losses, reduction)


def mil_nce(
    video: Tensor,
    text: Tensor,
    temperature: float = 0.07,
    symmetric: bool = True,
    normalize: bool = True,
    reduction: str = "mean",
) -> Tensor:
    """MIL-NCE between each video and its bag of ``K`` neighbouring captions.

    With ``s_ijk = v_i . t_jk / tau``:
    ``l_i = -logsumexp_k s_iik + logsumexp(positives and negatives)``, the negatives being every other clip's
    captions ``{s_ijk : j != i}`` and, if ``symmetric``, every other clip's video against clip ``i``'s captions
    ``{s_jik : j != i}`` (both kinds, as the official code's ``cat(x, x^T)``; unlike that code, the positives are
    counted once in the denominator, as in Eq. 1 of Miech et al.). ``K = 1`` is NCE.

    Args:
        video: ``[B, D]`` embeddings.
        text: ``[B, K, D]`` caption embeddings, ``text[i]`` the bag of ``video[i]`` (``[B, D]``: ``K = 1``).
        temperature: ``tau``.
        symmetric: also contrast the other videos against each clip's captions.
        normalize: L2-normalise the embeddings first.
        reduction: ``"none"`` for per-sample ``[B]``, ``"mean"`` for a scalar.
    """
    _check(temperature, reduction)
    if text.dim() == 2:
        text = text.unsqueeze(1)
    if video.dim() != 2 or text.dim() != 3 or text.shape[0] != video.shape[0] or text.shape[2] != video.shape[1]:
        raise ValueError(
            f"expected video [B, D] and text [B, K, D] (or [B, D]), got {tuple(video.shape)}, {tuple(text.shape)}"
        )
    if normalize:
        video, text = F.normalize(video, dim=-1), F.normalize(text, dim=-1)
    batch, bag, _ = text.shape
    scores = torch.einsum("id,jkd->ijk", video, text) / temperature  # [B, B, K]
    own = torch.eye(batch, dtype=torch.bool, device=video.device)
    positives = scores[own].logsumexp(-1)  # [B]: s_iik over k
    candidates = [scores.reshape(batch, batch * bag)]  # video i against every caption (its own bag included)
    if symmetric:
        # Other videos against clip i's captions; j == i is already among the candidates.
        others = scores.transpose(0, 1).masked_fill(own.unsqueeze(-1), torch.finfo(scores.dtype).min)
        candidates.append(others.reshape(batch, batch * bag))
    losses = torch.cat(candidates, dim=1).logsumexp(-1) - positives
    return _reduce(losses, reduction)


__all__ = ["info_nce", "mil_nce"]
