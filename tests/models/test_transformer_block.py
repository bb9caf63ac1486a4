"""The hand-written attention and transformer block shared by the backbones."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from meltr.models import Transformer, attention
from meltr.models.allinone import roll_tokens
from meltr.models.layers import causal_mask, masked_mean, patchify


def test_attention_matches_torch_reference():
    generator = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 5, 8, generator=generator, dtype=torch.float64) for _ in range(3))
    mask = torch.rand(2, 1, 5, 5, generator=generator) > 0.3
    mask[..., 0] = True
    with sdpa_kernel(SDPBackend.MATH):
        reference = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    torch.testing.assert_close(attention(q, k, v, mask), reference)


def test_a_query_that_sees_nothing_gets_a_finite_output():
    q, k, v = torch.randn(1, 2, 4), torch.randn(1, 3, 4), torch.randn(1, 3, 4)
    out = attention(q, k, v, torch.zeros(1, 2, 3, dtype=torch.bool))
    torch.testing.assert_close(out, v.mean(1, keepdim=True).expand(1, 2, 4))


def test_padded_keys_and_future_tokens_are_invisible():
    torch.manual_seed(0)
    decoder = Transformer(16, 2, 2, 32, cross_attention=True).eval()
    x, memory = torch.randn(2, 6, 16), torch.randn(2, 4, 16)
    key_mask = torch.tensor([[True] * 6, [True] * 4 + [False] * 2])
    memory_mask = torch.tensor([[True] * 4, [True] * 3 + [False]])
    out = decoder(x, causal_mask(key_mask), memory, memory_mask)
    changed_x, changed_memory = x.clone(), memory.clone()
    changed_x[0, 4:] += 5.0  # the future of positions 0..3
    changed_x[1, 4:] += 5.0  # padding of sample 1
    changed_memory[1, 3] += 5.0  # padded memory slot of sample 1
    again = decoder(changed_x, causal_mask(key_mask), changed_memory, memory_mask)
    torch.testing.assert_close(again[:, :4], out[:, :4])


def test_masked_mean_of_an_empty_row_is_zero():
    values = torch.randn(2, 3, 4)
    mask = torch.tensor([[True, False, True], [False, False, False]])
    out = masked_mean(values, mask)
    torch.testing.assert_close(out[0], (values[0, 0] + values[0, 2]) / 2)
    assert out[1].eq(0).all()


def test_patchify_cuts_row_major_channel_first_patches():
    video = torch.arange(2 * 4 * 4, dtype=torch.float32).view(1, 1, 2, 4, 4)
    patches = patchify(video, 2)
    assert patches.shape == (1, 1, 4, 8)
    torch.testing.assert_close(patches[0, 0, 1], torch.tensor([2.0, 3, 6, 7, 18, 19, 22, 23]))


def test_token_rolling_moves_the_first_and_last_patches_across_frames():
    frames, width = 4, 1 + 8
    visual = torch.arange(frames, dtype=torch.float32).view(1, frames, 1, 1).expand(1, frames, width, 1)
    rolled = roll_tokens(visual, 2)[0, :, :, 0]
    frame = torch.arange(frames, dtype=torch.float32)
    torch.testing.assert_close(rolled[:, 0], frame)  # the frame token stays
    torch.testing.assert_close(rolled[:, 1], frame.roll(1))  # from the previous frame
    torch.testing.assert_close(rolled[:, 3], frame)
    torch.testing.assert_close(rolled[:, -1], frame.roll(-1))  # from the next frame
    assert torch.equal(roll_tokens(visual, 0), visual)
