"""The bi-level learner: the shared battery over combiners x estimators, bad input, meta sources, the toy problem."""

import copy
import math
import warnings

import pytest
import torch

from meltr.combine import COMBINERS, build_combiner
from meltr.hypergrad import ESTIMATORS, Identity, Neumann, double_backward
from meltr.learner import AuxiliaryLearner, NonFiniteLossWarning, select_parameters
from meltr.recipes.toy import TASKS, SharedLinear, ToyProblem, run

SMALL_MELTR = {"d_model": 16, "mlp_hidden": 8, "ff_dim": 32, "num_heads": 2}
COMBINER_OPTIONS = {"meltr": SMALL_MELTR, "manual": {"weights": [1.0, 0.5, 0.0]}}


def make_learner(combiner_name="meltr", estimator="identity", seed=0, **options):
    torch.manual_seed(seed)
    problem = ToyProblem(dim=6, primary_examples=16, aux_examples=64, meta_examples=32, seed=seed)
    model = SharedLinear(problem.dim)
    combiner = build_combiner(combiner_name, TASKS, **COMBINER_OPTIONS.get(combiner_name, {}))
    settings = {"meta_every": 2, "hypergrad": estimator, "seed": seed}
    settings.update(options)
    learner = AuxiliaryLearner(model, combiner, torch.optim.Adam(model.parameters(), lr=1e-2), **settings)
    return learner, problem.batches(batch_size=8, seed=seed)


def snapshot(learner):
    return {
        "model": copy.deepcopy(learner.model.state_dict()),
        "optimizer": copy.deepcopy(learner.optimizer.state_dict()),
        "combiner": copy.deepcopy(learner.combiner.state_dict()),
        "meta_optimizer": None
        if learner.meta_optimizer is None
        else copy.deepcopy(learner.meta_optimizer.state_dict()),
    }


def assert_same(a, b):
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for key in a:
            assert_same(a[key], b[key])
    elif isinstance(a, list | tuple):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            assert_same(x, y)
    elif isinstance(a, torch.Tensor):
        assert torch.equal(a, b)
    else:
        assert a == b


CASES = [(c, "identity") for c in COMBINERS.names()] + [("meltr", e) for e in ESTIMATORS.names() if e != "identity"]


@pytest.mark.parametrize(("combiner_name", "estimator"), CASES)
class TestBattery:
    def test_steps_report_finite_statistics(self, combiner_name, estimator):
        learner, batches = make_learner(combiner_name, estimator)
        rows = [learner.step(next(batches)) for _ in range(4)]
        for stats in rows:
            assert set(stats.losses) == set(TASKS) and set(stats.sensitivity) == set(TASKS)
            assert all(math.isfinite(v) for v in [stats.combined, *stats.losses.values(), *stats.sensitivity.values()])
        metas = [s.meta for s in rows if s.meta is not None]
        if learner.meta_enabled:
            assert len(metas) == 2 and learner.meta_steps == 2
            for meta in metas:
                assert (
                    math.isfinite(meta.primary_loss) and math.isfinite(meta.hypergrad_norm) and meta.hypergrad_norm > 0
                )
            row = rows[1].as_dict()
            assert {"meta/primary_loss", "meta/hypergrad_norm", "loss/primary", "sensitivity/harmful"} <= set(row)
        else:
            assert metas == [] and learner.meta_optimizer is None

    def test_deterministic_under_a_seed(self, combiner_name, estimator):
        first, second = (
            make_learner(combiner_name, estimator, seed=5),
            make_learner(combiner_name, estimator, seed=5),
        )
        for _ in range(4):
            first[0].step(next(first[1]))
            second[0].step(next(second[1]))
        assert_same(snapshot(first[0]), snapshot(second[0]))

    def test_a_non_finite_loss_skips_the_step_and_changes_nothing(self, combiner_name, estimator):
        learner, batches = make_learner(combiner_name, estimator)
        for _ in range(3):
            learner.step(next(batches))
        before = snapshot(learner)
        bad = next(batches)
        bad["y"][2, 1] = float("nan")
        with pytest.warns(NonFiniteLossWarning, match=r"non-finite task loss in \['helpful'\]"):
            stats = learner.step(bad)
        assert stats.skipped and stats.nonfinite == ["helpful"] and learner.skipped_steps == 1
        assert_same(before, snapshot(learner))
        assert learner.inner_steps == 3


def test_raise_mode_raises_and_changes_nothing():
    learner, batches = make_learner(on_nonfinite="raise")
    learner.step(next(batches))
    before = snapshot(learner)
    bad = next(batches)
    bad["x"][0, 0, 0] = float("inf")
    with pytest.raises(FloatingPointError, match="primary"):
        learner.step(bad)
    assert_same(before, snapshot(learner))


