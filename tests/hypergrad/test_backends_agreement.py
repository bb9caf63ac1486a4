"""The three backends of the mixed term ``grad_phi <v, grad_w L_aux>`` agree on the reference backbones.

``double_backward`` is the reference (the official three-call computation); ``jvp`` is exact, so it must agree to
float32 rounding (1e-5 relative); ``finite_difference`` carries an O(e^2) truncation error plus float32 rounding
divided by the step. With the step ``||e v|| = 1e-5 ||w||`` it reaches 1e-3 on UniVL; on Violet and All-in-one the
rounding floor of float32 is a little higher (about 1.5e-3), hence their looser bound. A step of
``fd_scale=1e-3`` (the first default) is far too coarse on these backbones (relative error 0.5-0.9, see
docs/hypergrad-benchmark.md).

Each backbone draws random masks and negatives, which ``MetaProblem`` replays from one seed per batch: the agreement
depends on it, and the last tests show that it fails without it.
"""

from __future__ import annotations

import pytest
import torch
from backbone_helpers import VOCAB_SIZE, random_batch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from meltr.combine import MetaLossTransformer
from meltr.hypergrad import BACKENDS, MetaProblem
from meltr.hypergrad.backends import double_backward, finite_difference, forward_difference, jvp
from meltr.models import BACKBONES, build_backbone

TOLERANCE = {"jvp": 1e-5, "finite_difference": 1e-3}
FD_TOLERANCE = {"univl": 1e-3, "violet": 5e-3, "allinone": 5e-3, "vatt": 1e-3}
FD_SCALE = 1e-5  # ||e v|| / ||w||, the default; 1e-3 leaves the linear regime of these losses


class BatchMeans(nn.Module):
    """A backbone whose losses are batch means (scalars), the batch-level mode of the contract."""

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.tasks = backbone.tasks

    def forward(self, batch):
        return {task: loss.mean() for task, loss in self.backbone(batch).items()}


def tiny_backbone(name: str) -> nn.Module:
    torch.manual_seed(0)
    return build_backbone(name, "tiny", vocab_size=VOCAB_SIZE)


def make_problem(name: str, per_sample: bool, problem_class: type[MetaProblem] = MetaProblem) -> MetaProblem:
    backbone = tiny_backbone(name)
    model = backbone if per_sample else BatchMeans(backbone)
    torch.manual_seed(1)
    combiner = MetaLossTransformer(backbone.tasks, d_model=16, mlp_hidden=8, ff_dim=32, num_heads=2)
    return problem_class(
        model=model,
        combiner=combiner,
        param_names=[n for n, p in model.named_parameters() if p.requires_grad],
        train_batch=random_batch(batch_size=4, seed=0),
        meta_batch=random_batch(batch_size=4, seed=1),
        fd_scale=FD_SCALE,
    )


def mixed_terms(problem: MetaProblem) -> dict[str, list[torch.Tensor]]:
    """The mixed term of every backend along the true primary gradient ``v = grad_w L_pri``."""
    with sdpa_kernel(SDPBackend.MATH):
        vector, _ = problem.primary_gradients()
        return {name: BACKENDS.get(name)(problem, vector, None) for name in BACKENDS.names()}


def relative_error(got: list[torch.Tensor], expected: list[torch.Tensor]) -> float:
    difference = sum(float(((g - e).double() ** 2).sum()) for g, e in zip(got, expected, strict=True))
    norm = sum(float((e.double() ** 2).sum()) for e in expected)
    return (difference / norm) ** 0.5


def test_the_registry_holds_the_four_backends():
    assert set(BACKENDS.names()) == {"double_backward", "jvp", "finite_difference", "forward_difference"}
    assert BACKENDS.get("jvp") is jvp and BACKENDS.get("finite_difference") is finite_difference
    assert BACKENDS.get("double_backward") is double_backward
    assert BACKENDS.get("forward_difference") is forward_difference


@pytest.mark.parametrize("per_sample", [True, False], ids=["per_sample", "batch_level"])
@pytest.mark.parametrize("name", BACKBONES.names())
def test_backends_agree_with_double_backward(name, per_sample):
    problem = make_problem(name, per_sample)
    stacked = problem.task_losses(problem.train_batch)
    assert stacked.dim() == (2 if per_sample else 1)
    terms = mixed_terms(problem)
    reference = terms["double_backward"]
    assert sum(float(r.abs().sum()) for r in reference) > 0
    for backend, tolerance in {"jvp": TOLERANCE["jvp"], "finite_difference": FD_TOLERANCE[name]}.items():
        error = relative_error(terms[backend], reference)
        assert error < tolerance, f"{backend} vs double_backward on {name}: relative error {error:.2e}"


def test_the_forward_passes_over_one_batch_replay_the_same_masks():
    problem = make_problem("univl", per_sample=True)
    problem.seed_of(problem.train_batch)  # the one draw from the global stream, at the first pass over a batch
    state = torch.random.get_rng_state()
    first = problem.task_losses(problem.train_batch)
    second = problem.task_losses(problem.train_batch)
    assert torch.equal(first, second)
    # the replay neither consumes nor disturbs the global stream that training draws its own masks from
    assert torch.equal(torch.random.get_rng_state(), state)
    # ... and it is what makes the passes agree: the backbone draws its masks from the global RNG
    plain = [problem.model(problem.train_batch)["cmlm"] for _ in range(2)]
    assert not torch.equal(plain[0], plain[1])
    # the forward-mode pass sees the same masks as the plain forward
    params = tuple(p.detach() for p in problem.params)
    with torch.no_grad():
        primal, _ = torch.func.jvp(
            lambda *w: problem.task_losses(problem.train_batch, w), params, tuple(torch.zeros_like(p) for p in params)
        )
    assert torch.equal(primal, first)


class FreshMasksEveryPass(MetaProblem):
    """A broken problem that draws new masks at every pass over a batch."""

    def seed_of(self, batch):
        return int(torch.randint(0, 2**62, ()).item())


@pytest.mark.parametrize("backend", ["jvp", "finite_difference"])
def test_agreement_fails_without_the_replayed_masks(backend):
    torch.manual_seed(3)
    problem = make_problem("univl", per_sample=True, problem_class=FreshMasksEveryPass)
    terms = mixed_terms(problem)
    assert relative_error(terms[backend], terms["double_backward"]) > 10 * TOLERANCE[backend]


def test_a_coarse_finite_difference_step_fails_the_tolerance():
    """``fd_scale=1e-3`` leaves the linear regime: the tolerance above is not vacuous."""
    problem = make_problem("univl", per_sample=True)
    with sdpa_kernel(SDPBackend.MATH):
        vector, _ = problem.primary_gradients()
        reference = double_backward(problem, vector)
        coarse = finite_difference(problem, vector, fd_scale=1e-3)
    assert relative_error(coarse, reference) > TOLERANCE["finite_difference"]
