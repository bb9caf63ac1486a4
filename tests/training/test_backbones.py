"""The backbone a run starts from: the checkpoint shipped at the recipe's size, and one-line errors."""

import pytest
import torch

from meltr.models import pretrained_path
from meltr.training.backbones import backbone_for, checkpoint_file, load_pretrained

VOCAB = load_pretrained(pretrained_path("univl")).config.vocab_size


def test_pretrained_means_the_checkpoint_shipped_at_the_recipes_size():
    assert checkpoint_file("pretrained", "univl") == pretrained_path("univl")
    assert pretrained_path("univl").name == "univl.pt"
    assert checkpoint_file("pretrained", "univl", "tiny").name == "univl-tiny.pt"
    assert checkpoint_file("none", "univl", "tiny") is None
    default = backbone_for("univl", "pretrained", vocab_size=VOCAB, size="default")
    tiny = backbone_for("univl", "pretrained", vocab_size=VOCAB, size="tiny")
    shipped = load_pretrained(pretrained_path("univl", "tiny"))
    assert sum(p.numel() for p in tiny.parameters()) < sum(p.numel() for p in default.parameters())
    for (name, value), (other, expected) in zip(tiny.state_dict().items(), shipped.state_dict().items(), strict=True):
        assert name == other and torch.equal(value, expected), name


def test_a_size_without_a_shipped_checkpoint_is_one_line_naming_the_field_and_the_shipped_ones():
    with pytest.raises(
        ValueError, match=r"recipe.yaml: field 'checkpoint': no pre-trained violet of size 'tiny'.*univl-tiny"
    ):
        backbone_for("violet", "pretrained", vocab_size=VOCAB, size="tiny", source="recipe.yaml")
