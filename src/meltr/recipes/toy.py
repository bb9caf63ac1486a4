"""A small auxiliary-learning problem with one helpful and one harmful auxiliary task.

Shared linear weights ``w`` serve three regression tasks ``y = x . w_t + noise``:

- ``primary``: the target task, with ``w_t = w_true`` and only a few training examples (it overfits alone);
- ``helpful``: plenty of examples of the same ``w_true`` with other inputs and noise;
- ``harmful``: plenty of examples of ``w_true + shift``, which pulls ``w`` away from the primary optimum.

Equal-weight multi-task training lands between ``w_true`` and ``w_true + shift``; a good learned combiner keeps the
helpful task and drops the harmful one. The primary test loss is ``E[(x . w - y)^2] = ||w - w_true||^2 + noise^2``.
It is the smallest complete example of meltr's loop, used by tests, ``meltr demo --toy`` and the README.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor, nn

TASKS = ("primary", "helpful", "harmful")


class SharedLinear(nn.Module):
    """``w`` shared by all tasks; ``forward(batch)`` returns per-sample squared errors ``{task: [B]}``.

    A batch is ``{"x": [B, T, d], "y": [B, T]}``: one example of every task per row, in the order of ``TASKS``.
    """

    def __init__(self, dim: int, dtype: torch.dtype = torch.float32, per_sample: bool = True) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(dim, dtype=dtype))
        self.per_sample = per_sample

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        errors = (batch["x"] @ self.weight - batch["y"]) ** 2
        if not self.per_sample:
            errors = errors.mean(0, keepdim=True)
        return {task: errors[:, i] if self.per_sample else errors[0, i] for i, task in enumerate(TASKS)}


@dataclass
class ToyProblem:
    """Data of the helpful / harmful toy problem.

    Args:
        dim: number of features.
        primary_examples: training examples of the primary task (cycled).
        aux_examples: training examples of each auxiliary task.
        meta_examples: held-out primary examples (the meta split).
        shift: norm of ``w_harmful - w_true``.
        noise: standard deviation of the label noise.
        seed: seed of everything random.
    """

    dim: int = 16
    primary_examples: int = 24
    aux_examples: int = 2048
    meta_examples: int = 256
    shift: float = 3.0
    noise: float = 0.5
    seed: int = 0
    dtype: torch.dtype = torch.float32

    def __post_init__(self) -> None:
        g = torch.Generator().manual_seed(self.seed)
        self.w_true = torch.randn(self.dim, generator=g, dtype=self.dtype)
        direction = torch.randn(self.dim, generator=g, dtype=self.dtype)
        self.w_harmful = self.w_true + self.shift * direction / direction.norm()
        self._generator = g
        self.primary_x, self.primary_y = self._examples(self.primary_examples, self.w_true)
        self.helpful_x, self.helpful_y = self._examples(self.aux_examples, self.w_true)
        self.harmful_x, self.harmful_y = self._examples(self.aux_examples, self.w_harmful)
        self.meta_x, self.meta_y = self._examples(self.meta_examples, self.w_true)

    def _examples(self, n: int, weight: Tensor) -> tuple[Tensor, Tensor]:
        x = torch.randn(n, self.dim, generator=self._generator, dtype=self.dtype)
        return x, x @ weight + self.noise * torch.randn(n, generator=self._generator, dtype=self.dtype)

    def batches(self, batch_size: int = 16, seed: int = 0) -> Iterator[dict[str, Tensor]]:
        """Endless training batches: one example of each task per row."""
        g = torch.Generator().manual_seed(seed)
        while True:
            p = torch.randint(self.primary_examples, (batch_size,), generator=g)
            h = torch.randint(self.aux_examples, (batch_size,), generator=g)
            b = torch.randint(self.aux_examples, (batch_size,), generator=g)
            x = torch.stack([self.primary_x[p], self.helpful_x[h], self.harmful_x[b]], dim=1)
            y = torch.stack([self.primary_y[p], self.helpful_y[h], self.harmful_y[b]], dim=1)
            yield {"x": x, "y": y}

    def meta_batches(self, batch_size: int = 32, seed: int = 1) -> Iterator[dict[str, Tensor]]:
        """Endless meta batches from the held-out primary examples (auxiliary columns are fresh samples)."""
        g = torch.Generator().manual_seed(seed)
        while True:
            p = torch.randint(self.meta_examples, (batch_size,), generator=g)
            h = torch.randint(self.aux_examples, (batch_size,), generator=g)
            b = torch.randint(self.aux_examples, (batch_size,), generator=g)
            x = torch.stack([self.meta_x[p], self.helpful_x[h], self.harmful_x[b]], dim=1)
            y = torch.stack([self.meta_y[p], self.helpful_y[h], self.harmful_y[b]], dim=1)
            yield {"x": x, "y": y}

    def primary_test_loss(self, model: SharedLinear) -> float:
        """``E[(x . w - y)^2]`` of the primary task, in closed form: ``||w - w_true||^2 + noise^2``."""
        return float(((model.weight.detach() - self.w_true) ** 2).sum() + self.noise**2)


def run(
    combiner_name: str,
    steps: int = 400,
    hypergrad: str = "identity",
    seed: int = 0,
    lr: float = 0.02,
    meta_lr: float = 1e-3,
    problem: ToyProblem | None = None,
    per_sample: bool = True,
    **learner_options,
) -> dict[str, object]:
    """Train on the toy problem with one combiner; returns the primary test loss, sensitivities and wall time."""
    from meltr.combine import build_combiner
    from meltr.learner import AuxiliaryLearner

    torch.manual_seed(seed)
    problem = problem or ToyProblem(seed=seed)
    model = SharedLinear(problem.dim, problem.dtype, per_sample=per_sample)
    options = {"d_model": 32, "mlp_hidden": 16, "ff_dim": 64, "num_heads": 4} if combiner_name == "meltr" else {}
    combiner = build_combiner(combiner_name, TASKS, primary_task="primary", **options).to(problem.dtype)
    meta_optimizer = None
    if combiner.meta_parameters():
        meta_optimizer = torch.optim.Adam(combiner.meta_parameters(), lr=meta_lr, weight_decay=3e-5)
    defaults = {"meta_every": 1, "meta_source": "split"}
    defaults.update(learner_options)
    learner = AuxiliaryLearner(
        model,
        combiner,
        torch.optim.SGD(model.parameters(), lr=lr),
        meta_optimizer=meta_optimizer,
        hypergrad=hypergrad,
        meta_data=problem.meta_batches(seed=seed + 1) if defaults["meta_source"] == "split" else None,
        seed=seed,
        **defaults,
    )
    start = time.perf_counter()
    batches = problem.batches(seed=seed)
    stats = None
    for _ in range(steps):
        stats = learner.step(next(batches))
    return {
        "combiner": combiner_name,
        "hypergrad": hypergrad,
        "primary_test_loss": problem.primary_test_loss(model),
        "sensitivity": dict(stats.sensitivity) if stats else {},
        "seconds": time.perf_counter() - start,
        "learner": learner,
    }
