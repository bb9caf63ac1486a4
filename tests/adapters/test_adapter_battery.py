"""The shared battery every registered adapter passes (``ADAPTERS``), on every tiny backbone: exact identity at an
identity initialisation, exact frozen outputs when disabled, a frozen backbone under training, save / load of the
adapter weights only, the merge contract, and unloading."""

from __future__ import annotations

import copy

import pytest
import torch
from adapter_helpers import (
    BACKBONE_NAMES,
    assert_same_outputs,
    differing_outputs,
    outputs,
    small_batch,
    tiny,
    train_steps,
)

from meltr.adapters import (
    ADAPTERS,
    AdaptedBlock,
    AdapterMergeError,
    adapter_disabled,
    adapter_parameter_names,
    backbone_state_dict,
    disable_adapter,
    enable_adapter,
    load_adapter,
    merge_adapter,
    save_adapter,
    unload_adapter,
    unmerge_adapter,
)

OPTIONS = {
    "msta": {"bottleneck_dim": 4},
    "adaptformer": {"bottleneck_dim": 4, "init": "kaiming"},
    "lora": {"rank": 2, "init": "random"},
}
"""Small options of every adapter for the battery."""

IDENTITY_INIT = {"msta": {"init": "zero_up"}, "adaptformer": {"init": "zero_up"}, "lora": {"init": "zero_b"}}
"""Options under which each adapter starts exactly at the frozen backbone."""

CASES = [(adapter, backbone) for adapter in ADAPTERS.names() for backbone in BACKBONE_NAMES]


def test_every_registered_adapter_is_in_the_battery():
    assert set(OPTIONS) == set(IDENTITY_INIT) == set(ADAPTERS.names())


def adapted(adapter: str, backbone: str, **options) -> tuple[torch.nn.Module, torch.nn.Module]:
    if adapter == "lora":
        pytest.importorskip("peft")  # LoRA is peft's; the optional dependency is in the dev extra
    reference = tiny(backbone)
    model = copy.deepcopy(reference)
    torch.manual_seed(1)
    ADAPTERS.build(adapter, model, **{**OPTIONS[adapter], **options})
    return reference, model


@pytest.mark.parametrize(("adapter", "backbone"), CASES)
def test_identity_initialisation_gives_the_frozen_outputs_exactly(adapter, backbone):
    reference, model = adapted(adapter, backbone, **IDENTITY_INIT[adapter])
    assert_same_outputs(outputs(model, small_batch()), outputs(reference, small_batch()))


@pytest.mark.parametrize(("adapter", "backbone"), CASES)
def test_disable_gives_the_frozen_outputs_exactly(adapter, backbone):
    reference, model = adapted(adapter, backbone)
    batch = small_batch()
    expected = outputs(reference, batch)
    enabled = outputs(model, batch)
    assert differing_outputs(enabled, expected)
    with adapter_disabled(model):
        assert_same_outputs(outputs(model, batch), expected)
    assert_same_outputs(outputs(model, batch), enabled)  # restored
    disable_adapter(model)
    assert_same_outputs(outputs(model, batch), expected)
    enable_adapter(model)
    assert_same_outputs(outputs(model, batch), enabled)


@pytest.mark.parametrize(("adapter", "backbone"), CASES)
def test_training_changes_only_the_adapter(adapter, backbone):
    reference, model = adapted(adapter, backbone)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    train_steps(model, small_batch())
    backbone_state = backbone_state_dict(model)
    assert backbone_state.keys() == reference.state_dict().keys()
    for key, value in reference.state_dict().items():
        assert torch.equal(backbone_state[key], value), key
    adapter_names = adapter_parameter_names(model)
    assert [n for n, p in model.named_parameters() if p.requires_grad] == adapter_names
    named = dict(model.named_parameters())
    assert [n for n in adapter_names if not torch.equal(named[n], before[n])] == adapter_names


@pytest.mark.parametrize(("adapter", "backbone"), CASES)
def test_save_and_load_hold_the_adapter_only(adapter, backbone, tmp_path):
    _, model = adapted(adapter, backbone)
    batch = small_batch()
    train_steps(model, batch, steps=1)
    save_adapter(model, tmp_path / "adapter.pt")
    saved = torch.load(tmp_path / "adapter.pt", weights_only=True)
    assert saved["adapter"] == adapter
    assert list(saved["state"]) == adapter_parameter_names(model)
    fresh = tiny(backbone)
    load_adapter(fresh, tmp_path / "adapter.pt")
    assert_same_outputs(outputs(fresh, batch), outputs(model, batch))


@pytest.mark.parametrize(("adapter", "backbone"), CASES)
def test_merge_either_raises_and_changes_nothing_or_round_trips(adapter, backbone):
    _, model = adapted(adapter, backbone)
    batch = small_batch()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    expected = outputs(model, batch)
    try:
        merge_adapter(model)
    except AdapterMergeError:
        for key, value in model.state_dict().items():
            assert torch.equal(value, state[key]), key
        with pytest.raises(AdapterMergeError):
            unmerge_adapter(model)
        return
    merged = outputs(model, batch)
    for key in expected:
        torch.testing.assert_close(merged[key], expected[key])
    unmerge_adapter(model)
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, state[key])


@pytest.mark.parametrize(("adapter", "backbone"), CASES)
def test_unload_restores_the_backbone(adapter, backbone):
    reference, model = adapted(adapter, backbone)
    unload_adapter(model)
    assert not any(isinstance(m, AdaptedBlock) for m in model.modules())
    assert model.state_dict().keys() == reference.state_dict().keys()
    assert all(p.requires_grad for p in model.parameters())
    assert_same_outputs(outputs(model, small_batch()), outputs(reference, small_batch()))
    ADAPTERS.build(adapter, model, **OPTIONS[adapter])  # can be adapted again
