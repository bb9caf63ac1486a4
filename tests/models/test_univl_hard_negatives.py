"""UniVL's ``hard_negatives``: Joint's negative video is drawn by Align's similarity (ALBEF) instead of uniformly."""

from __future__ import annotations

import pytest
import torch
from backbone_helpers import random_batch, tiny

from meltr.models.losses import pair_matching_loss
from meltr.models.masking import mask_frames, mask_tokens, sample_negatives
from meltr.models.univl import UNIVL_TASKS


def test_at_a_tiny_temperature_the_negative_is_the_most_similar_other_clip():
    # At temperature 1e-6 the softmax over the other clips is one-hot on Align's most similar video: the brute
    # force reference scores every pair with the cross encoder and takes that one.
    model, batch = tiny("univl", hard_negatives=True, temperature=1e-6), random_batch(batch_size=6)
    model.eval()
    with torch.no_grad():
        similarity = model.encode_text(batch) @ model.encode_video(batch).t()
        others = similarity.masked_fill(torch.eye(6, dtype=torch.bool), -torch.inf)
        top2 = others.topk(2, dim=-1).values
        assert ((top2[:, 0] - top2[:, 1]) / 1e-6 > 50).all()  # Gumbel noise cannot reorder them
        partner = others.argmax(-1)
        assert not torch.equal(partner, torch.arange(6).roll(1))  # not a trivial pattern
        positive = model.match_score(batch)
        negative = model.match_score({**batch, "video": batch["video"][partner]})
        expected = pair_matching_loss(positive, negative, torch.ones(6, dtype=torch.bool))
        losses = model(batch, torch.Generator().manual_seed(0))
    torch.testing.assert_close(losses["joint"], expected, atol=1e-5, rtol=1e-5)


def test_only_the_matching_losses_change():
    batch = random_batch(batch_size=6)
    uniform, hard = tiny("univl"), tiny("univl", hard_negatives=True)
    with torch.no_grad():
        a, b = uniform(batch, torch.Generator().manual_seed(3)), hard(batch, torch.Generator().manual_seed(3))
    for task in UNIVL_TASKS:
        if task in ("joint", "m_joint"):
            continue
        torch.testing.assert_close(a[task], b[task], atol=0, rtol=0)
    assert not torch.equal(a["joint"], b["joint"])
    assert not torch.equal(a["m_joint"], b["m_joint"])


def test_without_them_the_negative_is_the_uniform_draw_after_the_masks():
    # Replays the generator as the forward does (text mask, frame mask, then the negatives) and scores the drawn
    # pairs with the cross encoder: the uniform partners of before the option existed.
    model, batch = tiny("univl"), random_batch(batch_size=6)
    model.eval()
    c, generator = model.config, torch.Generator().manual_seed(0)
    mask_tokens(batch["text"], c.vocab_size, c.text_mask_prob, batch["text_mask"].bool(), generator)
    mask_frames(batch["video"], c.frame_mask_prob, generator)
    partner, valid = sample_negatives(6, batch.get("clip_id"), generator)
    with torch.no_grad():
        negative = model.match_score({**batch, "video": batch["video"][partner]})
        expected = pair_matching_loss(model.match_score(batch), negative, valid)
        losses = model(batch, torch.Generator().manual_seed(0))
    torch.testing.assert_close(losses["joint"], expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("field", ["hard_negatives", "caption_from_transcript"])
def test_a_flag_that_is_not_true_or_false_is_refused_naming_the_field(field):
    with pytest.raises(ValueError, match=rf"UniVLConfig\.{field} must be true or false, got 'maybe'"):
        tiny("univl", **{field: "maybe"})
