"""Linear probes: what a frozen embedding knows about the scene (which attributes of a clip's subject a linear
read-out of the video embedding recovers on held-out clips).

A probe is a multinomial logistic regression on standardised features, fitted to convergence by L-BFGS with a
small L2 penalty; its test accuracy is compared with the majority-class rate of the test labels.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from meltr.data.language import region

#: The attributes :func:`subject_attributes` reads from each clip's subject.
ATTRIBUTES: tuple[str, ...] = ("colour", "shape", "size", "row", "col", "event")


@dataclass(frozen=True)
class ProbeResult:
    """Held-out accuracy of a linear probe and the rate of always answering the test set's commonest label."""

    accuracy: float
    majority: float
    classes: int


@dataclass(frozen=True)
class LinearProbe:
    """A linear classifier on standardised features: ``logits = ((x - mean) / scale) W + b``."""

    mean: Tensor
    scale: Tensor
    weight: Tensor
    bias: Tensor

    def logits(self, features: Tensor) -> Tensor:
        x = (features.to(self.weight.dtype) - self.mean) / self.scale
        return x @ self.weight + self.bias


def fit_logistic(
    features: Tensor,
    labels: Tensor,
    classes: int,
    l2: float = 1e-3,
    max_iter: int = 500,
    tolerance_grad: float = 1e-9,
    tolerance_change: float = 1e-12,
):
    """Minimise ``mean CE(features @ W + b, labels) + l2 |W|^2`` by full-batch L-BFGS (strong Wolfe line search);
    return ``(W [D, K], b [K])`` in the dtype of ``features``."""
    weight = torch.zeros(features.shape[1], classes, dtype=features.dtype, requires_grad=True)
    bias = torch.zeros(classes, dtype=features.dtype, requires_grad=True)
    optimizer = torch.optim.LBFGS(
        [weight, bias],
        max_iter=max_iter,
        tolerance_grad=tolerance_grad,
        tolerance_change=tolerance_change,
        line_search_fn="strong_wolfe",
    )

    def objective() -> Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(features @ weight + bias, labels) + l2 * (weight**2).sum()
        loss.backward()
        return loss

    optimizer.step(objective)
    return weight.detach(), bias.detach()


def fit_linear_probe(
    features: Tensor,
    labels: Tensor,
    num_classes: int,
    l2: float = 1e-3,
    iterations: int = 100,
    *,
    unbiased_scale: bool = False,
    min_scale: float = 1e-8,
    tolerance_grad: float = 1e-10,
    tolerance_change: float = 1e-9,
) -> LinearProbe:
    """Multinomial logistic regression on standardised features, in float64: :func:`fit_logistic` of
    ``(x - mean) / scale`` with the training mean and standard deviation (clamped at ``min_scale``).

    Args:
        features: ``[N, d]``.
        labels: ``[N]`` class indices in ``[0, num_classes)``.
        num_classes: number of classes.
        l2: the penalty on ``W``.
        iterations: L-BFGS iterations.
        unbiased_scale: standardise by the ``N - 1`` standard deviation instead of the ``N`` one.
        min_scale: floor of the standard deviation (a constant feature is left at zero, not divided by zero).
        tolerance_grad, tolerance_change: L-BFGS's stopping tolerances.
    """
    if features.dim() != 2 or labels.shape != features.shape[:1]:
        raise ValueError(f"expected features [N, d] and labels [N], got {tuple(features.shape)}, {tuple(labels.shape)}")
    if len(labels) == 0 or int(labels.min()) < 0 or int(labels.max()) >= num_classes:
        raise ValueError(f"labels must be non-empty class indices in [0, {num_classes})")
    x = features.detach().double()
    mean, scale = x.mean(0), x.std(0, unbiased=unbiased_scale).clamp_min(min_scale)
    weight, bias = fit_logistic(
        (x - mean) / scale, labels, num_classes, l2, iterations, tolerance_grad, tolerance_change
    )
    return LinearProbe(mean, scale, weight, bias)


