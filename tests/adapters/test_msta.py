"""MSTA (``meltr.adapters.msta``): exactness at zero up-projections, where it is injected, the shared bottleneck, the
temporal convolution, the ablations, save / load, merge and copies (the checks every adapter passes are in
``test_adapter_battery.py``)."""

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
)

from meltr.adapters import (
    ADAPTERS,
    MSTA,
    AdapterMergeError,
    MSTAConfig,
    TokenLayout,
    adapted_blocks,
    adapter_parameter_names,
    inject_msta,
    load_adapter,
    merge_adapter,
    msta_config_help,
    save_adapter,
    trainable_parameters,
    unmerge_adapter,
)

SMALL = {"bottleneck_dim": 4}


def adapted(name: str, **config) -> tuple[torch.nn.Module, torch.nn.Module]:
    """``(frozen reference, MSTA-adapted copy)`` of the tiny backbone ``name``."""
    reference = tiny(name)
    model = copy.deepcopy(reference)
    torch.manual_seed(1)
    inject_msta(model, MSTAConfig(**{**SMALL, **config}))
    return reference, model


# -- exactness -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", BACKBONE_NAMES)
def test_zero_up_projections_give_the_frozen_outputs_exactly(name):
    reference, model = adapted(name, init="zero_up")
    batch = small_batch()
    assert_same_outputs(outputs(model, batch), outputs(reference, batch))
    # the same check notices an adapter that is not zero
    _, kaiming = adapted(name, init="kaiming")
    assert differing_outputs(outputs(kaiming, batch), outputs(reference, batch))


# -- structure -------------------------------------------------------------------------------------------------------


def test_univl_adapts_the_text_and_video_encoders_only():
    _, model = adapted("univl")
    assert [n for n, _ in adapted_blocks(model)] == ["text_encoder.blocks.0", "video_encoder.blocks.0"]
    assert {m.adapter.role for _, m in adapted_blocks(model)} == {"text", "video"}


@pytest.mark.parametrize("name", ["violet", "allinone"])
def test_single_stream_encoders_get_one_adapter_per_block_with_both_branches(name):
    _, model = adapted(name)
    blocks = adapted_blocks(model)
    assert len(blocks) == len(model.encoder.blocks)
    for _, block in blocks:
        assert block.adapter.branches == ("video", "text")
        assert isinstance(block.adapter.bottleneck, torch.nn.Linear)


def test_first_block_selects_the_high_blocks():
    _, model = adapted("violet", first_block=-1)
    assert [n for n, _ in adapted_blocks(model)] == ["encoder.blocks.1"]
    _, model = adapted("violet", first_block=1)
    assert [n for n, _ in adapted_blocks(model)] == ["encoder.blocks.1"]
    model = tiny("violet")
    with pytest.raises(ValueError, match="first_block"):
        inject_msta(model, MSTAConfig(first_block=2))
    assert not adapted_blocks(model) and all(p.requires_grad for p in model.parameters())  # untouched


def test_config_has_help_on_every_field_and_validates():
    assert all(msta_config_help().values())
    for bad in ({"modalities": ("audio",)}, {"modalities": ()}, {"temporal_kernel": 2}, {"bottleneck_dim": 0}):
        with pytest.raises(ValueError):
            MSTAConfig(**bad)


def test_registry_builds_msta_and_names_the_known_adapters():
    model = tiny("univl")
    assert ADAPTERS.build("msta", model, bottleneck_dim=4) is model
    assert model.adapter_config == MSTAConfig(bottleneck_dim=4)
    with pytest.raises(KeyError, match="msta"):
        ADAPTERS.get("lora-typo")
    with pytest.raises(ValueError, match="already"):
        inject_msta(model)


def test_unknown_backbone_fails_with_the_fix():
    with pytest.raises(KeyError, match="adapter_sites"):
        inject_msta(torch.nn.Linear(2, 2))


def test_trainable_parameters_counts_the_adapter_once():
    reference, model = adapted("univl")
    count = trainable_parameters(model)
    adapter = sum(p.numel() for n, p in model.named_parameters() if n in adapter_parameter_names(model))
    assert count.trainable == adapter
    assert count.total == sum(p.numel() for p in reference.parameters()) + adapter
    assert 0 < count.percent < 10
    _, unshared = adapted("univl", shared_bottleneck=False)
    r = SMALL["bottleneck_dim"]
    assert trainable_parameters(unshared).trainable == adapter + r * r + r  # one more bottleneck


# -- the shared bottleneck -------------------------------------------------------------------------------------------


