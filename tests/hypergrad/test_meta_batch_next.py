"""``meta_source="next"``: the meta step due after an optimiser step takes the next inner batch as its meta batch
and shares that step's forward. Checked against what it claims: the plain hypergradient on that batch at those
weights (with the inner forward's masks), and the trajectory of a learner that gets the same batches as its meta
split and runs its meta steps the usual way.
"""

from __future__ import annotations

import copy

import pytest
import torch
from backbone_helpers import VOCAB_SIZE, random_batch
from hypergrad_helpers import spy_on_hypergradient
from torch import nn

from meltr.combine import MetaLossTransformer
from meltr.learner import AuxiliaryLearner
from meltr.models import build_backbone


def tiny_univl() -> nn.Module:
    torch.manual_seed(0)
    return build_backbone("univl", "tiny", vocab_size=VOCAB_SIZE)


def combiner_for(tasks) -> MetaLossTransformer:
    torch.manual_seed(1)
    return MetaLossTransformer(tasks, d_model=16, mlp_hidden=8, ff_dim=32, num_heads=2)


@pytest.mark.parametrize("train_side", ["current", "replay"])
@pytest.mark.parametrize("backend", ["forward_difference", "jvp"])
def test_the_next_batch_meta_step_is_the_plain_hypergradient_there(train_side, backend):
    model = tiny_univl()
    learner = AuxiliaryLearner(
        model, combiner_for(model.tasks), torch.optim.SGD(model.parameters(), lr=1e-2), meta_every=1,
        meta_source="next", meta_train_batch=train_side, backend=backend, clip_norm=None,
    )  # fmt: skip
    calls = spy_on_hypergradient(learner)
    first, second = random_batch(batch_size=4, seed=0), random_batch(batch_size=4, seed=1)
    assert learner.step(first).meta is None and learner.meta_pending and not calls
    twin_model = copy.deepcopy(learner.model)  # the weights after the first optimiser step
    twin = AuxiliaryLearner(
        twin_model, copy.deepcopy(learner.combiner), torch.optim.SGD(twin_model.parameters(), lr=1e-2),
        backend=backend, clip_norm=None,
    )  # fmt: skip
    torch.manual_seed(3)
    state = torch.get_rng_state()
    stats = learner.step(second)
    assert stats.meta is not None and learner.meta_steps == 1  # (and the next one is due again)
    ((args, got),) = calls
    assert args[1] is second  # the meta batch is the inner batch
    if train_side == "current":
        assert args[0] is second
        expected, _ = twin.hypergradient(second, second, train_rng_state=state)
    else:
        assert args[0] is first  # the only batch in the replay buffer
        expected, _ = twin.hypergradient(first, second, meta_rng_state=state)
    scale = max(float(e.abs().max()) for e in expected)
    for g, e in zip(got, expected, strict=True):
        torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-5 * scale)


class TwoLosses(nn.Module):
    """Deterministic losses (no masks), so that two learners see the same values whatever their streams."""

    tasks = ("main", "aux")

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(3, 1)

    def forward(self, batch):
        out = self.linear(batch["x"]).squeeze(-1)
        return {"main": (out - batch["y"]) ** 2, "aux": (out - 0.5 * batch["y"]) ** 2}


def two_loss_batch(seed: int) -> dict:
    generator = torch.Generator().manual_seed(seed)
    return {"x": torch.randn(4, 3, generator=generator), "y": torch.randn(4, generator=generator)}


def test_the_trajectory_is_that_of_the_next_batches_as_meta_split():
    """A learner with ``meta_source="next"`` and one whose meta split is the sequence of its next inner batches
    take the same inner steps and combiner updates; only the statistics arrive one step later."""
    batches = [two_loss_batch(seed) for seed in range(6)]
    torch.manual_seed(0)
    model = TwoLosses()
    twin_model = copy.deepcopy(model)
    combiner = MetaLossTransformer(TwoLosses.tasks, d_model=8, mlp_hidden=4, ff_dim=8, num_heads=2)
    twin_combiner = copy.deepcopy(combiner)
    options = {"meta_every": 2, "backend": "forward_difference", "clip_norm": None}
    nxt = AuxiliaryLearner(model, combiner, torch.optim.SGD(model.parameters(), lr=0.1), meta_source="next", **options)
    # the usual meta step after optimiser step k (k = 2, 4) on the batch of step k + 1
    split = [batches[2], batches[4]]
    usual = AuxiliaryLearner(
        twin_model, twin_combiner, torch.optim.SGD(twin_model.parameters(), lr=0.1), meta_source="split",
        meta_data=split, **options,
    )  # fmt: skip
    metas = []
    for batch in batches:
        metas.append(nxt.step(batch).meta is not None)
        combiner_before = copy.deepcopy(twin_combiner.state_dict())
        usual.step(batch)
        for a, b in zip(model.parameters(), twin_model.parameters(), strict=True):
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
        # the next-batch learner runs the update the usual one ran a step before, at the start of this step
        for key, value in combiner.state_dict().items():
            torch.testing.assert_close(value, combiner_before[key], rtol=1e-6, atol=1e-7)
    assert metas == [False, False, True, False, True, False] and nxt.meta_pending
    assert usual.meta_steps == 3 and nxt.meta_steps == 2


def test_next_needs_the_step_api_and_one_plain_micro_batch():
    model = TwoLosses()
    combiner = MetaLossTransformer(TwoLosses.tasks, d_model=8, mlp_hidden=4, ff_dim=8, num_heads=2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="meta_source='next'"):
        AuxiliaryLearner(model, combiner, optimizer, meta_source="next", accumulate=2)
    learner = AuxiliaryLearner(model, combiner, optimizer, meta_source="next")
    with pytest.raises(RuntimeError, match="meta_source='next'"):
        learner.inner_loss(two_loss_batch(0))