def topk_accuracy(logits: Tensor, labels: Tensor, k: int) -> float:
    """Percentage of rows whose label is among the ``k`` largest logits."""
    k = min(k, logits.shape[1])
    return 100.0 * float((logits.topk(k, dim=1).indices == labels[:, None]).any(1).double().mean())


def linear_probe(
    train_features: Tensor,
    train_labels: Sequence,
    test_features: Tensor,
    test_labels: Sequence,
    l2: float = 1e-3,
) -> ProbeResult:
    """Fit a probe on ``(train_features [N, D], train_labels)`` and score it on the test pair.

    Features are standardised with the training mean and (``N - 1``) standard deviation; the fit runs L-BFGS to
    convergence (500 iterations at most). Labels are any hashable values; a test label never seen in training counts
    as a miss.
    """
    if len(train_labels) != len(train_features) or len(test_labels) != len(test_features):
        raise ValueError("linear_probe: every feature row needs one label")
    names = sorted(set(train_labels), key=str)
    index = {name: i for i, name in enumerate(names)}
    train_y = torch.tensor([index[label] for label in train_labels])
    test_y = torch.tensor([index.get(label, -1) for label in test_labels])
    probe = fit_linear_probe(
        train_features,
        train_y,
        len(names),
        l2,
        iterations=500,
        unbiased_scale=True,
        min_scale=1e-6,
        tolerance_grad=1e-9,
        tolerance_change=1e-12,
    )
    predicted = probe.logits(test_features).argmax(1)
    return ProbeResult(
        accuracy=(predicted == test_y).double().mean().item(),
        majority=max(Counter(test_labels).values()) / len(test_labels),
        classes=len(names),
    )


def subject_attributes(split) -> dict[str, list[str]]:
    """Per clip of a world split: the subject's colour, shape, size, starting row and column (thirds of the
    frame, as the captions say them) and its first event's kind."""
    values: dict[str, list[str]] = {name: [] for name in ATTRIBUTES}
    for clip in split.clips:
        subject = clip.scene.subject
        row, col = region(subject)
        found = (subject.colour, subject.shape, subject.size, row, col, subject.events[0].kind)
        for name, value in zip(ATTRIBUTES, found, strict=True):
            values[name].append(value)
    return values


def caption_mentions(split) -> dict[str, float]:
    """Per attribute of :data:`ATTRIBUTES`: the share of the split's captions that name it."""
    named = Counter(
        kind for clip in split.clips for facts in clip.annotation.caption_facts for kind in {f[0] for f in facts}
    )
    total = sum(len(clip.annotation.caption_facts) for clip in split.clips)
    return {name: named[name] / total for name in ATTRIBUTES}


@torch.no_grad()
def video_embeddings(model: nn.Module, world, split: str, batch_size: int = 100) -> Tensor:
    """``[N, d]`` ``model.encode_video`` of every clip of ``split``, in order, in eval mode."""
    was_training = model.training
    model.eval()
    try:
        return torch.cat([model.encode_video(batch) for batch in world.loader(split, batch_size, shuffle=False)])
    finally:
        model.train(was_training)


def video_attribute_probe(model: nn.Module, world, train: str = "train", test: str = "test") -> dict[str, ProbeResult]:
    """A linear probe per subject attribute on the frozen video embedding, fitted on ``train``, scored on
    ``test``."""
    train_x, test_x = video_embeddings(model, world, train).double(), video_embeddings(model, world, test).double()
    train_y, test_y = subject_attributes(world.splits[train]), subject_attributes(world.splits[test])
    return {name: linear_probe(train_x, train_y[name], test_x, test_y[name]) for name in ATTRIBUTES}


__all__ = [
    "ATTRIBUTES",
    "LinearProbe",
    "ProbeResult",
    "caption_mentions",
    "fit_linear_probe",
    "fit_logistic",
    "linear_probe",
    "subject_attributes",
    "topk_accuracy",
    "video_attribute_probe",
    "video_embeddings",
]
