"""The VATT-style tri-modal backbone: shapes, the two alignment losses against a reference, gradient paths, DropToken
and determinism (the registry battery of test_backbone_*.py covers the rest)."""

from __future__ import annotations

import pytest
import torch
from backbone_helpers import VOCAB_SIZE, random_batch, random_tokens, tiny

from meltr.models import Vatt, VattConfig, build_backbone, config_help
from meltr.models.losses import info_nce, mil_nce
from meltr.models.vatt import drop_tokens


def bag_batch(batch_size: int = 4, bag: int = 3, seed: int = 0) -> dict[str, torch.Tensor]:
    batch = random_batch(batch_size=batch_size, seed=seed)
    tokens, mask = random_tokens(batch_size * bag, 10, VOCAB_SIZE, torch.Generator().manual_seed(seed + 1))
    batch["text_bag"], batch["text_bag_mask"] = tokens.view(batch_size, bag, -1), mask.view(batch_size, bag, -1)
    return batch


def test_config_fields_have_help_and_presets_differ():
    helps = config_help(VattConfig)
    assert all(len(text) > 10 for text in helps.values())
    assert build_backbone("vatt", "tiny", vocab_size=VOCAB_SIZE).config.dim < VattConfig().dim


def test_losses_and_embeddings_have_the_contract_shapes():
    model, batch = tiny("vatt"), bag_batch()
    losses = model(batch)
    assert list(losses) == ["cma_va", "cma_vt"] == list(model.tasks)
    for loss in losses.values():
        assert loss.shape == (4,) and torch.isfinite(loss).all() and (loss >= 0).all()
    model.eval()
    with torch.no_grad():
        dim = model.config.dim
        for embedding in (model.encode_video(batch), model.encode_video(batch, "va"), model.encode_audio(batch)):
            assert embedding.shape == (4, dim)
            torch.testing.assert_close(embedding.norm(dim=-1), torch.ones(4))
        assert model.encode_video(batch, "pooled").shape == (4, dim)
        assert model.encode_audio(batch, "pooled").shape == (4, dim)
        assert model.encode_text(batch, space="pooled").shape == (4, dim)


def test_eval_losses_equal_nce_and_mil_nce_of_the_exposed_embeddings():
    model, batch = tiny("vatt").eval(), bag_batch()
    temperature = model.config.temperature
    with torch.no_grad():
        losses = model(batch)
        video_va, video_vt = model.encode_video(batch, "va"), model.encode_video(batch)
        audio = model.encode_audio(batch)
        flat = {"text": batch["text_bag"].flatten(0, 1), "text_mask": batch["text_bag_mask"].flatten(0, 1)}
        bag = model.encode_text(flat).view(4, 3, -1)
    torch.testing.assert_close(losses["cma_va"], info_nce(video_va, audio, temperature, reduction="none"))
    torch.testing.assert_close(losses["cma_vt"], mil_nce(video_vt, bag, temperature, reduction="none"))


def test_without_a_bag_the_caption_is_a_bag_of_one():
    model = tiny("vatt").eval()
    batch = random_batch()
    with torch.no_grad():
        plain = model(batch)["cma_vt"]
        bagged = model(dict(batch, text_bag=batch["text"][:, None], text_bag_mask=batch["text_mask"][:, None]))
        three = model(bag_batch())["cma_vt"]
    torch.testing.assert_close(plain, bagged["cma_vt"])
    assert not torch.allclose(plain, three)


def test_both_losses_reach_the_shared_transformer_and_only_their_own_towers():
    model, batch = tiny("vatt"), bag_batch()
    torch.manual_seed(0)
    losses = model(batch)
    shared = [p for n, p in model.named_parameters() if n.startswith("encoder.")]
    names = [n for n, _ in model.named_parameters()]
    paths = {
        "cma_va": ("audio_projection.weight", ("text_embedding.", "text_to_vt.", "va_to_vt.")),
        "cma_vt": ("text_embedding.word.weight", ("audio_",)),
    }
    for task, (own, foreign) in paths.items():
        grads = torch.autograd.grad(losses[task].mean(), list(model.parameters()), retain_graph=True, allow_unused=True)
        by_name = dict(zip(names, grads, strict=True))
        reached = [g for g, p in zip(grads, model.parameters(), strict=True) if any(p is s for s in shared)]
        assert len(reached) == len(shared) > 0
        assert all(g is not None and g.abs().sum() > 0 for g in reached), task
        assert by_name[own] is not None and by_name[own].abs().sum() > 0, task
        assert all(g is None for n, g in by_name.items() if n.startswith(foreign)), task


