"""Linear probes (meltr.analysis.probe): the fit is the regularised optimum, and the accuracy means what it says."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from meltr.analysis.probe import (
    ATTRIBUTES,
    caption_mentions,
    fit_linear_probe,
    fit_logistic,
    linear_probe,
    subject_attributes,
    topk_accuracy,
    video_attribute_probe,
)
from meltr.data import make_world
from meltr.models import build_backbone


def test_the_fit_is_a_stationary_point_of_the_regularised_objective():
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(200, 5, generator=generator, dtype=torch.float64)
    labels = (features[:, 0] + 0.5 * torch.randn(200, generator=generator, dtype=torch.float64) > 0).long()
    labels = labels + (features[:, 1] > 1).long()  # three classes
    weight, bias = fit_logistic(features, labels, 3, l2=1e-2)
    weight.requires_grad_(True)
    bias.requires_grad_(True)
    loss = F.cross_entropy(features @ weight + bias, labels) + 1e-2 * (weight**2).sum()
    grad_weight, grad_bias = torch.autograd.grad(loss, (weight, bias))
    assert grad_weight.abs().max() < 1e-6 and grad_bias.abs().max() < 1e-6
    # and a step away in a random direction raises the objective (a minimum, not a saddle)
    direction = torch.randn(weight.shape, generator=generator, dtype=torch.float64) * 1e-2
    worse = F.cross_entropy(features @ (weight + direction) + bias, labels) + 1e-2 * ((weight + direction) ** 2).sum()
    assert worse > loss


def test_a_linearly_encoded_label_is_read_and_noise_is_not():
    generator = torch.Generator().manual_seed(1)
    labels = [["red", "green", "blue"][i % 3] for i in range(600)]
    code = torch.eye(3, dtype=torch.float64)[[("red", "green", "blue").index(x) for x in labels]]
    noise = torch.randn(600, 8, generator=generator, dtype=torch.float64)
    encoded = torch.cat([code + 0.1 * noise[:, :3], noise[:, 3:]], dim=1)
    readable = linear_probe(encoded[:300], labels[:300], encoded[300:], labels[300:])
    assert readable.accuracy == 1.0 and readable.classes == 3
    assert abs(readable.majority - 1 / 3) < 1e-9
    unreadable = linear_probe(noise[:300], labels[:300], noise[300:], labels[300:])
    assert unreadable.accuracy < 0.45  # chance is 1/3; 300 test clips


def test_a_label_never_seen_in_training_counts_as_a_miss():
    features = torch.eye(2, dtype=torch.float64).repeat(10, 1)
    result = linear_probe(features, ["a", "b"] * 10, features[:2], ["a", "c"])
    assert result.accuracy == 0.5 and result.majority == 0.5


def test_the_video_probe_reads_every_attribute_of_the_world():
    world = make_world(n_pretrain=0, n_train=60, n_meta=0, n_test=40)
    attributes = subject_attributes(world.splits["test"])
    assert list(attributes) == list(ATTRIBUTES) and all(len(v) == 40 for v in attributes.values())
    assert set(attributes["row"]) <= {"top", "middle", "bottom"}
    torch.manual_seed(0)
    model = build_backbone("univl", "tiny", vocab_size=world.tokenizer.vocab_size)
    model.train()
    results = video_attribute_probe(model, world)
    assert model.training  # left as it was
    assert set(results) == set(ATTRIBUTES)
    assert all(0.0 <= r.accuracy <= 1.0 and r.classes >= 2 for r in results.values())


def test_caption_mentions_count_the_captions_that_name_each_attribute():
    world = make_world(n_pretrain=0, n_train=0, n_meta=0, n_test=30)
    split = world.splits["test"]
    shares = caption_mentions(split)
    captions = [facts for clip in split.clips for facts in clip.annotation.caption_facts]
    naming_shape = [facts for facts in captions if any(f[0] == "shape" for f in facts)]
    assert shares["shape"] == len(naming_shape) / len(captions)
    assert 0 < shares["shape"] < 1 and shares["event"] == 1.0  # every caption says what happens


def test_the_linear_probe_separates_separable_classes():
    generator = torch.Generator().manual_seed(0)
    centres = torch.randn(4, 6, generator=generator) * 5
    labels = torch.arange(4).repeat(25)
    features = centres[labels] + torch.randn(100, 6, generator=generator) * 0.3
    probe = fit_linear_probe(features, labels, 4)
    assert topk_accuracy(probe.logits(features), labels, 1) == 100.0
    assert topk_accuracy(torch.eye(3), torch.tensor([0, 0, 0]), 1) == pytest.approx(100 / 3)
    assert topk_accuracy(torch.eye(3), torch.tensor([0, 0, 0]), 5) == 100.0
    with pytest.raises(ValueError, match="class indices"):
        fit_linear_probe(features, labels + 4, 4)
