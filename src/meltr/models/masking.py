"""Random masking of the inputs for the masked pretext tasks, and in-batch negatives for matching tasks.

Every function draws from ``generator`` when one is given, else from torch's global RNG, and always draws the
same tensors in the same order whatever the inputs, so that seeding (``torch.manual_seed``) or a generator in
a known state replays the same masks: the hypergradient estimators evaluate the losses more than once at one
point and need the losses to be the same function each time.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from meltr.config import help_field

PAD_ID, CLS_ID, SEP_ID, MASK_ID, UNK_ID = 0, 1, 2, 3, 4
"""Special token ids shared with the synthetic world (``meltr.data``)."""

NUM_SPECIAL_TOKENS = 5
"""Ids below this are special; random replacement tokens come from ``[NUM_SPECIAL_TOKENS, vocab_size)``."""

SPECIAL_TOKEN_NAMES: tuple[str, ...] = ("pad", "cls", "sep", "mask", "unk", "first_regular")
WORLD_SPECIAL_TOKENS: dict[str, int] = {
    "pad": PAD_ID,
    "cls": CLS_ID,
    "sep": SEP_ID,
    "mask": MASK_ID,
    "unk": UNK_ID,
    "first_regular": NUM_SPECIAL_TOKENS,
}
"""The world tokenizer's special ids; a backbone's ``special_tokens`` config field takes another tokenizer's
(e.g. :attr:`meltr.data.wordpiece.WordPieceTokenizer.special_ids`). ``first_regular``: random replacement tokens
are drawn from ``[first_regular, vocab_size)``."""


def special_tokens(values: dict[str, int] | None) -> dict[str, int]:
    """The world's special ids updated with ``values``; a ``ValueError`` names an unknown or non-int entry."""
    merged = {**WORLD_SPECIAL_TOKENS, **(values or {})}
    bad = sorted(k for k, v in merged.items() if k not in SPECIAL_TOKEN_NAMES or not isinstance(v, int) or v < 0)
    if bad:
        raise ValueError(f"special_tokens: bad entries {bad}; give non-negative ints for {list(SPECIAL_TOKEN_NAMES)}")
    return merged


def special_tokens_field() -> Any:
    """The ``special_tokens`` field of a backbone config (normalise it with :func:`special_tokens` in the config's
    ``__post_init__``)."""
    return help_field(
        "Special token ids of the tokenizer (pad, cls, sep, mask, unk, first_regular); missing ones are the "
        "world tokenizer's. Give a real-text tokenizer's, e.g. WordPieceTokenizer().special_ids.",
        factory=dict,
    )


def sample_positions(
    eligible: Tensor, prob: float, generator: torch.Generator | None = None, at_least_one: bool = True
) -> Tensor:
    """Select each eligible position independently with probability ``prob``.

    Args:
        eligible: boolean ``[B, N]``, the positions that may be selected.
        prob: selection probability.
        generator: RNG to draw from (default: the global one).
        at_least_one: if a row has eligible positions but none was drawn, select one of them at random, as the
            official UniVL and Violet data loaders do (they redraw until something is masked). Ignored if
            ``prob == 0``.

    Returns:
        boolean ``[B, N]``, a subset of ``eligible``.
    """
    draws = torch.rand(eligible.shape, generator=generator, device=eligible.device)
    selected = eligible & (draws < prob)
    if at_least_one and prob > 0:
        missing = eligible.any(-1) & ~selected.any(-1)
        # The eligible position with the smallest draw: uniform among the eligible ones, and no extra draw.
        first = draws.masked_fill(~eligible, 2.0).argmin(-1)
        selected = selected | (F.one_hot(first, eligible.shape[-1]).bool() & missing[:, None])
    return selected


def mask_tokens(
    tokens: Tensor,
    vocab_size: int,
    prob: float = 0.15,
    token_mask: Tensor | None = None,
    generator: torch.Generator | None = None,
    at_least_one: bool = True,
    mask_fraction: float = 0.8,
    random_fraction: float = 0.1,
    special: dict[str, int] | None = None,
) -> tuple[Tensor, Tensor]:
    """BERT's masking: select ``prob`` of the tokens; of those, ``mask_fraction`` become [MASK],
    ``random_fraction`` a random token, the rest stay as they are.

    [PAD], [CLS] and [SEP] (and positions where ``token_mask`` is False) are never selected.

    Args:
        tokens: ``[B, L]`` token ids.
        vocab_size: vocabulary size; random tokens are drawn from ``[NUM_SPECIAL_TOKENS, vocab_size)``.
        prob: selection probability per eligible token (0.15 in BERT and UniVL).
        token_mask: boolean ``[B, L]``, True = real token.
        generator: RNG (default: the global one).
        at_least_one: select at least one token per row that has an eligible one (see
            :func:`sample_positions`).
        mask_fraction: share of the selected tokens replaced by [MASK].
        random_fraction: share of the selected tokens replaced by a random token.
        special: the tokenizer's special ids (:func:`special_tokens`; default the world's).

    Returns:
        ``(masked_tokens, selected)``: the corrupted ids ``[B, L]`` and the boolean ``[B, L]`` positions whose
        original token is the prediction target.
    """
    ids = WORLD_SPECIAL_TOKENS if special is None else special
    if vocab_size <= ids["first_regular"]:
        raise ValueError(f"vocab_size must exceed the {ids['first_regular']} special tokens, got {vocab_size}")
    eligible = (tokens != ids["pad"]) & (tokens != ids["cls"]) & (tokens != ids["sep"])
    if token_mask is not None:
        eligible = eligible & token_mask.bool()
    selected = sample_positions(eligible, prob, generator, at_least_one)
    action = torch.rand(tokens.shape, generator=generator, device=tokens.device)
    random_tokens = torch.randint(
        ids["first_regular"], vocab_size, tokens.shape, generator=generator, device=tokens.device
    )
    masked = torch.where(selected & (action < mask_fraction), torch.full_like(tokens, ids["mask"]), tokens)
    replace = selected & (action >= mask_fraction) & (action < mask_fraction + random_fraction)
    return torch.where(replace, random_tokens, masked), selected


