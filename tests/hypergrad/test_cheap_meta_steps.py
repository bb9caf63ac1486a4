"""The options that make a meta step cheap (issue 21): the one-sided ``forward_difference`` backend, known losses
reused instead of recomputed, the meta step's train-side batch taken from the current inner step, scopes by name and
logging-only work every N steps. Each option that claims exactness is checked against the plain path; the one-sided
backend, which does not, against a float64 reference with an error bound.
"""

from __future__ import annotations

import copy

import pytest
import torch
from backbone_helpers import VOCAB_SIZE, random_batch
from hypergrad_helpers import spy_on_hypergradient
from torch import nn

from meltr.combine import MetaLossTransformer
from meltr.config import ConfigError
from meltr.hypergrad import MetaProblem, build_estimator
from meltr.hypergrad.backends import double_backward, finite_difference, forward_difference, jvp
from meltr.hypergrad.scope import DEFAULT_HEADS, last_blocks, resolve_scope
from meltr.learner import AuxiliaryLearner, select_parameters
from meltr.models import build_backbone
from meltr.recipes.finetune import FinetuneConfig


class SameMasks(MetaProblem):
    """Fixed mask seeds per batch, so that a float32 and a float64 problem see the same masks."""

    def seed_of(self, batch):
        return 11 if batch is self.train_batch else 12


def tiny_univl(dtype: torch.dtype = torch.float32) -> nn.Module:
    torch.manual_seed(0)
    return build_backbone("univl", "tiny", vocab_size=VOCAB_SIZE).to(dtype)


def tiny_combiner(tasks, dtype: torch.dtype = torch.float32) -> MetaLossTransformer:
    torch.manual_seed(1)
    return MetaLossTransformer(tasks, d_model=16, mlp_hidden=8, ff_dim=32, num_heads=2).to(dtype)


def batch_in(dtype: torch.dtype, seed: int) -> dict:
    batch = random_batch(batch_size=4, seed=seed)
    return {k: v.to(dtype) if v.is_floating_point() else v for k, v in batch.items()}


def problem_in(dtype: torch.dtype, **options) -> MetaProblem:
    model = tiny_univl(dtype)
    return SameMasks(
        model=model,
        combiner=tiny_combiner(model.tasks, dtype),
        param_names=[n for n, _ in model.named_parameters()],
        train_batch=batch_in(dtype, 0),
        meta_batch=batch_in(dtype, 1),
        **options,
    )


def relative_error(got, expected) -> float:
    difference = sum(float(((g.double() - e.double()) ** 2).sum()) for g, e in zip(got, expected, strict=True))
    return (difference / sum(float((e.double() ** 2).sum()) for e in expected)) ** 0.5


# -- the one-sided backend -----------------------------------------------------------------------------------------
def test_forward_difference_error_against_the_float64_reference():
    """float32 backends against the float64 double backward at the same weights, batches and masks: ``jvp`` is exact
    to rounding, central differences reach 1e-3, one-sided differences 1e-2 (O(e) truncation, measured 3e-3)."""
    reference_problem = problem_in(torch.float64)
    v64, _ = reference_problem.primary_gradients()
    reference = double_backward(reference_problem, v64)
    problem = problem_in(torch.float32)
    v32, _ = problem.primary_gradients()
    assert relative_error(v32, v64) < 1e-5  # the same problem in two precisions
    assert relative_error(jvp(problem, v32), reference) < 1e-5
    assert relative_error(finite_difference(problem, v32), reference) < 1e-3
    one_sided = relative_error(forward_difference(problem, v32), reference)
    assert 1e-5 < one_sided < 1e-2  # an approximation, and a good one


def test_forward_difference_converges_at_first_order():
    """In float64 (no rounding floor at these steps) the error is O(e): ten times smaller step, about ten times
    smaller error; the central backend's is O(e^2)."""
    problem = problem_in(torch.float64)
    vector, _ = problem.primary_gradients()
    reference = double_backward(problem, vector)
    coarse = relative_error(forward_difference(problem, vector, fd_scale=1e-5), reference)
    fine = relative_error(forward_difference(problem, vector, fd_scale=1e-6), reference)
    assert 5 < coarse / fine < 20
    central = relative_error(finite_difference(problem, vector, fd_scale=1e-5), reference)
    assert central < coarse / 10


