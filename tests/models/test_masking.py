"""Statistics and invariants of the masking used by the masked pretext tasks."""

from __future__ import annotations

import pytest
import torch
from backbone_helpers import random_tokens

from meltr.models import (
    CLS_ID,
    MASK_ID,
    NUM_SPECIAL_TOKENS,
    PAD_ID,
    SEP_ID,
    mask_frames,
    mask_tokens,
    sample_negatives,
    sample_positions,
)

VOCAB = 1000


@pytest.fixture(scope="module")
def masked_corpus():
    generator = torch.Generator().manual_seed(0)
    tokens, token_mask = random_tokens(4000, 64, VOCAB, generator)
    masked, selected = mask_tokens(tokens, VOCAB, 0.15, token_mask, torch.Generator().manual_seed(1))
    return tokens, token_mask, masked, selected


def test_fifteen_percent_of_eligible_tokens_are_selected(masked_corpus):
    tokens, token_mask, _, selected = masked_corpus
    eligible = token_mask & (tokens != CLS_ID) & (tokens != SEP_ID)
    # Rows have 1 to 62 eligible tokens; forcing one selection in rows that drew none adds a little.
    expected = (0.15 * eligible.sum(1) + (0.85 ** eligible.sum(1).double())).sum() / eligible.sum()
    assert selected.sum() / eligible.sum() == pytest.approx(float(expected), abs=0.004)


def test_selected_tokens_are_80_percent_mask_10_random_10_kept(masked_corpus):
    tokens, _, masked, selected = masked_corpus
    total = selected.sum().item()
    to_mask = (selected & (masked == MASK_ID)).sum().item() / total
    kept = (selected & (masked == tokens)).sum().item() / total
    changed = (selected & (masked != MASK_ID) & (masked != tokens)).sum().item() / total
    assert to_mask == pytest.approx(0.8, abs=0.01)
    # A random replacement equals the original with probability 1 / (VOCAB - 5).
    assert kept == pytest.approx(0.1 + 0.1 / (VOCAB - NUM_SPECIAL_TOKENS), abs=0.01)
    assert changed == pytest.approx(0.1, abs=0.01)
    replaced = masked[selected & (masked != MASK_ID) & (masked != tokens)]
    assert replaced.min() >= NUM_SPECIAL_TOKENS and replaced.max() < VOCAB


def test_special_and_padding_tokens_are_never_masked(masked_corpus):
    tokens, token_mask, masked, selected = masked_corpus
    special = (tokens == PAD_ID) | (tokens == CLS_ID) | (tokens == SEP_ID) | ~token_mask
    assert not selected[special].any()
    assert torch.equal(masked[special], tokens[special])
    assert torch.equal(masked[~selected], tokens[~selected])


def test_every_row_with_an_eligible_token_gets_one_and_empty_rows_none():
    tokens = torch.tensor([[CLS_ID, 7, SEP_ID, PAD_ID], [CLS_ID, SEP_ID, PAD_ID, PAD_ID]]).repeat(500, 1)
    masked, selected = mask_tokens(tokens, VOCAB, 0.15, tokens != PAD_ID)
    assert selected[0::2].sum(1).eq(1).all()
    assert not selected[1::2].any()
    assert torch.equal(masked[1::2], tokens[1::2])


@pytest.mark.parametrize("frames, at_least_one", [(8, False), (8, True), (64, True)])
def test_fifteen_percent_of_frames_are_masked(frames, at_least_one):
    video = torch.rand(4000, frames, 1, 2, 2) + 0.5
    masked, selected = mask_frames(video, 0.15, torch.Generator().manual_seed(0), at_least_one)
    expected = 0.15 + (0.85**frames / frames if at_least_one else 0.0)
    assert selected.double().mean().item() == pytest.approx(expected, abs=0.004)
    assert masked[selected].eq(0).all()
    assert torch.equal(masked[~selected], video[~selected])
    if at_least_one:
        assert selected.any(1).all()


def test_masks_replay_under_a_seed_or_a_generator():
    tokens, token_mask = random_tokens(8, 16, VOCAB, torch.Generator().manual_seed(0))
    torch.manual_seed(3)
    first = mask_tokens(tokens, VOCAB, 0.15, token_mask)
    torch.manual_seed(3)
    again = mask_tokens(tokens, VOCAB, 0.15, token_mask)
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    from_generator = mask_tokens(tokens, VOCAB, 0.15, token_mask, torch.Generator().manual_seed(3))
    assert all(torch.equal(a, b) for a, b in zip(from_generator, first, strict=True))


def test_sample_positions_with_zero_probability_selects_nothing():
    assert not sample_positions(torch.ones(10, 5, dtype=torch.bool), 0.0).any()


def test_negatives_are_other_clips():
    clip_id = torch.tensor([0, 0, 1, 2, 2, 2])
    for seed in range(20):
        index, valid = sample_negatives(6, clip_id, torch.Generator().manual_seed(seed))
        assert valid.all()
        assert (clip_id[index] != clip_id).all()


def test_no_negative_when_the_batch_shows_one_clip():
    _, valid = sample_negatives(3, torch.tensor([4, 4, 4]))
    assert not valid.any()
    _, valid = sample_negatives(1)
    assert not valid.any()


def test_hard_negatives_follow_the_softmax_of_the_logits_over_the_other_clips():
    clip_id = torch.tensor([0, 0, 1, 2, 3])
    logits = torch.tensor(
        [
            [9.0, 9.0, 1.0, 0.0, -1.0],  # sample 0: its own clip (0, 1) has the highest logits, never picked
            [0.0, 0.0, 0.5, 0.5, 0.5],
            [2.0, 0.0, 0.0, 1.0, -2.0],
            [0.0, 0.0, 0.0, 0.0, 0.0],
            [1.0, 1.0, 3.0, 0.0, 0.0],
        ]
    )
    invalid = clip_id[:, None] == clip_id[None, :]
    expected = torch.softmax(logits.masked_fill(invalid, -torch.inf), -1)  # the brute-force reference
    draws, generator = 20000, torch.Generator().manual_seed(0)
    counts = torch.zeros(5, 5)
    for _ in range(draws):
        index, valid = sample_negatives(5, clip_id, generator, logits=logits)
        assert valid.all()
        counts[torch.arange(5), index] += 1
    frequency = counts / draws
    assert (frequency[invalid] == 0).all()
    # Four standard errors of a frequency from 20000 draws (at most 0.0035 each).
    tolerance = 4 * (expected * (1 - expected) / draws).sqrt() + 1e-4
    assert ((frequency - expected).abs() <= tolerance).all(), (frequency - expected).abs().max()


def test_hard_negatives_with_flat_logits_are_the_uniform_ones_of_the_same_draws():
    clip_id = torch.tensor([0, 1, 1, 2, 3, 4])
    for seed in range(10):
        uniform, _ = sample_negatives(6, clip_id, torch.Generator().manual_seed(seed))
        flat, _ = sample_negatives(6, clip_id, torch.Generator().manual_seed(seed), logits=torch.full((6, 6), 3.0))
        assert torch.equal(uniform, flat)


def test_hard_negatives_refuse_logits_of_the_wrong_shape():
    with pytest.raises(ValueError, match=r"logits must be \[3, 3\]"):
        sample_negatives(3, logits=torch.zeros(3, 4))
