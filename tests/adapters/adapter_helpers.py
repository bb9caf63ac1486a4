"""Helpers of the adapter tests: tiny backbones, small batches and a fixed random stream for the pretext masks."""

from __future__ import annotations

import torch
from backbone_helpers import VOCAB_SIZE, random_batch, tiny

BACKBONE_NAMES = ("univl", "violet", "allinone")


def small_batch(vocab_size: int = VOCAB_SIZE, seed: int = 0) -> dict[str, torch.Tensor]:
    """Two clips of four frames: enough for every loss, the temporal convolution and the negatives."""
    return random_batch(batch_size=2, frames=4, length=8, vocab_size=vocab_size, seed=seed)


def outputs(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Every output a backbone gives: its task losses (fixed masks) and its representations."""
    losses = model(batch, torch.Generator().manual_seed(0))
    return {
        **{f"loss/{k}": v for k, v in losses.items()},
        "encode_text": model.encode_text(batch),
        "encode_video": model.encode_video(batch),
        "fused": model.fused(batch),
        "match_score": model.match_score(batch),
    }


def train_steps(model: torch.nn.Module, batch: dict[str, torch.Tensor], steps: int = 2) -> None:
    """A few AdamW steps (weight decay on) on the sum of the task losses, over EVERY parameter of the model: the
    frozen ones must stay put because they get no gradient, not because the optimiser never saw them."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    for step in range(steps):
        losses = model(batch, torch.Generator().manual_seed(step))
        optimizer.zero_grad()
        sum(v.mean() for v in losses.values()).backward()
        optimizer.step()


def assert_same_outputs(actual: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    assert actual.keys() == expected.keys()
    for key in expected:
        assert torch.equal(actual[key], expected[key]), key


def differing_outputs(actual: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> list[str]:
    return [key for key in expected if not torch.equal(actual[key], expected[key])]


__all__ = [
    "BACKBONE_NAMES",
    "VOCAB_SIZE",
    "assert_same_outputs",
    "differing_outputs",
    "outputs",
    "random_batch",
    "small_batch",
    "tiny",
    "train_steps",
]
