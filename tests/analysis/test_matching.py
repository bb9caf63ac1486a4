"""matching_accuracy against a by-hand count on a model whose logits are known."""

import pytest
import torch
from torch import nn

from meltr.analysis.matching import matching_accuracy


class DotMatcher(nn.Module):
    """Logit = <text, video> - bias: each clip's text is its own video plus noise, so the rates are countable."""

    def __init__(self, bias: float) -> None:
        super().__init__()
        self.bias = bias

    def match_score(self, batch):
        return (batch["text"] * batch["video"]).sum(-1) - self.bias


def _batches(seed: int = 0, sizes=(5, 7, 4)):
    g = torch.Generator().manual_seed(seed)
    out = []
    for n in sizes:
        video = torch.randn(n, 3, generator=g)
        out.append({"video": video, "text": video + 0.8 * torch.randn(n, 3, generator=g)})
    return out


@pytest.mark.parametrize("bias", [-1.0, 0.0, 1.5])
def test_rates_equal_a_by_hand_count(bias):
    batches = _batches()
    model = DotMatcher(bias)
    hits = rejects = wins = total = 0
    for b in batches:
        n = len(b["video"])
        for i in range(n):
            right = float(b["text"][i] @ b["video"][i]) - bias
            wrong = float(b["text"][i] @ b["video"][(i - 1) % n]) - bias  # roll(1): clip i gets clip i-1's video
            hits += right > 0
            rejects += wrong < 0
            wins += right > wrong
            total += 1
    result = matching_accuracy(model, batches)
    assert result.clips == total == 16
    assert result.matched == pytest.approx(hits / total)
    assert result.mismatched == pytest.approx(rejects / total)
    assert result.accuracy == pytest.approx(0.5 * (hits + rejects) / total)
    assert result.pairwise == pytest.approx(wins / total)


def test_a_head_that_ignores_the_video_is_at_chance():
    class TextOnly(nn.Module):
        def match_score(self, batch):
            return batch["text"].sum(-1)

    result = matching_accuracy(TextOnly(), _batches(seed=1))
    assert result.accuracy == pytest.approx(0.5)
    assert result.pairwise == 0.0


def test_one_clip_batches_and_no_batches_are_refused():
    with pytest.raises(ValueError, match="at least two clips"):
        matching_accuracy(DotMatcher(0.0), _batches(sizes=(3, 1)))
    with pytest.raises(ValueError, match="no batch"):
        matching_accuracy(DotMatcher(0.0), [])
