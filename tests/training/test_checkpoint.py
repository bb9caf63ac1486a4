"""Checkpoints (meltr.training.checkpoint): atomic writes, a readable error for a bad file, and a backbone saved
with what rebuilds it comes back as the same class with the same weights."""

import pytest
import torch

from meltr.models import build_backbone
from meltr.training.backbones import load_pretrained, save_pretrained
from meltr.training.checkpoint import atomic_save, load_checkpoint


def test_atomic_save_writes_the_payload_and_leaves_no_temporary_file(tmp_path):
    path = atomic_save({"step": 3, "weights": torch.arange(4.0)}, tmp_path / "sub" / "state.pt")
    assert load_checkpoint(path)["step"] == 3 and torch.equal(load_checkpoint(path)["weights"], torch.arange(4.0))
    assert [p.name for p in path.parent.iterdir()] == ["state.pt"]


def test_a_file_that_is_not_a_checkpoint_names_itself(tmp_path):
    path = tmp_path / "garbage.pt"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match=r"garbage\.pt: not a readable meltr checkpoint"):
        load_checkpoint(path)


@pytest.mark.parametrize("name", ["univl", "violet", "allinone", "vatt"])
def test_a_saved_backbone_is_rebuilt_with_the_same_class_and_weights(name, tmp_path):
    torch.manual_seed(0)
    model = build_backbone(name, "tiny", vocab_size=64).eval()
    path = save_pretrained(tmp_path / f"{name}.pt", model, name, recipe={"note": "kept"})
    assert load_checkpoint(path)["recipe"] == {"note": "kept"}
    loaded = load_pretrained(path)
    assert type(loaded) is type(model) and not loaded.training
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
