"""NCE and MIL-NCE against brute-force loops in float64."""

import math

import pytest
import torch
import torch.nn.functional as F

from meltr.models.losses import info_nce, mil_nce


def embeddings(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def loop_info_nce(video, audio, tau, symmetric):
    batch = len(video)
    out = []
    for i in range(batch):
        forward = math.exp(float(video[i] @ audio[i]) / tau) / sum(
            math.exp(float(video[i] @ audio[j]) / tau) for j in range(batch)
        )
        loss = -math.log(forward)
        if symmetric:
            backward = math.exp(float(video[i] @ audio[i]) / tau) / sum(
                math.exp(float(video[j] @ audio[i]) / tau) for j in range(batch)
            )
            loss = (loss - math.log(backward)) / 2
        out.append(loss)
    return torch.tensor(out, dtype=torch.float64)


def loop_mil_nce(video, text, tau, symmetric):
    batch, bag = text.shape[:2]
    out = []
    for i in range(batch):
        positive = sum(math.exp(float(video[i] @ text[i, k]) / tau) for k in range(bag))
        negative = 0.0
        for j in range(batch):
            if j == i:
                continue
            for k in range(bag):
                negative += math.exp(float(video[i] @ text[j, k]) / tau)  # clip i's video, clip j's captions
                if symmetric:
                    negative += math.exp(float(video[j] @ text[i, k]) / tau)  # clip j's video, clip i's captions
        out.append(-math.log(positive / (positive + negative)))
    return torch.tensor(out, dtype=torch.float64)


@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("normalize", [True, False])
def test_info_nce_matches_a_loop(symmetric, normalize):
    video, audio = embeddings(5, 3, seed=1), embeddings(5, 3, seed=2)
    per_sample = info_nce(video, audio, temperature=0.3, symmetric=symmetric, normalize=normalize, reduction="none")
    if normalize:
        video, audio = F.normalize(video, dim=-1), F.normalize(audio, dim=-1)
    expected = loop_info_nce(video, audio, 0.3, symmetric)
    assert per_sample.shape == (5,)
    torch.testing.assert_close(per_sample, expected, rtol=1e-12, atol=1e-12)
    mean = info_nce(*[embeddings(5, 3, seed=s) for s in (1, 2)], 0.3, symmetric, normalize)
    torch.testing.assert_close(mean, expected.mean(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("normalize", [True, False])
def test_mil_nce_matches_a_loop(symmetric, normalize):
    video, text = embeddings(4, 3, seed=3), embeddings(4, 3, 3, seed=4)
    per_sample = mil_nce(video, text, temperature=0.7, symmetric=symmetric, normalize=normalize, reduction="none")
    if normalize:
        video, text = F.normalize(video, dim=-1), F.normalize(text, dim=-1)
    assert per_sample.shape == (4,)
    torch.testing.assert_close(per_sample, loop_mil_nce(video, text, 0.7, symmetric), rtol=1e-12, atol=1e-12)


def test_mil_nce_with_one_caption_is_nce():
    video, text = embeddings(6, 4, seed=5), embeddings(6, 4, seed=6)
    for symmetric in (True, False):
        # Symmetric MIL-NCE pools both directions into one denominator; one-directional it is exactly NCE.
        nce = info_nce(video, text, 0.2, symmetric=False, reduction="none")
        single = mil_nce(video, text, 0.2, symmetric=symmetric, reduction="none")
        if symmetric:
            assert (single > nce).all()
        else:
            torch.testing.assert_close(single, nce, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(mil_nce(video, text, 0.2), mil_nce(video, text.unsqueeze(1), 0.2))


def test_losses_are_finite_with_finite_gradients_at_a_low_temperature():
    video = embeddings(8, 16, seed=7).requires_grad_(True)
    text = embeddings(8, 4, 16, seed=8).requires_grad_(True)
    loss = mil_nce(video, text, temperature=0.01) + info_nce(video, text[:, 0], temperature=0.01)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(video.grad).all() and torch.isfinite(text.grad).all()


def test_bad_arguments_say_what_is_expected():
    with pytest.raises(ValueError, match="positive"):
        info_nce(embeddings(2, 3), embeddings(2, 3), temperature=0.0)
    with pytest.raises(ValueError, match="reduction"):
        mil_nce(embeddings(2, 3), embeddings(2, 1, 3), reduction="sum")
    with pytest.raises(ValueError, match=r"\[B, K, D\]"):
        mil_nce(embeddings(2, 3), embeddings(3, 1, 3))