class CountingForwards(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model, self.tasks, self.calls = model, model.tasks, 0

    def forward(self, batch):
        self.calls += 1
        return self.model(batch)


def test_known_losses_replace_the_base_forward_exactly():
    """With ``l(w; train)`` known (drawn with a recorded generator state) the one-sided backend runs one forward of
    the train-side batch instead of two, and gives the same hypergradient as recomputing it."""
    torch.manual_seed(5)
    state = torch.get_rng_state()
    model = CountingForwards(tiny_univl())
    combiner = tiny_combiner(model.tasks)
    train, meta = random_batch(batch_size=4, seed=0), random_batch(batch_size=4, seed=1)
    torch.set_rng_state(state)
    with torch.no_grad():
        known = combiner.stack(model(train))  # the inner step's forward: global stream at `state`

    def hypergradient(known_losses):
        model.calls = 0
        torch.manual_seed(9)  # the meta batch's mask seed is drawn from the global stream
        problem = MetaProblem(
            model,
            combiner,
            [n for n, _ in model.named_parameters()],
            train,
            meta,
            backend=forward_difference,
            known_losses=known_losses,
            rng_states={id(train): state},
        )
        return build_estimator("identity")(problem), model.calls

    reused, reused_calls = hypergradient({id(train): known})
    recomputed, recomputed_calls = hypergradient({})
    assert (reused_calls, recomputed_calls) == (2, 3)  # meta batch + perturbed train batch (+ the base forward)
    for a, b in zip(reused, recomputed, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-9)


def test_the_replayed_generator_state_matters():
    """Known losses drawn with other masks than the replayed ones give a different (wrong) hypergradient: the
    comparison above has teeth."""
    torch.manual_seed(5)
    state = torch.get_rng_state()
    model = tiny_univl()
    combiner = tiny_combiner(model.tasks)
    train, meta = random_batch(batch_size=4, seed=0), random_batch(batch_size=4, seed=1)
    torch.manual_seed(6)
    with torch.no_grad():
        other_masks = combiner.stack(model(train))
    names = [n for n, _ in model.named_parameters()]

    def hypergradient(known_losses):
        torch.manual_seed(9)
        problem = MetaProblem(
            model, combiner, names, train, meta, backend=forward_difference, known_losses=known_losses,
            rng_states={id(train): state},
        )  # fmt: skip
        return build_estimator("identity")(problem)

    assert relative_error(hypergradient({id(train): other_masks}), hypergradient({})) > 1e-2


# -- the learner: the current batch as the train-side batch --------------------------------------------------------
def learner_pair(backend: str, **options):
    model = tiny_univl()
    combiner = tiny_combiner(model.tasks)
    twin_model, twin_combiner = copy.deepcopy(model), copy.deepcopy(combiner)
    meta = random_batch(batch_size=4, seed=1)

    def make(m, c, **extra):
        return AuxiliaryLearner(
            m, c, torch.optim.SGD(m.parameters(), lr=1e-2), meta_every=1, meta_source="split", meta_data=[meta],
            backend=backend, clip_norm=None, **extra,
        )  # fmt: skip

    return make(model, combiner, meta_train_batch="current", **options), make(twin_model, twin_combiner), meta


@pytest.mark.parametrize("backend", ["forward_difference", "jvp"])
def test_the_current_batch_meta_step_is_the_plain_hypergradient_before_the_optimiser_step(backend):
    """``meta_train_batch="current"``: the meta step runs at the weights of the inner forward, on its batch and
    masks, reusing its losses; the result is the plain ``hypergradient`` there, to float rounding."""
    learner, twin, meta = learner_pair(backend)
    calls = spy_on_hypergradient(learner)
    batch = random_batch(batch_size=4, seed=0)
    torch.manual_seed(7)
    state = torch.get_rng_state()
    expected, _ = twin.hypergradient(batch, meta, train_rng_state=state)  # the twin's weights: before the step
    torch.set_rng_state(state)
    stats = learner.step(batch)
    assert stats.meta is not None and not stats.meta.skipped
    ((args, got),) = calls
    assert args[0] is batch and args[2] is not None  # the current batch, with its losses reused
    for g, e in zip(got, expected, strict=True):
        torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-8)
    # the inner step itself is the plain one: the combiner changed only after its gradient was taken
    twin.meta_enabled = False
    torch.set_rng_state(state)
    twin.step(batch)
    for p, q in zip(learner.model.parameters(), twin.model.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=0)


