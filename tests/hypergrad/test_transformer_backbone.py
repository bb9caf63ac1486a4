"""Second-order passes and forward-mode AD on a backbone built from torch's own transformer layers (SDPA on CPU)."""

import pytest
import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from meltr.combine import build_combiner
from meltr.hypergrad import BACKENDS, ESTIMATORS, MetaProblem, build_estimator
from meltr.learner import AuxiliaryLearner

TASKS = ("retrieval", "mlm", "match")


class TinyTransformer(nn.Module):
    """nn.TransformerEncoder (scaled_dot_product_attention inside) with three per-sample losses."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(20, 16)
        layer = nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.heads = nn.Linear(16, 20 + 2)

    def forward(self, batch):
        hidden = self.encoder(self.embed(batch["tokens"]))
        logits = self.heads(hidden)
        mlm = nn.functional.cross_entropy(logits[..., :20].transpose(1, 2), batch["tokens"], reduction="none").mean(1)
        pooled = hidden.mean(1)
        sim = pooled @ pooled.T
        retrieval = nn.functional.cross_entropy(sim, torch.arange(len(sim)), reduction="none")
        match = nn.functional.cross_entropy(logits[:, 0, 20:], batch["label"], reduction="none")
        return {"retrieval": retrieval, "mlm": mlm, "match": match}


@pytest.mark.parametrize("backend", BACKENDS.names())
@pytest.mark.parametrize("estimator", ESTIMATORS.names())
def test_every_estimator_and_backend_runs_a_meta_step(estimator, backend):
    torch.manual_seed(0)
    model = TinyTransformer()
    combiner = build_combiner("meltr", TASKS, d_model=16, mlp_hidden=8, ff_dim=32, num_heads=2)
    learner = AuxiliaryLearner(
        model, combiner, torch.optim.SGD(model.parameters(), lr=0.1), meta_every=1, hypergrad=estimator, backend=backend
    )
    before = [p.detach().clone() for p in combiner.meta_parameters()]
    batch = {"tokens": torch.randint(20, (6, 5)), "label": torch.randint(2, (6,))}
    stats = learner.step(batch)
    assert stats.meta is not None and not stats.meta.skipped
    assert torch.isfinite(torch.tensor(stats.meta.hypergrad_norm)) and stats.meta.hypergrad_norm > 0
    assert any(not torch.equal(b, p) for b, p in zip(before, combiner.meta_parameters(), strict=True))


def test_backends_agree_on_the_transformer_backbone():
    torch.manual_seed(0)
    model = TinyTransformer().double()
    combiner = build_combiner("meltr", TASKS, d_model=16, mlp_hidden=8, ff_dim=32, num_heads=2).double()
    batch = {"tokens": torch.randint(20, (6, 5)), "label": torch.randint(2, (6,))}
    results = {}
    for backend in BACKENDS.names():
        problem = MetaProblem(
            model, combiner, [n for n, _ in model.named_parameters()], batch, batch, backend=BACKENDS.get(backend)
        )
        with sdpa_kernel(SDPBackend.MATH):
            results[backend] = torch.cat([g.reshape(-1) for g in build_estimator("identity")(problem)])
    reference = results["double_backward"]
    assert (results["jvp"] - reference).norm() <= 1e-8 * reference.norm()
    # central differences with the default step ||e v|| = 1e-3 ||w||: the 1e-3 the backends promise
    assert (results["finite_difference"] - reference).norm() <= 1e-3 * reference.norm()
    # one-sided differences, O(e) with the default ||e v|| = 1e-6 ||w|| (float64 here: truncation only)
    assert (results["forward_difference"] - reference).norm() <= 1e-4 * reference.norm()


@pytest.mark.parametrize("name", ["neumann", "cg", "stocbio"])
def test_the_two_hessian_vector_product_routes_agree_on_the_transformer_backbone(name):
    """Forward-over-reverse and reverse-over-reverse give one hypergradient in float64 through SDPA layers, with
    every backend's mixed term (each backend's default route is one of the two)."""
    torch.manual_seed(0)
    model = TinyTransformer().double()
    combiner = build_combiner("meltr", TASKS, d_model=16, mlp_hidden=8, ff_dim=32, num_heads=2).double()
    batch = {"tokens": torch.randint(20, (6, 5)), "label": torch.randint(2, (6,))}
    fresh = {"tokens": torch.randint(20, (6, 5)), "label": torch.randint(2, (6,))}
    names = [n for n, _ in model.named_parameters()]
    results = {}
    for hvp in ("reverse", "forward"):
        problem = MetaProblem(
            model,
            combiner,
            names,
            batch,
            batch,
            backend=BACKENDS.get("double_backward"),
            sample_train_batch=lambda: fresh,
        )
        with sdpa_kernel(SDPBackend.MATH):
            results[hvp] = torch.cat([g.reshape(-1) for g in build_estimator(name, hvp=hvp)(problem)])
    reference = results["reverse"]
    assert reference.norm() > 0
    assert (results["forward"] - reference).norm() <= 1e-10 * reference.norm()


@pytest.mark.parametrize("backend", ["jvp", "finite_difference", "forward_difference"])
@pytest.mark.parametrize("name", ["neumann", "cg"])
def test_hessian_based_estimators_take_the_mixed_term_through_their_kept_graph(name, backend, monkeypatch):
    """With the reverse route the create_graph gradient exists: every backend differentiates it once more instead of
    running its own pass (no forward-mode pass, no perturbed forward), so the result is the double backward's."""
    torch.manual_seed(0)
    model = TinyTransformer().double()
    combiner = build_combiner("meltr", TASKS, d_model=16, mlp_hidden=8, ff_dim=32, num_heads=2).double()
    batch = {"tokens": torch.randint(20, (6, 5)), "label": torch.randint(2, (6,))}
    names = [n for n, _ in model.named_parameters()]
    results = {}
    for key in ("double_backward", backend):
        problem = MetaProblem(model, combiner, names, batch, batch, backend=BACKENDS.get(key))
        with sdpa_kernel(SDPBackend.MATH):
            results[key] = torch.cat([g.reshape(-1) for g in build_estimator(name)(problem)])
            if key == backend:  # the backend's own pass would call these
                monkeypatch.setattr(torch.func, "jvp", None)
                monkeypatch.setattr(problem, "losses_at_w", None)
                again = torch.cat([g.reshape(-1) for g in build_estimator(name)(problem)])
                torch.testing.assert_close(again, results[key], rtol=0, atol=0)
    assert torch.equal(results[backend], results["double_backward"])
