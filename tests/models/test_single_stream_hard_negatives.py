"""The single-stream backbones' contrastive negative mining (ALBEF): Violet's optional VTC head and both backbones'
``hard_negatives``, VTM's negative video drawn by VTC's similarity instead of uniformly."""

from __future__ import annotations

import pytest
import torch
from backbone_helpers import random_batch, tiny

from meltr.models.losses import binary_matching_loss, pair_matching_loss
from meltr.models.masking import mask_tokens, sample_negatives, sample_positions


def _most_similar_other_clip(model, batch, size: int) -> torch.Tensor:
    """The brute-force reference at a vanishing temperature: each text's most similar other video, with a
    margin no Gumbel noise can overturn."""
    similarity = model.encode_text(batch) @ model.encode_video(batch).t()
    others = similarity.masked_fill(torch.eye(size, dtype=torch.bool), -torch.inf)
    top2 = others.topk(2, dim=-1).values
    assert ((top2[:, 0] - top2[:, 1]) / model.config.temperature > 50).all()
    partner = others.argmax(-1)
    assert not torch.equal(partner, torch.arange(size).roll(1))  # not a trivial pattern
    return partner


def test_violet_vtc_is_the_symmetric_infonce_of_its_text_and_video_embeddings():
    model, batch = tiny("violet", contrastive=True), random_batch(batch_size=5)
    model.eval()
    with torch.no_grad():
        logits = model.encode_text(batch) @ model.encode_video(batch).t() / model.config.temperature
        losses = model(batch, torch.Generator().manual_seed(0))
    expected = torch.stack(
        [
            (-(logits[i, i] - torch.logsumexp(logits[i], 0)) - (logits[i, i] - torch.logsumexp(logits[:, i], 0))) / 2
            for i in range(5)
        ]
    )
    assert model.tasks == ("vtm", "mlm", "mvm", "vtc") and list(losses) == list(model.tasks)
    torch.testing.assert_close(losses["vtc"], expected, atol=1e-5, rtol=1e-5)


def test_violet_without_the_contrastive_head_is_as_before():
    model = tiny("violet")
    assert model.tasks == ("vtm", "mlm", "mvm")
    assert not any(name.startswith(("text_projection", "video_projection")) for name, _ in model.named_parameters())
    with torch.no_grad():
        assert set(model(random_batch(), torch.Generator().manual_seed(0))) == {"vtm", "mlm", "mvm"}


def test_violet_hard_negative_is_the_most_similar_other_clip_at_a_tiny_temperature():
    model, batch = tiny("violet", contrastive=True, hard_negatives=True, temperature=1e-6), random_batch(6)
    model.eval()
    with torch.no_grad():
        partner = _most_similar_other_clip(model, batch, 6)
        positive = model.match_score(batch)
        negative = model.match_score({**batch, "video": batch["video"][partner]})
        expected = pair_matching_loss(positive, negative, torch.ones(6, dtype=torch.bool))
        losses = model(batch, torch.Generator().manual_seed(0))
    torch.testing.assert_close(losses["vtm"], expected, atol=1e-5, rtol=1e-5)


def test_violet_without_hard_negatives_draws_the_uniform_partner_after_the_masks():
    model, batch = tiny("violet", contrastive=True), random_batch(batch_size=6)
    model.eval()
    c, generator = model.config, torch.Generator().manual_seed(0)
    mask_tokens(batch["text"], c.vocab_size, c.text_mask_prob, batch["text_mask"].bool(), generator)
    patches = batch["video"].shape[1] * model.patch_embedding.num_patches
    sample_positions(torch.ones(6, patches, dtype=torch.bool), c.patch_mask_prob, generator)
    partner, valid = sample_negatives(6, batch["clip_id"], generator)
    with torch.no_grad():
        negative = model.match_score({**batch, "video": batch["video"][partner]})
        expected = pair_matching_loss(model.match_score(batch), negative, valid)
        losses = model(batch, torch.Generator().manual_seed(0))
    torch.testing.assert_close(losses["vtm"], expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(("name", "options"), [("violet", {"contrastive": True}), ("allinone", {})])
def test_only_the_matching_loss_changes(name, options):
    batch = random_batch(batch_size=6)
    uniform, hard = tiny(name, **options), tiny(name, hard_negatives=True, **options)
    with torch.no_grad():
        a, b = uniform(batch, torch.Generator().manual_seed(3)), hard(batch, torch.Generator().manual_seed(3))
    for task in uniform.tasks:
        if task != "vtm":
            torch.testing.assert_close(a[task], b[task], atol=0, rtol=0)
    assert not torch.equal(a["vtm"], b["vtm"])


def test_allinone_hard_negative_is_the_most_similar_other_clip_at_a_tiny_temperature():
    model, batch = tiny("allinone", hard_negatives=True, temperature=1e-6), random_batch(batch_size=6)
    model.eval()
    c, generator = model.config, torch.Generator().manual_seed(0)
    # The forward's draws: the text mask, the negatives' uniforms, then which samples are swapped.
    mask_tokens(batch["text"], c.vocab_size, c.text_mask_prob, batch["text_mask"].bool(), generator)
    torch.rand(6, 6, generator=generator)
    swap = torch.rand(6, generator=generator) < 0.5
    assert swap.any() and not swap.all()
    with torch.no_grad():
        partner = _most_similar_other_clip(model, batch, 6)
        shown = torch.where(swap, partner, torch.arange(6))
        expected = binary_matching_loss(model.match_score({**batch, "video": batch["video"][shown]}), ~swap)
        losses = model(batch, torch.Generator().manual_seed(0))
    torch.testing.assert_close(losses["vtm"], expected, atol=1e-5, rtol=1e-5)


def test_violet_hard_negatives_need_the_contrastive_head():
    with pytest.raises(ValueError, match="hard_negatives draws negatives by VTC's similarity; set contrastive=true"):
        tiny("violet", hard_negatives=True)


@pytest.mark.parametrize(
    ("name", "field"), [("violet", "contrastive"), ("violet", "hard_negatives"), ("allinone", "hard_negatives")]
)
def test_a_flag_that_is_not_true_or_false_is_refused_naming_the_field(name, field):
    config = {"violet": "VioletConfig", "allinone": "AllInOneConfig"}[name]
    with pytest.raises(ValueError, match=rf"{config}\.{field} must be true or false, got 'maybe'"):
        tiny(name, **{field: "maybe"})
