"""``scope_cosine_every``: every N meta steps the learner also computes the full-scope hypergradient and logs its
cosine with the scoped one (``meta/scope_cosine``), which ``meltr analyze`` summarises. The logged value is the cosine
to the plain full-scope hypergradient at the same weights, batches and masks, and the check changes nothing in the
run.
"""

from __future__ import annotations

import copy

import pytest
import torch
from backbone_helpers import VOCAB_SIZE, random_batch

from meltr.analysis.meta_signal import describe, meta_signal
from meltr.combine import MetaLossTransformer
from meltr.config import ConfigError
from meltr.learner import AuxiliaryLearner
from meltr.models import build_backbone
from meltr.recipes.finetune import FinetuneConfig


def setup():
    torch.manual_seed(0)
    model = build_backbone("univl", "tiny", vocab_size=VOCAB_SIZE)
    torch.manual_seed(1)
    combiner = MetaLossTransformer(model.tasks, d_model=16, mlp_hidden=8, ff_dim=32, num_heads=2)
    return model, combiner


def make(model, combiner, meta, **options):
    return AuxiliaryLearner(
        model, combiner, torch.optim.SGD(model.parameters(), lr=1e-2), meta_every=1, meta_source="split",
        meta_data=[meta], clip_norm=None, **options,
    )  # fmt: skip


def test_the_logged_cosine_is_the_cosine_to_the_plain_full_hypergradient():
    model, combiner = setup()
    meta, batch = random_batch(batch_size=4, seed=1), random_batch(batch_size=4, seed=0)
    combiner_before = copy.deepcopy(combiner)
    learner = make(model, combiner, meta, hypergrad_scope="last_blocks(1)", scope_cosine_every=2)
    scoped = []
    original = learner.hypergradient

    def spy(*args, **kwargs):
        out = original(*args, **kwargs)
        if kwargs.get("scope") is None:
            scoped.append(out[0])
        return out

    learner.hypergradient = spy
    torch.manual_seed(5)
    stats = learner.step(batch)
    cosine = stats.meta.extras["scope_cosine"]
    assert stats.as_dict()["meta/scope_cosine"] == cosine  # the column of steps.json that meltr analyze reads
    # the plain full-scope learner at the weights of that meta step (after the inner step), with the combiner
    # before it, drawing the same first seed from its meta generator
    full_learner = make(copy.deepcopy(model), combiner_before, meta)
    full, _ = full_learner.hypergradient(batch, meta)
    flat = [torch.cat([g.reshape(-1).double() for g in h]) for h in (scoped[0], full)]
    expected = float(torch.nn.functional.cosine_similarity(*flat, dim=0))
    assert cosine == pytest.approx(expected, abs=1e-6)
    assert 0.0 < cosine < 0.999999  # a scope that loses something, on a tiny backbone whose last blocks are all
    logged = [bool(learner.step(random_batch(batch_size=4, seed=s)).meta.extras.get("scope_cosine")) for s in (2, 3)]
    assert logged == [False, True]  # every second meta step


def test_the_check_changes_nothing_in_the_run():
    runs = []
    for every in (0, 1):
        model, combiner = setup()
        learner = make(
            model, combiner, random_batch(batch_size=4, seed=1), hypergrad_scope="last_blocks(1)",
            scope_cosine_every=every,
        )  # fmt: skip
        torch.manual_seed(5)
        for seed in range(3):
            learner.step(random_batch(batch_size=4, seed=10 + seed))
        runs.append([p.detach().clone() for p in [*model.parameters(), *combiner.parameters()]])
    for a, b in zip(*runs, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_analyze_summarises_the_scope_cosine():
    rows = [{"step": 1, "meta/hypergrad_norm": 1.0, "meta/scope_cosine": 0.9}]
    rows += [{"step": 2, "meta/hypergrad_norm": 1.0}, {"step": 3, "meta/hypergrad_norm": 1.0, "meta/scope_cosine": 0.7}]
    summary = meta_signal(rows)
    assert summary["scope_checks"] == 2
    assert summary["scope_cosine"] == pytest.approx(0.8)
    assert summary["scope_cosine_min"] == pytest.approx(0.7)
    assert "scoped vs full hypergradient: cosine 0.800" in describe(summary)
    assert "scoped vs full" not in describe(meta_signal([{"step": 1, "meta/hypergrad_norm": 1.0}]))


def test_the_check_needs_a_scope():
    model, combiner = setup()
    with pytest.raises(ValueError, match="scope_cosine_every"):
        make(model, combiner, random_batch(batch_size=4, seed=1), scope_cosine_every=1)
    with pytest.raises(ConfigError, match="scope_cosine_every"):
        FinetuneConfig(scope_cosine_every=1).validate()
    assert FinetuneConfig(scope_cosine_every=1, hypergrad_scope="head").validate().scope_cosine_every == 1
