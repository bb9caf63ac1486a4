"""Activations cached at the scope boundary (``cache_scope_inputs``, :mod:`meltr.hypergrad.cache`): the passes of a
meta step replay the trunk below the scope instead of recomputing it. The option claims exactness: every
hypergradient with the cache equals the uncached one (same weights, batches, masks) to float rounding, on two
backbones and every backend, and the inner steps of a learner are unchanged by it.
"""

from __future__ import annotations

import copy

import pytest
import torch
from backbone_helpers import VOCAB_SIZE, random_batch
from torch import nn

from meltr.combine import MetaLossTransformer
from meltr.hypergrad import MetaProblem, build_estimator
from meltr.hypergrad.backends import BACKENDS
from meltr.hypergrad.cache import ScopeCache, trunk_modules
from meltr.learner import AuxiliaryLearner, select_parameters
from meltr.models import build_backbone

# Two blocks per stack (the tiny presets have one in UniVL), so that last_blocks(1) leaves blocks below the scope;
# dropout on, so that replaying the generator state after a skipped call matters.
BACKBONES = {
    "univl": {"text_layers": 2, "video_layers": 2, "cross_layers": 2, "decoder_layers": 2, "dropout": 0.1},
    "violet": {"layers": 3, "dropout": 0.1},
}


def backbone(name: str) -> nn.Module:
    torch.manual_seed(0)
    return build_backbone(name, "tiny", vocab_size=VOCAB_SIZE, **BACKBONES[name])


def combiner_for(model: nn.Module) -> MetaLossTransformer:
    torch.manual_seed(1)
    return MetaLossTransformer(model.tasks, d_model=16, mlp_hidden=8, ff_dim=32, num_heads=2)


class Counting(nn.Module):
    """Counts the calls of a wrapped module's forward (patched on the instance, as the cache patches it)."""

    def __init__(self, module: nn.Module) -> None:
        self.calls = 0
        self.original = module.forward

        def forward(*args, **kwargs):
            self.calls += 1
            return self.original(*args, **kwargs)

        module.forward = forward


def problem(model, combiner, backend: str, cache: bool, scope: str = "last_blocks(1)") -> MetaProblem:
    names = select_parameters(model, scope)
    named = dict(model.named_parameters())
    train, meta = random_batch(batch_size=4, seed=0), random_batch(batch_size=4, seed=1)
    seeds = {id(train): 11, id(meta): 12}

    class SameMasks(MetaProblem):
        def seed_of(self, batch):
            return seeds[id(batch)]

    return SameMasks(
        model=model, combiner=combiner, param_names=names, train_batch=train, meta_batch=meta,
        backend=BACKENDS.get(backend), scope_cache=ScopeCache(model, [named[n] for n in names]) if cache else None,
    )  # fmt: skip


def assert_same(got, expected, rtol=1e-5):
    scale = max(float(e.abs().max()) for e in expected)
    for g, e in zip(got, expected, strict=True):
        torch.testing.assert_close(g, e, rtol=rtol, atol=rtol * scale)


@pytest.mark.parametrize("name", list(BACKBONES))
@pytest.mark.parametrize("backend", ["jvp", "forward_difference", "finite_difference", "double_backward"])
def test_cached_hypergradient_equals_the_plain_scoped_one(name, backend):
    """Identity estimator, scope ``last_blocks(1)``: with the cache, the same hypergradient to float rounding."""
    model = backbone(name)
    combiner = combiner_for(model)
    plain = build_estimator("identity")(problem(model, combiner, backend, cache=False))
    cached_problem = problem(model, combiner, backend, cache=True)
    cached = build_estimator("identity")(cached_problem)
    assert_same(cached, plain)
    assert any(record.cached_calls > 0 for record in cached_problem.trunk_records.values())


@pytest.mark.parametrize("estimator", ["unrolled", "neumann"])
def test_other_estimators_are_unchanged_by_the_cache(estimator):
    model = backbone("violet")
    combiner = combiner_for(model)
    plain = build_estimator(estimator)(problem(model, combiner, "jvp", cache=False))
    cached = build_estimator(estimator)(problem(model, combiner, "jvp", cache=True))
    assert_same(cached, plain, rtol=1e-4)


