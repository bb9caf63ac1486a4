"""UniVL's frame stems: ``patch_mean`` (the default, as shipped), ``conv`` (keeps the frame's layout) and ``conv_pool``
(recognises an outline wherever it is, and says where through coordinate channels)."""

from __future__ import annotations

import pytest
import torch
from backbone_helpers import random_batch, tiny

from meltr.models import UniVL, UniVLConfig
from meltr.models.univl import UNIVL_TASKS, ConvFrameStem, PooledConvFrameStem
from meltr.training.backbones import load_pretrained, save_pretrained


def test_the_conv_stem_gives_one_feature_per_frame_that_depends_on_where_things_are():
    torch.manual_seed(0)
    stem = ConvFrameStem(dim=16, image_size=32, patch_size=8, channels=3)
    video = torch.zeros(2, 3, 3, 32, 32)
    video[0, :, :, 2:8, 2:8] = 1.0  # the same square, top left in clip 0 ...
    video[1, :, :, 24:30, 24:30] = 1.0  # ... bottom right in clip 1: the same pixels, moved
    features = stem(video)
    assert features.shape == (2, 3, 16)
    assert not torch.allclose(features[0], features[1], atol=1e-3)
    # A mean over the frame's pixels cannot tell them apart; the conv stem's features differ by more than
    # float noise relative to their size.
    assert (features[0] - features[1]).norm() > 0.05 * features[0].norm()


def test_the_pooled_stem_sees_an_outline_the_same_wherever_it_is_and_says_where_through_the_coordinates():
    torch.manual_seed(0)
    stem = PooledConvFrameStem(dim=16, image_size=64, channels=3)
    video = torch.zeros(3, 1, 3, 64, 64)
    video[0, :, :, 24:30, 24:30] = 1.0  # a square ...
    video[1, :, :, 28:34, 32:38] = 1.0  # ... the same square moved by one and two 4-pixel cells
    video[2, :, 0, 24:30, 24:30] = 1.0  # a red square where the first one was
    features = stem(video)[:, 0]
    assert features.shape == (3, 16)
    # The soft-argmax tells them apart; at initialisation the softmax over the cells is still flat, so the
    # difference is small, but three orders of magnitude above float32 rounding.
    assert (features[0] - features[1]).norm() > 1e-4 * features[0].norm()
    assert (features[0] - features[2]).norm() > 0.05 * features[0].norm()
    with torch.no_grad():
        width = stem.projection.in_features // 3
        stem.projection.weight[:, width:] = 0.0  # without the soft-argmax: the maxima come first, then (x, y)s
    features = stem(video)[:, 0]
    # Shifts by whole cells, away from the zero padding, permute the grid's cells; their max does not change.
    torch.testing.assert_close(features[0], features[1], atol=1e-5, rtol=1e-5)
    assert (features[0] - features[2]).norm() > 0.05 * features[0].norm()


@pytest.mark.parametrize("stem", ["conv", "conv_pool"])
@pytest.mark.parametrize("task", UNIVL_TASKS)
def test_with_a_conv_stem_every_loss_is_finite_and_a_few_steps_lower_it(stem, task):
    model, batch = tiny("univl", frame_stem=stem), random_batch()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    history = []
    # The battery's 15 steps are too few for joint (video-text matching) with these stems: it leaves chance later
    # than with the default stem, and later still with the pooled one.
    for _ in range({"conv": 25, "conv_pool": 40}[stem]):
        torch.manual_seed(0)
        loss = model(batch)[task]
        assert loss.shape == (4,) and torch.isfinite(loss).all()
        optimizer.zero_grad()
        loss.mean().backward()
        optimizer.step()
        history.append(loss.mean().item())
    torch.manual_seed(0)
    assert model(batch)[task].mean().item() < 0.98 * history[0], history


@pytest.mark.parametrize("stem", ["conv", "conv_pool"])
def test_a_conv_stem_leaves_no_parameter_unused(stem):
    model, batch = tiny("univl", frame_stem=stem), random_batch()
    torch.manual_seed(0)
    sum(loss.mean() for loss in model(batch).values()).backward()
    assert [name for name, p in model.named_parameters() if p.grad is None] == []
    assert not hasattr(model, "patch_embedding")


@pytest.mark.parametrize("stem", ["conv", "conv_pool"])
def test_a_conv_stem_checkpoint_round_trips(tmp_path, stem):
    model, batch = tiny("univl", frame_stem=stem), random_batch()
    path = save_pretrained(tmp_path / "conv.pt", model, "univl")
    again = load_pretrained(path)
    assert again.config.frame_stem == stem
    model.eval()
    torch.manual_seed(3)
    expected = model(batch)
    torch.manual_seed(3)
    got = again(batch)
    for task in UNIVL_TASKS:
        torch.testing.assert_close(got[task], expected[task])


def test_the_default_stem_is_the_one_the_shipped_checkpoint_was_trained_with():
    assert UniVLConfig().frame_stem == "patch_mean"
    assert hasattr(UniVL(UniVLConfig(dim=32, num_heads=2, ff_dim=32)), "patch_embedding")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"frame_stem": "resnet"}, "frame_stem must be one of patch_mean, conv, conv_pool, features, got 'resnet'"),
        ({"frame_stem": "conv", "patch_size": 2}, "divisible by 4 that divides image_size, got patch_size=2, "),
        ({"frame_stem": "conv", "patch_size": 12}, "got patch_size=12, image_size=32"),
        ({"frame_stem": "conv_pool", "image_size": 30, "patch_size": 5}, "image_size divisible by 4, got 30"),
    ],
)
def test_bad_stems_fail_naming_the_field(overrides, message):
    with pytest.raises(ValueError, match=message):
        UniVLConfig(**overrides)
