"""The backbone registry, presets, configs and parameter budgets."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from backbone_helpers import VOCAB_SIZE, random_batch, tiny

from meltr.models import (
    BACKBONES,
    SIZES,
    AllInOneConfig,
    Backbone,
    PatchQuantizer,
    UniVLConfig,
    VioletConfig,
    build_backbone,
    config_help,
    count_parameters,
)
from meltr.models.layers import patchify


def test_the_four_backbones_are_registered():
    assert BACKBONES.names() == ["allinone", "univl", "vatt", "violet"]


def test_unknown_names_sizes_and_fields_fail_with_the_fix():
    with pytest.raises(KeyError, match="allinone, univl, vatt, violet"):
        build_backbone("clip", vocab_size=VOCAB_SIZE)
    with pytest.raises(KeyError, match="default, tiny"):
        build_backbone("univl", "huge", vocab_size=VOCAB_SIZE)
    with pytest.raises(TypeError, match="dim"):
        build_backbone("violet", "tiny", vocab_size=VOCAB_SIZE, width=3)
    with pytest.raises(ValueError, match="divisible"):
        build_backbone("allinone", "tiny", vocab_size=VOCAB_SIZE, dim=30, num_heads=4)
    with pytest.raises(ValueError, match="text_mask_prob"):
        build_backbone("univl", "tiny", vocab_size=VOCAB_SIZE, text_mask_prob=1.5)
    with pytest.raises(ValueError, match="roll_fraction"):
        build_backbone("allinone", "tiny", vocab_size=VOCAB_SIZE, roll_fraction=0.9)


@pytest.mark.parametrize("config_class", [UniVLConfig, VioletConfig, AllInOneConfig])
def test_every_config_field_has_help(config_class):
    helps = config_help(config_class)
    assert set(helps) == {f.name for f in dataclasses.fields(config_class)}
    assert all(len(text) > 10 for text in helps.values())


def test_overrides_reach_the_config(backbone_name):
    model = build_backbone(backbone_name, "tiny", vocab_size=77, image_size=16, max_frames=12)
    assert (model.config.vocab_size, model.config.image_size, model.config.max_frames) == (77, 16, 12)
    losses = model(random_batch(image_size=16, frames=12, vocab_size=77))
    assert all(torch.isfinite(loss).all() for loss in losses.values())


def test_backbones_follow_the_protocol(backbone_name):
    assert isinstance(tiny(backbone_name), Backbone)
    assert set(SIZES) == {"default", "tiny"}


@pytest.mark.parametrize("size, low, high", [("tiny", 10_000, 100_000), ("default", 1_000_000, 10_000_000)])
def test_parameter_budgets(backbone_name, size, low, high):
    count = count_parameters(build_backbone(backbone_name, size, vocab_size=1000))
    print(f"{backbone_name} {size}: {count:,} parameters at vocab_size=1000")
    assert low <= count <= high, f"{backbone_name} {size} has {count:,} parameters"


def test_state_dict_round_trip_keeps_the_losses(backbone_name, batch):
    model = tiny(backbone_name)
    torch.manual_seed(123)
    other = build_backbone(backbone_name, "tiny", vocab_size=VOCAB_SIZE)
    other.load_state_dict(model.state_dict())
    torch.manual_seed(0)
    expected = model(batch)
    torch.manual_seed(0)
    got = other(batch)
    assert all(torch.equal(expected[t], got[t]) for t in model.tasks)


def test_the_patch_quantizer_is_fixed_by_its_seed_and_uses_many_codes():
    patches = patchify(random_batch(batch_size=8)["video"], 8)
    first, again, other = (PatchQuantizer(8, seed=s) for s in (0, 0, 1))
    codes = first(patches)
    assert codes.shape == patches.shape[:-1] and codes.min() >= 0 and codes.max() < 256
    assert torch.equal(codes, again(patches))
    assert not torch.equal(codes, other(patches))
    assert codes.unique().numel() > 32
    assert "quantizer.codebook" in tiny("violet").state_dict()


def test_a_patch_of_a_prototype_colour_gets_that_prototype_code():
    quantizer = PatchQuantizer(4, channels=3, codebook_size=16, grid=2, seed=3)
    layout = quantizer.codebook.view(16, 3, 2, 1, 2, 1).expand(16, 3, 2, 2, 2, 2)
    patches = layout.reshape(16, 3, 4, 4).flatten(1)  # patch k shows prototype k's colour in each sub-block
    torch.testing.assert_close(quantizer.describe(patches), quantizer.codebook)
    assert torch.equal(quantizer(patches), torch.arange(16))
    with pytest.raises(ValueError, match="divide"):
        PatchQuantizer(8, grid=3)