def bottleneck_gradients(model, parameter, batch):
    """Gradient of ``parameter`` from a text-only loss, from a video-only loss, and from their sum."""
    grads = []
    for loss in (
        lambda: model.encode_text(batch).pow(3).sum(),
        lambda: model.encode_video(batch).pow(3).sum(),
        lambda: model.encode_text(batch).pow(3).sum() + model.encode_video(batch).pow(3).sum(),
    ):
        (grad,) = torch.autograd.grad(loss(), [parameter], allow_unused=True)
        grads.append(torch.zeros_like(parameter) if grad is None else grad)
    return grads


@pytest.mark.parametrize("name", BACKBONE_NAMES)
def test_the_bottleneck_is_one_parameter_with_gradient_from_both_modalities(name):
    _, model = adapted(name)
    batch = small_batch()
    if name == "univl":
        text_msta = model.text_encoder.blocks[0].adapter
        video_msta = model.video_encoder.blocks[0].adapter
    else:
        text_msta = video_msta = model.encoder.blocks[-1].adapter
    assert text_msta._shared("text") is video_msta._shared("video")
    weight = text_msta._shared("text").weight
    assert text_msta._shared("text").weight is video_msta._shared("video").weight
    assert sum(n.endswith("bottleneck.weight") for n in adapter_parameter_names(model)) == len(
        model.encoder.blocks if name != "univl" else [0]
    )
    from_text, from_video, from_both = bottleneck_gradients(model, weight, batch)
    assert from_text.abs().sum() > 0 and from_video.abs().sum() > 0
    torch.testing.assert_close(from_both, from_text + from_video)


@pytest.mark.parametrize("name", BACKBONE_NAMES)
def test_without_sharing_each_bottleneck_hears_one_modality(name):
    _, model = adapted(name, shared_bottleneck=False)
    batch = small_batch()
    if name == "univl":
        text_msta, video_msta = model.text_encoder.blocks[0].adapter, model.video_encoder.blocks[0].adapter
    else:
        text_msta = video_msta = model.encoder.blocks[-1].adapter
    text_weight, video_weight = text_msta.text_bottleneck.weight, video_msta.video_bottleneck.weight
    assert text_weight is not video_weight
    assert bottleneck_gradients(model, text_weight, batch)[1].abs().sum() == 0  # nothing from the video loss
    assert bottleneck_gradients(model, video_weight, batch)[0].abs().sum() == 0  # nothing from the text loss


def test_encoders_of_different_depths_share_bottlenecks_from_the_top():
    model = tiny("univl", text_layers=2)
    inject_msta(model, MSTAConfig(**SMALL))
    text_blocks, video_blocks = model.text_encoder.blocks, model.video_encoder.blocks
    assert text_blocks[1].adapter.bottleneck is video_blocks[0].adapter.bottleneck  # the two top blocks
    assert text_blocks[0].adapter.bottleneck is not video_blocks[0].adapter.bottleneck  # no partner: its own


# -- ablations -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", BACKBONE_NAMES)
def test_language_only_and_vision_only_leave_the_other_modality_frozen(name):
    reference, text_only = adapted(name, modalities=("text",))
    batch = small_batch()
    assert torch.equal(text_only.encode_video(batch), reference.encode_video(batch))
    assert not torch.equal(text_only.encode_text(batch), reference.encode_text(batch))
    _, video_only = adapted(name, modalities=("video",))
    assert torch.equal(video_only.encode_text(batch), reference.encode_text(batch))
    assert not torch.equal(video_only.encode_video(batch), reference.encode_video(batch))


# -- the temporal up-projection --------------------------------------------------------------------------------------


@pytest.mark.parametrize("frames_in_batch", [False, True])
@pytest.mark.parametrize("temporal_up", [True, False])
def test_the_temporal_convolution_reaches_the_neighbouring_frames_only(frames_in_batch, temporal_up):
    torch.manual_seed(0)
    config = MSTAConfig(bottleneck_dim=4, temporal_kernel=3, temporal_up=temporal_up)
    router_layout = TokenLayout(text_tokens=2, frames=5, frames_in_batch=frames_in_batch)

    class Router:
        def current(self):
            return router_layout

    shared = torch.nn.Linear(4, 4)
    msta = MSTA(8, config, "mixed", {"video": shared, "text": shared}, Router())
    tokens_per_frame = 3
    batch, frames = 2, 5
    if frames_in_batch:
        x = torch.randn(batch * frames, 2 + tokens_per_frame, 8)
    else:
        x = torch.randn(batch, 2 + frames * tokens_per_frame, 8)

    def frame_view(out):  # video outputs [B, F, T, d]
        return router_layout.video_grid(out[:, 2:])

    before = frame_view(msta(x))
    poked = x.clone()
    frame_view(poked)[0, 2, 1] += 1.0  # clip 0, frame 2, token 1 (a view: writes into poked)
    changed = (frame_view(msta(poked)) - before).abs().sum(-1) > 0  # [B, F, T]
    expected = torch.zeros_like(changed)
    expected[0, 2, 1] = True
    if temporal_up:
        expected[0, 1, 1] = expected[0, 3, 1] = True
    assert torch.equal(changed, expected)


