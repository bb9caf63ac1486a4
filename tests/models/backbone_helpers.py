"""Helpers of the backbone tests: random batches in the layout of the synthetic world (``meltr.data``), tiny
models."""

from __future__ import annotations

import torch

from meltr.models import BACKBONES, CLS_ID, NUM_SPECIAL_TOKENS, PAD_ID, SEP_ID, build_backbone

VOCAB_SIZE = 100


def random_tokens(batch_size: int, length: int, vocab_size: int, generator: torch.Generator) -> tuple:
    """Token ids ``[B, L]`` ([CLS] first, [SEP] last, [PAD] after) of random lengths, and their mask."""
    lengths = torch.randint(3, length + 1, (batch_size,), generator=generator)
    positions = torch.arange(length)
    words = torch.randint(NUM_SPECIAL_TOKENS, vocab_size, (batch_size, length), generator=generator)
    tokens = torch.where(positions < lengths[:, None] - 1, words, PAD_ID)
    tokens = torch.where(positions == lengths[:, None] - 1, SEP_ID, tokens)
    tokens[:, 0] = CLS_ID
    return tokens, positions < lengths[:, None]


def random_video(batch_size: int, frames: int, image_size: int, generator: torch.Generator) -> torch.Tensor:
    """Clips ``[B, F, 3, H, W]`` in [0, 1] that differ the way scenes do: a colour per clip, a coarse pattern
    per frame and a little pixel noise (plain noise clips look alike once pooled, which no contrastive loss
    can fix)."""
    colour = torch.rand(batch_size, 1, 3, 1, 1, generator=generator)
    blocks = torch.rand(batch_size, frames, 3, 4, 4, generator=generator)
    pattern = blocks.repeat_interleave(image_size // 4, -2).repeat_interleave(image_size // 4, -1)
    noise = torch.rand(batch_size, frames, 3, image_size, image_size, generator=generator)
    return 0.5 * colour + 0.4 * pattern + 0.1 * noise


def random_batch(
    batch_size: int = 4,
    frames: int = 8,
    length: int = 12,
    image_size: int = 32,
    vocab_size: int = VOCAB_SIZE,
    seed: int = 0,
) -> dict[str, torch.Tensor]:
    """A batch with every key and shape of the world's batches (distinct clips)."""
    generator = torch.Generator().manual_seed(seed)
    text, text_mask = random_tokens(batch_size, length, vocab_size, generator)
    transcript, transcript_mask = random_tokens(batch_size, length + 4, vocab_size, generator)
    question, question_mask = random_tokens(batch_size, 8, vocab_size, generator)
    return {
        "video": random_video(batch_size, frames, image_size, generator),
        "text": text,
        "text_mask": text_mask,
        "transcript": transcript,
        "transcript_mask": transcript_mask,
        "question": question,
        "question_mask": question_mask,
        "audio": torch.randn(batch_size, 128, generator=generator),
        "clip_id": torch.arange(batch_size) + 10,
        "label": torch.randint(0, 5, (batch_size,), generator=generator),
        "answer": torch.randint(0, 20, (batch_size,), generator=generator),
        "qa_type": torch.randint(0, 3, (batch_size,), generator=generator),
        "sentiment": torch.rand(batch_size, generator=generator) * 6 - 3,
        "misaligned": torch.zeros(batch_size, dtype=torch.bool),
    }


def tiny(name: str, **overrides) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_backbone(name, "tiny", vocab_size=VOCAB_SIZE, **overrides)


def all_tasks() -> list[tuple[str, str]]:
    """Every (backbone, task) pair of the registry."""
    return [(name, task) for name in BACKBONES.names() for task in tiny(name).tasks]