def mask_text(
    tokens: Tensor, token_mask: Tensor, config: Any, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """:func:`mask_tokens` as a backbone masks its text: with its config's ``vocab_size``, ``text_mask_prob`` and
    ``special_tokens``."""
    return mask_tokens(
        tokens, config.vocab_size, config.text_mask_prob, token_mask, generator, special=config.special_tokens
    )


def mask_frames(
    video: Tensor,
    prob: float = 0.15,
    generator: torch.Generator | None = None,
    at_least_one: bool = True,
    eligible: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Select ``prob`` of the frames of each clip and zero them (UniVL zeroes masked frame features).

    Args:
        video: ``[B, F, ...]``.
        prob: selection probability per frame.
        generator: RNG (default: the global one).
        at_least_one: select at least one frame per clip.
        eligible: boolean ``[B, F]``, the frames that may be selected (default all; padded feature rows are not).

    Returns:
        ``(masked_video, selected)``: the video with the selected frames zeroed, and the boolean ``[B, F]``.
    """
    if eligible is None:
        eligible = torch.ones(video.shape[:2], dtype=torch.bool, device=video.device)
    selected = sample_positions(eligible, prob, generator, at_least_one)
    keep = (~selected).to(video.dtype).reshape(*selected.shape, *([1] * (video.dim() - 2)))
    return video * keep, selected


def sample_negatives(
    batch_size: int,
    clip_id: Tensor | None = None,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    logits: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Pick for each sample a negative partner among the other samples of the batch.

    Uniformly, or with ``logits`` as in ALBEF's hard negatives (Li et al. 2021): sample ``i`` takes partner
    ``j`` with probability ``softmax_j(logits[i, j])`` over the valid ``j``, so that the partners that look
    most alike (a high contrastive similarity) are the likeliest (Gumbel-max). Both modes consume the same
    ``[B, B]`` uniforms, so the generator advances identically; at fixed logits a seed fixes the partners. A row
    whose valid logits are all ``-inf`` has no partner (``valid`` False).

    A partner with the same ``clip_id`` (another caption of the same clip) is not a negative and is never
    picked.

    Args:
        batch_size: ``B``.
        clip_id: ``[B]`` clip ids, or None if every sample is a different clip.
        generator: RNG (default: the global one).
        device: device of the result.
        logits: ``[B, B]`` unnormalised log-probabilities of the partners (no gradient flows through them),
            or None for uniform partners.

    Returns:
        ``(index, valid)``: int64 ``[B]`` the partner of each sample, and boolean ``[B]``, False where
        the batch holds no negative for that sample (then ``index`` is meaningless).
    """
    draws = torch.rand(batch_size, batch_size, generator=generator, device=device)
    invalid = torch.eye(batch_size, dtype=torch.bool, device=draws.device)
    if clip_id is not None:
        invalid = invalid | (clip_id[:, None] == clip_id[None, :]).to(draws.device)
    if logits is None:
        scores = draws  # argmax of the uniforms = argmax of their Gumbel transforms: uniform partners
    else:
        if logits.shape != (batch_size, batch_size):
            raise ValueError(f"sample_negatives: logits must be [{batch_size}, {batch_size}], got {list(logits.shape)}")
        gumbel = -torch.log(-torch.log(draws.clamp_min(torch.finfo(draws.dtype).tiny)))
        scores = logits.detach().to(draws.device, draws.dtype) + gumbel
    index = scores.masked_fill(invalid, -torch.inf).argmax(-1)
    return index, ~invalid.gather(1, index[:, None]).squeeze(1)


def other_samples_of_same_clip(clip_id: Tensor | None, batch_size: int, device=None) -> Tensor | None:
    """Boolean ``[B, B]``: True where ``j != i`` shows the same clip as ``i`` (false negatives of a
    contrastive loss), or None if no ``clip_id`` is known."""
    if clip_id is None:
        return None
    same = clip_id[:, None] == clip_id[None, :]
    return (same & ~torch.eye(batch_size, dtype=torch.bool, device=same.device)).to(device)


__all__ = [
    "CLS_ID",
    "MASK_ID",
    "NUM_SPECIAL_TOKENS",
    "PAD_ID",
    "SEP_ID",
    "UNK_ID",
    "WORLD_SPECIAL_TOKENS",
    "mask_frames",
    "mask_tokens",
    "other_samples_of_same_clip",
    "sample_negatives",
    "sample_positions",
    "special_tokens",
]
