"""The configuration of the synthetic video-language world."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field

from meltr.data.lexicon import SHAPES

SPLITS: tuple[str, ...] = ("pretrain", "train", "meta", "test")
"""The splits of a world, in the order they are generated."""


def _help(text: str, default):
    return field(default=default, metadata={"help": text})


@dataclass(frozen=True)
class WorldConfig:
    """Everything that determines a synthetic world; two equal configs give bit-identical worlds.

    Every clip is generated from its own seed, derived from ``(seed, split, index)``: the first ``n`` clips
    of a split are the same whatever the split's size (only the misaligned pairs depend on the size).
    """

    seed: int = _help("Seed of the whole world; every clip derives its own seed from (seed, split, index).", 0)
    n_pretrain: int = _help("Clips in the pretrain split (video-transcript pairs for pre-training).", 4000)
    n_train: int = _help("Clips in the train split (downstream fine-tuning).", 1000)
    n_meta: int = _help("Clips in the meta split (held-out batches for the meta / hypergradient step).", 200)
    n_test: int = _help("Clips in the test split (evaluation; caption 0 is the query by default).", 1000)
    n_frames: int = _help("Frames per clip (at least 8, so that an action repeated 4 times can be shown).", 8)
    image_size: int = _help("Height and width of a frame in pixels (16 to 128).", 32)
    audio_samples: int = _help("Samples of the audio-like 1-D signal of a clip (at least 8 per frame).", 1024)
    max_objects: int = _help("Most objects in a clip: the subject plus up to max_objects - 1 distractors.", 3)
    two_event_prob: float = _help(
        "Probability that a subject whose first event allows it does a second, different event.", 0.75
    )
    distractor_event_prob: float = _help(
        "Probability that a distractor does an event of its own (of a kind the subject does not do).", 0.4
    )
    n_captions: int = _help("Captions per clip, distinct paraphrases from the grammar (at least 1).", 5)
    qa_per_type: int = _help("Questions per applicable QA type and clip (frame and open always apply).", 2)
    pixel_noise: float = _help("Std of the per-pixel, per-frame Gaussian noise (pixel values in [0, 1]).", 0.06)
    background_texture: float = _help("Amplitude of the drifting background gratings (motion clutter).", 0.06)
    audio_noise: float = _help("Std of the Gaussian noise of the audio signal (event tones have amplitude ~1).", 0.5)
    transcript_drop: float = _help("Probability that the simulated ASR drops a word of the transcript.", 0.1)
    transcript_swap: float = _help("Probability that the simulated ASR swaps a word with the next one.", 0.05)
    transcript_substitute: float = _help("Probability that the simulated ASR replaces a word by another.", 0.05)
    sentiment_noise: float = _help("Std of the annotator noise added to the sentiment score before clipping.", 0.15)
    misaligned_fraction: float = _help(
        "Fraction of the clips of each split in misaligned_splits whose text (captions and transcript) is "
        "replaced by another clip's; exactly round(fraction * N) clips, recorded per clip.",
        0.0,
    )
    misaligned_splits: tuple[str, ...] = _help(
        "Splits that misaligned_fraction applies to (meta and test stay clean by default).",
        ("pretrain", "train"),
    )
    text_len: int = _help("Token length of a caption in a batch, [CLS] and [SEP] included.", 32)
    transcript_len: int = _help("Token length of a transcript in a batch, [CLS] and [SEP] included.", 32)
    question_len: int = _help("Token length of a question in a batch, [CLS] and [SEP] included.", 16)

    def __post_init__(self) -> None:
        def check(name: str, ok: bool, requirement: str) -> None:
            if not ok:
                raise ValueError(f"WorldConfig.{name} {requirement}, got {getattr(self, name)!r}")

        for name in ("seed", "n_pretrain", "n_train", "n_meta", "n_test"):
            value = getattr(self, name)
            check(
                name,
                isinstance(value, int) and not isinstance(value, bool) and value >= 0,
                "must be a non-negative int",
            )
        check(
            "n_frames",
            isinstance(self.n_frames, int) and 8 <= self.n_frames <= 64,
            "must be an int in [8, 64]",
        )
        check(
            "image_size",
            isinstance(self.image_size, int) and 16 <= self.image_size <= 128,
            "must be an int in [16, 128]",
        )
        check(
            "audio_samples",
            isinstance(self.audio_samples, int) and self.audio_samples >= 8 * self.n_frames,
            f"must be an int >= 8 * n_frames = {8 * self.n_frames}",
        )
        check(
            "max_objects",
            isinstance(self.max_objects, int) and 1 <= self.max_objects <= len(SHAPES),
            f"must be an int in [1, {len(SHAPES)}]",
        )
        check("n_captions", isinstance(self.n_captions, int) and self.n_captions >= 1, "must be an int >= 1")
        check("qa_per_type", isinstance(self.qa_per_type, int) and self.qa_per_type >= 1, "must be an int >= 1")
        for name in (
            "two_event_prob",
            "distractor_event_prob",
            "misaligned_fraction",
            "transcript_drop",
            "transcript_swap",
            "transcript_substitute",
        ):
            value = getattr(self, name)
            check(name, isinstance(value, (int, float)) and 0.0 <= value <= 1.0, "must be a number in [0, 1]")
        for name in ("pixel_noise", "background_texture", "audio_noise", "sentiment_noise"):
            value = getattr(self, name)
            check(name, isinstance(value, (int, float)) and value >= 0.0, "must be a non-negative number")
        check(
            "misaligned_splits",
            all(s in SPLITS for s in self.misaligned_splits),
            f"must name splits among {list(SPLITS)}",
        )
        for name, least in (("text_len", 8), ("transcript_len", 8), ("question_len", 4)):
            value = getattr(self, name)
            check(name, isinstance(value, int) and value >= least, f"must be an int >= {least}")

    def split_size(self, split: str) -> int:
        """The number of clips of ``split`` (one of :data:`SPLITS`)."""
        if split not in SPLITS:
            raise KeyError(f"unknown split {split!r}; choose one of: {', '.join(SPLITS)}")
        return getattr(self, f"n_{split}")

    def fingerprint(self) -> str:
        """A short hash of the config, a key for caches of anything derived from the world."""
        payload = json.dumps(dataclasses.asdict(self), sort_keys=True, default=list)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    @staticmethod
    def help() -> dict[str, str]:
        """The help text of every field, by field name."""
        return {f.name: f.metadata["help"] for f in dataclasses.fields(WorldConfig)}