def test_the_split_api_takes_the_current_group_after_the_optimiser_step():
    learner, _, _ = learner_pair("jvp")
    calls = spy_on_hypergradient(learner)
    batch = random_batch(batch_size=4, seed=0)
    loss = learner.inner_loss(batch)
    loss.backward()
    learner.optimizer.step()
    assert learner.after_optimizer_step() is not None
    ((args, _),) = calls
    assert args[0] is batch and args[2] is None  # recomputed at the new weights


def test_replay_stays_the_default_train_side_batch():
    learner, twin, _ = learner_pair("jvp")
    calls = spy_on_hypergradient(twin)
    twin.step(random_batch(batch_size=4, seed=0))
    ((args, _),) = calls
    assert args[2] is None and twin.meta_train_batch == "replay"
    with pytest.raises(ValueError, match="meta_train_batch"):
        AuxiliaryLearner(learner.model, learner.combiner, learner.optimizer, meta_train_batch="next")


# -- logging-only work every N steps -------------------------------------------------------------------------------
class TwoLosses(nn.Module):
    tasks = ("main", "aux")

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(3, 1)

    def forward(self, batch):
        out = self.linear(batch["x"]).squeeze(-1)
        return {"main": (out - batch["y"]) ** 2, "aux": out**2 * batch["scale"]}


def two_loss_learner(**options) -> AuxiliaryLearner:
    torch.manual_seed(0)
    model = TwoLosses()
    combiner = MetaLossTransformer(TwoLosses.tasks, d_model=8, mlp_hidden=4, ff_dim=8, num_heads=2)
    return AuxiliaryLearner(model, combiner, torch.optim.SGD(model.parameters(), lr=0.1), meta_every=100, **options)


def two_loss_batch(scale: float = 1.0) -> dict:
    return {"x": torch.ones(4, 3), "y": torch.zeros(4), "scale": torch.full((4,), scale)}


def test_sensitivity_is_logged_every_n_steps():
    learner = two_loss_learner(track_sensitivity=2)
    logged = [bool(learner.step(two_loss_batch()).sensitivity) for _ in range(4)]
    assert logged == [False, True, False, True]
    assert not any(two_loss_learner(track_sensitivity=False).step(two_loss_batch()).sensitivity for _ in range(2))


def test_finiteness_checks_run_every_n_steps():
    nan = two_loss_batch(float("nan"))
    checked = two_loss_learner()
    with pytest.warns(UserWarning, match="non-finite"):
        assert checked.step(nan).skipped
    # every second step: the first NaN step goes through unchecked (and poisons the weights), the second is caught
    sparse = two_loss_learner(check_finite_every=2)
    assert not sparse.step(nan).skipped
    with pytest.warns(UserWarning, match="non-finite"):
        assert sparse.step(nan).skipped
    with pytest.raises(ValueError, match="check_finite_every"):
        two_loss_learner(check_finite_every=-1)


# -- scopes by name ------------------------------------------------------------------------------------------------
def test_named_scopes_resolve_per_backbone():
    model = tiny_univl()
    assert select_parameters(model, "last_blocks(1)") == select_parameters(model, last_blocks(model, 1))
    assert select_parameters(model, ["last_blocks( 2 )"]) == select_parameters(model, last_blocks(model, 2))
    assert resolve_scope(model, "head") == list(DEFAULT_HEADS)
    heads = select_parameters(model, "head")
    assert heads and all(n.split(".")[0].endswith("_head") for n in heads)
    mixed = select_parameters(model, ["head", "text_encoder.blocks.0.*"])
    assert set(mixed) == set(heads) | {n for n, _ in model.named_parameters() if n.startswith("text_encoder.blocks.0.")}
    assert resolve_scope(model, None) is None


@pytest.mark.parametrize("bad", ["last_blocks(0)", "last_blocks(x)", "last_blocks"])
def test_malformed_named_scopes_fail_before_training(bad):
    with pytest.raises(ValueError, match=r"last_blocks\(N\)"):
        select_parameters(tiny_univl(), [bad])
    with pytest.raises(ConfigError, match="hypergrad_scope"):
        FinetuneConfig(hypergrad_scope=bad).validate()


def test_the_recipe_takes_a_named_scope_as_a_string_or_a_list():
    assert FinetuneConfig(hypergrad_scope="last_blocks(1)").validate().hypergrad_scope == "last_blocks(1)"
    assert FinetuneConfig(hypergrad_scope=["head", "decoder.*"]).validate().hypergrad_scope == ["head", "decoder.*"]
    with pytest.raises(ConfigError, match="meta_train_batch"):
        FinetuneConfig(meta_train_batch="next").validate()
