"""LoRA through peft (``meltr.adapters.lora``): peft's layers on our Linear layers, only LoRA trains, the count is the
hand count, and peft stays an optional, lazily imported dependency."""

from __future__ import annotations

import copy
import subprocess
import sys

import pytest
import torch
from adapter_helpers import assert_same_outputs, differing_outputs, outputs, small_batch, tiny, train_steps

from meltr.adapters import LoRAConfig, inject_lora, lora_parameter_names, lora_target_names, require_peft

peft = pytest.importorskip("peft")

TARGETS = ("attention.query", "attention.value", "mlp.0", "mlp.2")


def adapted(name: str = "univl", **config) -> tuple[torch.nn.Module, torch.nn.Module]:
    reference = tiny(name)
    model = copy.deepcopy(reference)
    torch.manual_seed(1)
    inject_lora(model, LoRAConfig(**config))
    return reference, model


def original_name(name: str) -> str:
    """The backbone's name of a parameter of a LoRA-adapted model (peft keeps the wrapped Linear as base_layer)."""
    return name.replace(".base_layer.", ".")


def test_the_targets_are_peft_lora_layers_on_the_encoders_only():
    _, model = adapted()
    lora_layer = peft.tuners.lora.Linear
    wrapped = sorted(n for n, m in model.named_modules() if isinstance(m, lora_layer))
    expected = sorted(f"{encoder}.blocks.0.{t}" for encoder in ("text_encoder", "video_encoder") for t in TARGETS)
    assert wrapped == expected
    assert not any(isinstance(m, lora_layer) for m in model.cross_encoder.modules())


def test_the_trainable_count_is_the_hand_count_and_only_lora_trains():
    _, model = adapted(rank=4)
    dim, ff_dim, rank = 32, 64, 4  # the tiny UniVL
    per_block = rank * (dim + dim) * 2 + rank * (dim + ff_dim) + rank * (ff_dim + dim)  # q, v, mlp.0, mlp.2
    count = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert count == 2 * per_block == 2560
    assert [n for n, p in model.named_parameters() if p.requires_grad] == lora_parameter_names(model)
    assert all(".lora_A.default." in n or ".lora_B.default." in n for n in lora_parameter_names(model))


def test_lora_starts_at_the_frozen_backbone_and_training_changes_only_lora_parameters():
    reference, model = adapted()
    batch = small_batch()
    assert_same_outputs(outputs(model, batch), outputs(reference, batch))  # B = 0
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    train_steps(model, batch, steps=3)  # AdamW with weight decay over EVERY parameter
    lora = set(lora_parameter_names(model))
    backbone = reference.state_dict()
    for name, parameter in model.named_parameters():
        if name in lora:
            assert not torch.equal(parameter, before[name]), name
        else:
            assert torch.equal(parameter, backbone[original_name(name)]), name
    assert differing_outputs(outputs(model, batch), outputs(reference, batch))


def test_rank_and_alpha_reach_peft():
    _, model = adapted(rank=2, alpha=6.0)
    layer = model.text_encoder.blocks[0].attention.query
    assert layer.r["default"] == 2
    assert layer.scaling["default"] == pytest.approx(3.0)


@pytest.mark.parametrize(
    ("field", "value"),
    [("rank", 0), ("alpha", -1.0), ("dropout", 1.0), ("target_modules", ())],
)
def test_a_bad_config_is_a_value_error_naming_the_field(field, value):
    with pytest.raises(ValueError, match=f"LoRAConfig.{field}"):
        LoRAConfig(**{field: value})


def test_an_unknown_target_or_block_is_a_value_error_and_leaves_the_model_untouched():
    model = tiny("univl")
    with pytest.raises(ValueError, match=r"LoRAConfig\.target_modules"):
        inject_lora(model, target_modules=("attention.bogus",))
    with pytest.raises(ValueError, match=r"LoRAConfig\.first_block"):
        inject_lora(model, first_block=3)
    assert not lora_parameter_names(model)
    assert all(p.requires_grad for p in model.parameters())
    assert lora_target_names(model, LoRAConfig(first_block=-1))[0] == "video_encoder.blocks.0.attention.query"


def test_a_second_injection_is_refused():
    _, model = adapted()
    with pytest.raises(ValueError, match="already has"):
        inject_lora(model)


def test_missing_peft_is_an_import_error_that_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "peft", None)  # makes `import peft` fail
    with pytest.raises(ImportError, match=r"pip install 'meltr\[peft\]'"):
        require_peft()
    with pytest.raises(ImportError, match="peft"):
        inject_lora(tiny("univl"))


def test_importing_meltr_does_not_import_peft():
    code = (
        "import sys, meltr, meltr.adapters, meltr.recipes.base_to_novel, meltr.cli.adapt\n"
        "assert 'peft' not in sys.modules and 'transformers' not in sys.modules, 'peft imported'\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def test_merged_and_unmerged_lora_give_the_same_outputs_and_unmerge_restores_the_weights():
    _, model = adapted()
    batch = small_batch()
    train_steps(model, batch, steps=3)  # B != 0: the adapter changes the outputs
    lora_layers = [m for m in model.modules() if isinstance(m, peft.tuners.lora.LoraLayer)]
    weights = {id(m): m.base_layer.weight.detach().clone() for m in lora_layers}
    unmerged = outputs(model, batch)
    for layer in lora_layers:
        layer.merge()
    assert all(not torch.equal(m.base_layer.weight, weights[id(m)]) for m in lora_layers)
    merged = outputs(model, batch)
    for task in unmerged:
        torch.testing.assert_close(merged[task], unmerged[task], rtol=1e-5, atol=1e-6)
    for layer in lora_layers:
        layer.unmerge()
    for layer in lora_layers:
        torch.testing.assert_close(layer.base_layer.weight, weights[id(layer)], rtol=0, atol=1e-6)
