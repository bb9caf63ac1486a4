"""What a backbone declares about its encoders for the adapters that go into them.

A backbone class names its transformer stacks as :class:`AdapterSite` s (``adapter_sites``: where a stack is and
whether its tokens are text, video, or both). A single-stream encoder carries text and video tokens in one sequence,
and which is which changes from call to call (text alone, video alone, or both); such a backbone keeps a
:class:`TokenLayouts` stack (``token_layouts``) and pushes the :class:`TokenLayout` of every call of its encoder
onto it, so that an adapter inside a block reads the layout of the call it is in.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

from torch import Tensor

ROLES: tuple[str, ...] = ("text", "video", "mixed")


@dataclass(frozen=True)
class AdapterSite:
    """A transformer stack an adapter may go into (``path``: a submodule with ``blocks``) and the modality of its
    tokens: ``"text"``, ``"video"`` or ``"mixed"`` (leading text tokens, then video tokens)."""

    path: str
    role: str

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ValueError(f"AdapterSite.role must be one of {ROLES}, got {self.role!r}")


@dataclass(frozen=True)
class TokenLayout:
    """Which tokens of a block's input ``[N, M, d]`` are text and how the video tokens are arranged.

    Args:
        text_tokens: the first ``text_tokens`` tokens of every sequence are text, the rest video.
        frames: frames ``F`` of the video tokens (0 if there are none).
        frames_in_batch: the sequences are per frame, ``N = B * F`` and ``M - text_tokens = T`` tokens
            (All-in-one); otherwise ``N = B`` and ``M - text_tokens = F * T``, frame-major.
    """

    text_tokens: int
    frames: int = 0
    frames_in_batch: bool = False

    def video_grid(self, video: Tensor) -> Tensor:
        """Video tokens ``[N, M', d]`` -> ``[B, F, T, d]``."""
        count, width, dim = video.shape
        if self.frames_in_batch:
            return video.reshape(count // self.frames, self.frames, width, dim)
        if width % self.frames:
            raise ValueError(f"{width} video tokens do not split into {self.frames} frames")
        return video.reshape(count, self.frames, width // self.frames, dim)


class TokenLayouts:
    """The layouts of the single-stream encoder calls in progress, innermost last (a plain object, no state)."""

    def __init__(self) -> None:
        self.stack: list[TokenLayout] = []

    @contextlib.contextmanager
    def push(self, layout: TokenLayout) -> Iterator[TokenLayout]:
        """``with layouts.push(layout): encoder(...)``: ``layout`` is :meth:`current` inside the block."""
        self.stack.append(layout)
        try:
            yield layout
        finally:
            self.stack.pop()

    def current(self) -> TokenLayout:
        if not self.stack:
            raise RuntimeError(
                "an adapter of a single-stream encoder ran outside the backbone's encoder call, so it does not know "
                "which tokens are text; call the backbone's forward / encode_* methods"
            )
        return self.stack[-1]


__all__ = ["ROLES", "AdapterSite", "TokenLayout", "TokenLayouts"]