def test_a_non_finite_hypergradient_leaves_the_combiner_unchanged():
    nan_meta = {"x": torch.full((4, 3, 6), float("nan")), "y": torch.zeros(4, 3)}
    learner, batches = make_learner(meta_source="split", meta_data=[nan_meta], meta_every=1)
    combiner_before = copy.deepcopy(learner.combiner.state_dict())
    with pytest.warns(NonFiniteLossWarning, match="hypergradient"):
        stats = learner.step(next(batches))
    assert stats.meta is not None and stats.meta.skipped
    assert learner.skipped_meta_steps == 1 and learner.meta_steps == 0
    assert_same(combiner_before, learner.combiner.state_dict())
    assert not stats.skipped  # the inner step itself was fine


def test_meta_batches_come_from_the_meta_split_when_asked():
    problem = ToyProblem(dim=6, seed=0)
    drawn = []

    class Spy:
        def __iter__(self):
            for batch in problem.meta_batches(batch_size=4):
                drawn.append(batch)
                yield batch

    learner, batches = make_learner(meta_source="split", meta_data=Spy(), meta_every=1)
    for _ in range(3):
        learner.step(next(batches))
    assert len(drawn) == 3


def test_replay_buffer_keeps_the_last_batches_only():
    learner, batches = make_learner(replay_size=2, meta_every=100)
    seen = [next(batches) for _ in range(5)]
    for batch in seen:
        learner.step(batch)
    assert list(learner.replay.batches) == seen[-2:]


def test_hypergradient_is_clipped_to_the_configured_norm():
    learner, batches = make_learner(meta_every=1, clip_norm=1e-3)
    learner.meta_optimizer = torch.optim.SGD(learner.combiner.meta_parameters(), lr=1.0)
    before = [p.detach().clone() for p in learner.combiner.meta_parameters()]
    stats = learner.step(next(batches))
    change = torch.sqrt(
        sum(((p - b) ** 2).sum() for p, b in zip(learner.combiner.meta_parameters(), before, strict=True))
    )
    assert stats.meta.hypergrad_norm > 1e-2
    assert change.item() == pytest.approx(1e-3, rel=1e-3)


def test_dropping_the_direct_term_changes_the_hypergradient():
    """The official code's slip is reproducible and differs from the full hypergradient."""
    norms = {}
    for direct in (True, False):
        learner, batches = make_learner(meta_every=1, direct_term=direct, reg_weight=1.0)
        norms[direct] = learner.step(next(batches)).meta.hypergrad_norm
    assert norms[True] != pytest.approx(norms[False], rel=1e-3)


def test_scope_patterns_select_parameters_and_unknown_patterns_fail():
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 1))
    assert select_parameters(model, None) == ["0.weight", "0.bias", "1.weight", "1.bias"]
    assert select_parameters(model, ["1.*"]) == ["1.weight", "1.bias"]
    with pytest.raises(ValueError, match=r"'2\.\*' matches no trainable parameter"):
        select_parameters(model, ["2.*"])


def test_state_dict_round_trip_resumes_identically():
    learner, batches = make_learner(meta_every=1)
    for _ in range(2):
        learner.step(next(batches))
    state = copy.deepcopy(learner.state_dict())
    model_state = copy.deepcopy(learner.model.state_dict())
    optimizer_state = copy.deepcopy(learner.optimizer.state_dict())
    upcoming = [next(batches) for _ in range(2)]
    for batch in upcoming:
        learner.step(batch)
    resumed, _ = make_learner(meta_every=1, seed=1)
    resumed.model.load_state_dict(model_state)
    resumed.optimizer.load_state_dict(optimizer_state)
    resumed.load_state_dict(state)
    for batch in upcoming:
        resumed.step(batch)
    assert_same(snapshot(learner)["combiner"], snapshot(resumed)["combiner"])
    assert resumed.meta_steps == learner.meta_steps == 4


def test_configuration_errors_name_the_option():
    with pytest.raises(ValueError, match="meta_data"):
        make_learner(meta_source="split")
    with pytest.raises(ValueError, match="meta_every"):
        make_learner(meta_every=0)
    with pytest.raises(KeyError, match="unknown hypergradient estimator 'aid'"):
        make_learner(estimator="aid")
    with pytest.raises(KeyError, match="unknown hypergradient backend"):
        make_learner(backend="hessian")