def test_the_later_passes_skip_the_trunk():
    """VIOLET, scope = its last block: the perturbed forward of ``forward_difference`` runs no block below it."""
    model = backbone("violet")
    first = Counting(model.encoder.blocks[0])
    last = Counting(model.encoder.blocks[-1])
    p = problem(model, combiner_for(model), "forward_difference", cache=True)
    build_estimator("identity")(p)
    # three passes (meta batch; train batch: the base forward records, the perturbed one replays), each calling
    # the encoder the same number of times; the first block runs in the first two only
    per_pass = last.calls // 3
    assert per_pass >= 1 and last.calls == 3 * per_pass
    assert first.calls == 2 * per_pass


def test_modules_fed_by_the_scope_are_recomputed():
    """UniVL: the cross encoder's first block holds no scoped weight, but its input comes from the text encoder's
    last (scoped) block, so it is recomputed, not cached; the text encoder's first block is cached."""
    model = backbone("univl")
    p = problem(model, combiner_for(model), "forward_difference", cache=True)
    build_estimator("identity")(p)
    record = p.trunk_records[id(p.train_batch)]
    cross = record.calls[id(model.cross_encoder.blocks[0])]
    text = record.calls[id(model.text_encoder.blocks[0])]
    assert cross and not any(call.cached for call in cross)
    assert text and all(call.cached for call in text)
    assert model.cross_encoder.blocks[0] in p.scope_cache.modules


def test_a_trunk_wired_differently_at_replay_is_refused():
    model = backbone("violet")
    names = select_parameters(model, "last_blocks(1)")
    named = dict(model.named_parameters())
    cache = ScopeCache(model, [named[n] for n in names])
    batch, other = random_batch(batch_size=4, seed=0), random_batch(batch_size=3, seed=0)
    with cache.recording([named[n] for n in names]) as record:
        model(batch)
    with pytest.raises(RuntimeError, match="cache_scope_inputs"), cache.replaying(record):
        model(other)
    assert "forward" not in model.encoder.blocks[0].__dict__  # the patches are gone


def test_the_whole_model_in_scope_is_refused():
    model = backbone("violet")
    with pytest.raises(ValueError, match="cache_scope_inputs"):
        trunk_modules(model, list(model.parameters()))
    with pytest.raises(ValueError, match="cache_scope_inputs"):
        AuxiliaryLearner(
            model, combiner_for(model), torch.optim.SGD(model.parameters(), lr=0.1), cache_scope_inputs=True
        )


@pytest.mark.parametrize(
    ("name", "backend", "meta_source"),
    [(n, b, "split") for n in BACKBONES for b in ("jvp", "forward_difference")] + [("violet", "jvp", "next")],
)
def test_the_learner_with_the_cache_follows_the_same_trajectory(name, backend, meta_source):
    """``meta_train_batch="current"``: the inner forward records the train-side trunk, the meta step replays it.
    Inner steps and combiner updates match the learner without the cache to float rounding (also with the meta
    batch taken from the next inner step, whose forward then records the trunk of both sides)."""
    model = backbone(name)
    combiner = combiner_for(model)
    twin_model, twin_combiner = copy.deepcopy(model), copy.deepcopy(combiner)
    meta = random_batch(batch_size=4, seed=9)

    def make(m, c, cache):
        return AuxiliaryLearner(
            m, c, torch.optim.SGD(m.parameters(), lr=1e-2), meta_every=1, meta_source=meta_source, meta_data=[meta],
            backend=backend, hypergrad_scope="last_blocks(1)", meta_train_batch="current", cache_scope_inputs=cache,
        )  # fmt: skip

    learners = make(model, combiner, True), make(twin_model, twin_combiner, False)
    for step in range(3 if meta_source == "next" else 2):
        batch = random_batch(batch_size=4, seed=20 + step)
        stats = []
        for learner in learners:
            torch.manual_seed(100 + step)
            stats.append(learner.step(batch))
        if meta_source == "next" and step == 0:
            continue
        assert stats[0].meta is not None
        assert stats[0].meta.hypergrad_norm == pytest.approx(stats[1].meta.hypergrad_norm, rel=1e-4)
    for a, b in zip(model.parameters(), twin_model.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    for a, b in zip(combiner.parameters(), twin_combiner.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