@pytest.mark.parametrize("frames_in_batch", [False, True])
def test_msta_output_against_a_hand_computation(frames_in_batch):
    """Eq. (1)'s adapter written out token by token, the temporal convolution as an explicit sum over time."""
    torch.manual_seed(0)
    layout = TokenLayout(text_tokens=2, frames=4, frames_in_batch=frames_in_batch)

    class Router:
        def current(self):
            return layout

    shared = torch.nn.Linear(3, 3)
    msta = MSTA(5, MSTAConfig(bottleneck_dim=3), "mixed", {"video": shared, "text": shared}, Router()).double()
    batch, frames, per_frame = 2, 4, 3
    shape = (batch * frames, 2 + per_frame, 5) if frames_in_batch else (batch, 2 + frames * per_frame, 5)
    x = torch.randn(*shape, dtype=torch.float64)
    gelu = torch.nn.functional.gelu

    def hidden(token, down):
        return gelu(shared.weight.double() @ gelu(down.weight @ token + down.bias) + shared.bias.double())

    expected = torch.empty_like(x)
    expected[:, :2] = torch.stack(
        [
            torch.stack([msta.text_up.weight @ hidden(t, msta.text_down) + msta.text_up.bias for t in seq])
            for seq in x[:, :2]
        ]
    )
    video = layout.video_grid(x[:, 2:])  # [B, F, T, d]
    conv = msta.video_up_temporal
    out = torch.empty_like(video)
    for b in range(batch):
        for f in range(frames):
            for t in range(per_frame):
                z = hidden(video[b, f, t], msta.video_down)
                value = msta.video_up_spatial.weight @ z + msta.video_up_spatial.bias + conv.bias
                for offset in (-1, 0, 1):
                    if 0 <= f + offset < frames:
                        neighbour = hidden(video[b, f + offset, t], msta.video_down)
                        value = value + conv.weight[:, :, offset + 1, 0, 0] @ neighbour
                out[b, f, t] = value
    expected[:, 2:] = out.reshape(x[:, 2:].shape)
    torch.testing.assert_close(msta(x), expected)


# -- save / load, merge, copies --------------------------------------------------------------------------------------


def test_the_adapter_file_holds_the_config_and_adapter_keys_only(tmp_path):
    """(The round trip itself is in the battery.)"""
    _, model = adapted("univl", first_block=-1, modalities=("text",))
    save_adapter(model, tmp_path / "msta.pt")
    saved = torch.load(tmp_path / "msta.pt", weights_only=True)
    assert list(saved["state"]) == adapter_parameter_names(model)
    assert all(key.startswith("text_encoder.blocks.0.adapter.") for key in saved["state"])
    fresh = tiny("univl")
    load_adapter(fresh, tmp_path / "msta.pt")  # injects the saved config
    assert fresh.adapter_config == model.adapter_config
    other = tiny("univl")
    inject_msta(other, MSTAConfig(bottleneck_dim=2))
    with pytest.raises(ValueError, match="config"):
        load_adapter(other, tmp_path / "msta.pt")


def test_merge_raises_and_changes_nothing():
    reference, model = adapted("univl")
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(AdapterMergeError, match="disable_adapter"):
        merge_adapter(model)
    with pytest.raises(AdapterMergeError):
        unmerge_adapter(model)
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key
    with pytest.raises(ValueError, match="inject"):
        merge_adapter(reference)


@pytest.mark.parametrize("name", ["violet", "allinone"])
def test_a_copy_routes_tokens_through_its_own_weights(name, tmp_path):
    _, model = adapted(name)
    batch = small_batch()
    expected = outputs(model, batch)
    duplicate = copy.deepcopy(model)
    adapters = [m for m in duplicate.modules() if isinstance(m, MSTA)]
    assert adapters and all(a.router is duplicate.token_layouts for a in adapters)  # the copy reads its own layouts
    assert_same_outputs(outputs(duplicate, batch), expected)
    with torch.no_grad():
        for name_, p in duplicate.named_parameters():
            if name_ in adapter_parameter_names(duplicate):
                p.zero_()
    assert differing_outputs(outputs(duplicate, batch), expected)
    assert_same_outputs(outputs(model, batch), expected)  # the original is untouched
    torch.save(model, tmp_path / "model.pt")  # a whole adapted model pickles
    restored = torch.load(tmp_path / "model.pt", weights_only=False)
    assert_same_outputs(outputs(restored, batch), expected)