@pytest.mark.parametrize("estimator", ESTIMATORS.names())
def test_meltr_beats_equal_weights_and_learns_which_task_hurts(estimator):
    """The helpful / harmful toy problem (meltr.recipes.toy): lower primary test loss, harmful task down-weighted."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", NonFiniteLossWarning)
        baseline = run("equal_weight", seed=0)
        result = run("meltr", hypergrad=estimator, seed=0)
    assert result["primary_test_loss"] < 0.75 * baseline["primary_test_loss"]
    assert result["sensitivity"]["harmful"] < result["sensitivity"]["helpful"]


@pytest.mark.parametrize("backend", ["jvp", "finite_difference", "double_backward"])
def test_a_module_shared_by_two_parents_stays_shared_after_a_meta_step(backend):
    """Functional evaluation at other weights must not untie a shared module (e.g. an adapter's shared bottleneck)."""

    class Shared(torch.nn.Module):
        def __init__(self):
            super().__init__()
            shared = torch.nn.Linear(3, 3)
            self.left, self.right = torch.nn.Sequential(shared), torch.nn.Sequential(shared)

        def forward(self, batch):
            return {"a": self.left(batch).pow(2).mean(1), "b": (self.right(batch) - 1).pow(2).mean(1)}

    torch.manual_seed(0)
    model = Shared()
    combiner = build_combiner("learned_linear", ("a", "b"))
    learner = AuxiliaryLearner(
        model, combiner, torch.optim.SGD(model.parameters(), lr=0.1), meta_every=1, backend=backend
    )
    before = list(model.parameters())
    learner.step(torch.randn(4, 3))
    after = list(model.parameters())
    assert len(after) == len(before) and all(a is b for a, b in zip(after, before, strict=True))
    assert all(isinstance(p, torch.nn.Parameter) for p in after)


def test_lookahead_check_is_logged_and_changes_nothing_else():
    problem = ToyProblem(dim=6, seed=0)
    held_out = problem.meta_batches(batch_size=8)
    plain, batches = make_learner(meta_every=1)
    checked, _ = make_learner(meta_every=1, lookahead_every=1, lookahead_data=held_out)
    rows = []
    for _ in range(4):
        batch = next(batches)
        plain.step(batch)
        rows.append(checked.step(batch).as_dict())
    assert_same(snapshot(plain), snapshot(checked))  # the check is a diagnostic, not a change of the run
    for key in ("lookahead/cos_before", "lookahead/cos_after", "lookahead/loss_before", "lookahead/gain"):
        assert all(math.isfinite(r[f"meta/{key}"]) for r in rows)
    assert "meta/hypergrad_cosine_prev" not in rows[0]
    assert all(-1 <= r["meta/hypergrad_cosine_prev"] <= 1 for r in rows[1:])


def test_lookahead_check_against_an_explicit_computation():
    problem = ToyProblem(dim=6, seed=1)
    learner, batches = make_learner("learned_linear", meta_every=1)
    learner.step(next(batches))
    held_out, train = next(problem.meta_batches(batch_size=8)), next(batches)
    before = {k: v.clone() for k, v in learner.combiner.state_dict().items()}
    with torch.no_grad():
        learner.combiner.weights.mul_(torch.tensor([1.5, 0.5, 0.0]))
    out = learner.lookahead_check(train, held_out, before)
    model, w = learner.model, learner.model.weight.detach().clone()

    def primary_at(weight):
        return torch.func.functional_call(model, {"weight": weight}, (held_out,))[learner.combiner.primary_task].mean()

    def direction(weights):
        point = w.clone().requires_grad_(True)
        losses = torch.func.functional_call(model, {"weight": point}, (train,))
        total = sum(weights[i] * losses[t].mean() for i, t in enumerate(learner.combiner.tasks))
        return torch.autograd.grad(total, point)[0]

    point = w.clone().requires_grad_(True)
    (grad_primary,) = torch.autograd.grad(primary_at(point), point)
    for label, weights in (("before", before["weights"]), ("after", learner.combiner.weights.detach())):
        d = direction(weights)
        expected_loss = primary_at(w - 1e-3 * w.norm() * d / d.norm())
        assert out[f"lookahead/loss_{label}"] == pytest.approx(float(expected_loss), rel=1e-5)
        cos = torch.nn.functional.cosine_similarity(d, grad_primary, dim=0)
        assert out[f"lookahead/cos_{label}"] == pytest.approx(float(cos), abs=1e-5)
    assert out["lookahead/gain"] == pytest.approx(out["lookahead/loss_before"] - out["lookahead/loss_after"])
    assert out["lookahead/cos_before"] != pytest.approx(out["lookahead/cos_after"], abs=1e-3)


def run_steps(learner, batches, steps=6):
    for _ in range(steps):
        learner.step(next(batches))
    return learner.combiner.state_dict()


@pytest.mark.parametrize(
    ("name", "options", "estimator"),
    [("identity", {}, Identity()), ("neumann", {"terms": 2, "lr": 0.05}, Neumann(terms=2, lr=0.05))],
)
def test_an_estimator_object_and_a_backend_function_run_as_their_names(name, options, estimator):
    by_name, batches = make_learner(estimator=name, hypergrad_options=options, backend="double_backward")
    expected = run_steps(by_name, batches)
    by_object, batches = make_learner(estimator=estimator, backend=double_backward)
    got = run_steps(by_object, batches)
    assert by_object.estimator is estimator and by_object.backend is double_backward
    for key, value in expected.items():
        assert torch.equal(got[key], value), key


def test_options_with_an_estimator_object_are_refused():
    with pytest.raises(ValueError, match="go with an estimator name"):
        make_learner(estimator=Identity(), hypergrad_options={"lr": 0.1})


def test_gamma_is_the_deprecated_name_of_reg_weight():
    with pytest.warns(DeprecationWarning, match="reg_weight"):
        learner, _ = make_learner(gamma=0.5)
    assert learner.reg_weight == 0.5