def test_drop_token_keeps_a_share_in_order_and_only_in_training():
    tokens = torch.arange(2 * 10 * 3, dtype=torch.float32).view(2, 10, 3)
    kept = drop_tokens(tokens, 0.5, torch.Generator().manual_seed(0))
    assert kept.shape == (2, 5, 3)
    first = kept[..., 0] / 3  # the token index
    assert torch.equal(first, first.sort(dim=1).values) and torch.equal(first, first.round())
    assert drop_tokens(tokens, 0.0) is tokens
    assert drop_tokens(tokens[:, :1], 0.9).shape == (2, 1, 3)  # at least one token stays
    model, batch = tiny("vatt", drop_token=0.5), bag_batch()
    trained = [model(batch, generator=torch.Generator().manual_seed(s))["cma_va"] for s in (1, 1, 2)]
    assert torch.equal(trained[0], trained[1]) and not torch.equal(trained[0], trained[2])
    model.eval()
    evaluated = [model(batch, generator=torch.Generator().manual_seed(s))["cma_va"] for s in (1, 2)]
    assert torch.equal(evaluated[0], evaluated[1])


def test_same_seed_same_model_and_losses():
    batch = bag_batch()
    first, second = tiny("vatt"), tiny("vatt")
    pairs = zip(first.state_dict().values(), second.state_dict().values(), strict=True)
    assert all(torch.equal(a, b) for a, b in pairs)
    losses = [m(batch, generator=torch.Generator().manual_seed(3)) for m in (first, second)]
    assert all(torch.equal(losses[0][t], losses[1][t]) for t in first.tasks)


def test_padding_captions_of_a_bag_do_not_matter():
    model, batch = tiny("vatt").eval(), bag_batch()
    noisy = dict(batch, text_bag=torch.where(batch["text_bag_mask"], batch["text_bag"], 7))
    with torch.no_grad():
        torch.testing.assert_close(model(noisy)["cma_vt"], model(batch)["cma_vt"])


@pytest.mark.parametrize("audio_input", ["spectrum", "waveform"])
def test_both_audio_inputs_read_the_waveform(audio_input):
    model = tiny("vatt", audio_input=audio_input, audio_patch=32)
    assert model.audio_projection.in_features == (17 if audio_input == "spectrum" else 32)
    assert torch.isfinite(model(random_batch())["cma_va"]).all()


def test_bad_configs_and_inputs_name_the_field():
    for field, value in (("drop_token", 1.0), ("audio_input", "mel"), ("temperature", 0.0), ("tubelet_frames", 0)):
        with pytest.raises(ValueError, match=field):
            build_backbone("vatt", "tiny", vocab_size=VOCAB_SIZE, **{field: value})
    model, batch = tiny("vatt"), random_batch()
    with pytest.raises(ValueError, match="tubelet_frames"):
        tiny("vatt", tubelet_frames=3)(batch)
    with pytest.raises(ValueError, match="audio_patch"):
        model(dict(batch, audio=batch["audio"][:, :100]))
    with pytest.raises(KeyError, match="text_bag_mask"):
        model(dict(batch, text_bag=batch["text"][:, None]))
    with pytest.raises(ValueError, match="text_bag"):
        model(dict(batch, text_bag=batch["text"], text_bag_mask=batch["text_mask"]))
    with pytest.raises(KeyError, match="audio"):
        model({k: v for k, v in batch.items() if k != "audio"})
    with pytest.raises(ValueError, match="embedding space"):
        model.encode_audio(batch, space="vt")
    assert isinstance(model, Vatt)
