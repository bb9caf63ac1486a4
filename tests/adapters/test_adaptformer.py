"""AdaptFormer (``meltr.adapters.adaptformer``): where it goes, its exact form, its parameter count and its config
(the checks every registered adapter passes, AdaptFormer included, are in ``test_adapter_battery.py``)."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from adapter_helpers import assert_same_outputs, differing_outputs, outputs, small_batch, tiny

from meltr.adapters import (
    AdaptedBlock,
    AdaptFormerConfig,
    AdaptMLP,
    adapted_blocks,
    adapter_parameter_names,
    inject_adaptformer,
    trainable_parameters,
)


def adapted(name: str = "univl", **config) -> tuple[torch.nn.Module, torch.nn.Module]:
    reference = tiny(name)
    model = copy.deepcopy(reference)
    torch.manual_seed(1)
    inject_adaptformer(model, AdaptFormerConfig(**{"bottleneck_dim": 4, **config}))
    return reference, model


def test_the_default_zero_up_projection_gives_the_frozen_backbone_exactly():
    reference, model = adapted()  # the default init is AdaptFormer's: W_up = 0
    assert model.adapter_config.init == "zero_up"
    batch = small_batch()
    assert_same_outputs(outputs(model, batch), outputs(reference, batch))
    for _, wrapper in adapted_blocks(model):
        assert torch.count_nonzero(wrapper.adapter.up.weight) == 0
        assert torch.count_nonzero(wrapper.adapter.down.weight) > 0
    _, kaiming = adapted(init="kaiming")  # the same comparison notices an adapter that is not zero
    assert differing_outputs(outputs(kaiming, batch), outputs(reference, batch))


def test_univl_gets_one_adapter_on_the_mlp_of_every_encoder_block():
    _, model = adapted()
    assert [n for n, _ in adapted_blocks(model)] == ["text_encoder.blocks.0.mlp", "video_encoder.blocks.0.mlp"]
    assert all(isinstance(w.adapter, AdaptMLP) for _, w in adapted_blocks(model))
    assert not any(isinstance(m, AdaptedBlock) for m in model.cross_encoder.modules())


def test_the_trainable_count_is_the_hand_count_of_the_bottlenecks():
    _, model = adapted()
    dim, rank = 32, 4  # the tiny UniVL's width, the bottleneck
    per_block = (dim * rank + rank) + (rank * dim + dim)  # W_down and its bias, W_up and its bias
    count = trainable_parameters(model)
    assert count.trainable == 2 * per_block  # one text block, one video block
    assert count.trainable == sum(p.numel() for n, p in model.named_parameters() if n in adapter_parameter_names(model))


def test_a_block_computes_its_mlp_plus_the_scaled_relu_bottleneck():
    _, model = adapted(init="kaiming", scale=0.3)
    block = model.text_encoder.blocks[0]
    wrapper = block.mlp
    x = torch.randn(2, 5, 32)
    hidden = x + block.attention(block.attention_norm(x))
    normed = block.mlp_norm(hidden)
    adapter = wrapper.adapter
    expected = (
        hidden
        + wrapper.block(normed)
        + 0.3 * (F.relu(normed @ adapter.down.weight.t() + adapter.down.bias) @ adapter.up.weight.t() + adapter.up.bias)
    )
    torch.testing.assert_close(block(x), expected)


@pytest.mark.parametrize(
    ("field", "value"),
    [("bottleneck_dim", 0), ("scale", float("nan")), ("init", "xavier")],
)
def test_a_bad_config_is_a_value_error_naming_the_field(field, value):
    with pytest.raises(ValueError, match=f"AdaptFormerConfig.{field}"):
        AdaptFormerConfig(**{field: value})


def test_first_block_out_of_range_leaves_the_model_untouched():
    reference, model = copy.deepcopy(tiny("univl")), tiny("univl")
    with pytest.raises(ValueError, match=r"AdaptFormerConfig\.first_block"):
        inject_adaptformer(model, first_block=5)
    assert not adapted_blocks(model)
    assert all(p.requires_grad for p in model.parameters())
    assert model.state_dict().keys() == reference.state_dict().keys()
