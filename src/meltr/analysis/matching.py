"""Does a cross encoder's video-text matching read the video? Held-out accuracy on matched and mismatched pairs.

Each held-out clip is scored twice by the backbone's matching head (``match_score``, a logit): with its own video
(a matched pair, right when the logit is positive) and with the next clip's video in the batch (a mismatched pair,
right when the logit is negative). A head that ignores the video scores both pairs alike and stays at 0.5.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import torch
from torch import Tensor, nn


@dataclass(frozen=True)
class MatchingAccuracy:
    """Rates over the held-out clips (chance 0.5 for each).

    Attributes:
        accuracy: ``(matched + mismatched) / 2``, the balanced accuracy of the sign of the logit.
        matched: fraction of matched pairs with a positive logit.
        mismatched: fraction of mismatched pairs with a negative logit.
        pairwise: fraction of clips whose matched pair outscores their mismatched one.
        clips: number of clips scored.
    """

    accuracy: float
    matched: float
    mismatched: float
    pairwise: float
    clips: int


@torch.no_grad()
def matching_accuracy(model: nn.Module, batches: Iterable[Mapping[str, Tensor]]) -> MatchingAccuracy:
    """Score every clip of ``batches`` with its own video and with the next clip's (``video`` rolled by one).

    Args:
        model: a backbone with ``match_score(batch) -> [B]`` logits; put it in eval mode first.
        batches: held-out batches of at least two clips each (a one-clip batch has no other video).

    Raises:
        ValueError: a batch of fewer than two clips, or no batch at all.
    """
    right, wrong = [], []
    for batch in batches:
        if batch["video"].shape[0] < 2:
            raise ValueError("matching_accuracy: every batch needs at least two clips to mismatch them; use batch >= 2")
        right.append(model.match_score(batch).float())
        wrong.append(model.match_score({**batch, "video": batch["video"].roll(1, 0)}).float())
    if not right:
        raise ValueError("matching_accuracy: no batch to score")
    matched, mismatched = torch.cat(right), torch.cat(wrong)
    hit, reject = (matched > 0).float().mean().item(), (mismatched < 0).float().mean().item()
    return MatchingAccuracy(
        accuracy=0.5 * (hit + reject),
        matched=hit,
        mismatched=reject,
        pairwise=(matched > mismatched).float().mean().item(),
        clips=len(matched),
    )
