"""The configuration of the synthetic video-language world."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field

from meltr.data.lexicon import SHAPES

SPLITS: tuple[str, ...] = ("pretrain", "train", "meta", "test")
"""The splits of a world, in the order they are generated."""

DOWNSTREAM_SPLITS: tuple[str, ...] = ("train", "meta", "test")
"""The splits a :class:`DownstreamShift` applies to (pre-training keeps the world's own distribution)."""

CHANNEL_ORDERS: tuple[str, ...] = ("rgb", "rbg", "grb", "gbr", "brg", "bgr")


def _help(text: str, default):
    return field(default=default, metadata={"help": text})


@dataclass(frozen=True)
class DownstreamShift:
    """How the downstream splits (train, meta, test) differ from the pre-training distribution.

    A pre-trained checkpoint has seen only the pretrain split's distribution. Fine-tuning can only gain where the
    downstream data differs from it, as real downstream data does (another camera, another decoder, other
    captions). The default is no shift: the downstream splits are drawn from the pre-training distribution.
    """

    channel_order: str = _help(
        "Order in which the RGB channels of downstream frames are stored, e.g. 'bgr' (a decoder that writes BGR, "
        "a camera with another colour response). The scene is unchanged, so every caption stays true and the "
        "shift is learnable; a model pre-trained on 'rgb' frames misreads the colours.",
        "rgb",
    )
    pixel_noise: float | None = _help("Pixel noise of downstream frames (None: the world's pixel_noise).", None)
    background_texture: float | None = _help(
        "Background texture of downstream frames (None: the world's background_texture).", None
    )

    def __post_init__(self) -> None:
        if self.channel_order not in CHANNEL_ORDERS:
            raise ValueError(
                f"WorldConfig.downstream.channel_order must be one of {list(CHANNEL_ORDERS)}, "
                f"got {self.channel_order!r}"
            )
        for name in ("pixel_noise", "background_texture"):
            value = getattr(self, name)
            if value is not None and not (
                isinstance(value, (int, float)) and not isinstance(value, bool) and 0.0 <= value < float("inf")
            ):
                raise ValueError(f"WorldConfig.downstream.{name} must be null or a finite number >= 0, got {value!r}")

    @property
    def is_identity(self) -> bool:
        """No shift at all: the downstream splits follow the pre-training distribution."""
        return self == DownstreamShift()

    @property
    def channel_index(self) -> list[int]:
        """Indices that reorder stored RGB channels into this order."""
        return ["rgb".index(c) for c in self.channel_order]


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
    downstream: DownstreamShift = field(
        default_factory=DownstreamShift,
        metadata={
            "help": "How the train / meta / test splits differ from pre-training (a DownstreamShift, or a "
            "mapping of its fields)."
        },
    )
    text_len: int = _help("Token length of a caption in a batch, [CLS] and [SEP] included.", 32)
    transcript_len: int = _help("Token length of a transcript in a batch, [CLS] and [SEP] included.", 32)
    question_len: int = _help("Token length of a question in a batch, [CLS] and [SEP] included.", 16)

    def __post_init__(self) -> None:
        def check(name: str, ok: bool, requirement: str) -> None:
            if not ok:
                raise ValueError(f"WorldConfig.{name} {requirement}, got {getattr(self, name)!r}")

        if isinstance(self.downstream, dict):
            known = {f.name for f in dataclasses.fields(DownstreamShift)}
            unknown = sorted(set(self.downstream) - known)
            if unknown:
                raise ValueError(f"WorldConfig.downstream: unknown field(s) {unknown}; known: {sorted(known)}")
            object.__setattr__(self, "downstream", DownstreamShift(**self.downstream))
        check("downstream", isinstance(self.downstream, DownstreamShift), "must be a DownstreamShift or a mapping")

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

    def render_options(self, split: str) -> dict[str, float]:
        """Pixel noise and background texture of ``split``'s frames (the downstream shift's, if it sets them)."""
        shifted = split in DOWNSTREAM_SPLITS
        options = {"pixel_noise": self.pixel_noise, "background_texture": self.background_texture}
        for name in options:
            value = getattr(self.downstream, name)
            if shifted and value is not None:
                options[name] = float(value)
        return options

    def channel_index(self, split: str) -> list[int] | None:
        """How ``split``'s frames reorder the rendered RGB channels (None: kept as rendered)."""
        if split in DOWNSTREAM_SPLITS and self.downstream.channel_order != "rgb":
            return self.downstream.channel_index
        return None

    def split_size(self, split: str) -> int:
        """The number of clips of ``split`` (one of :data:`SPLITS`)."""
        if split not in SPLITS:
            raise KeyError(f"unknown split {split!r}; choose one of: {', '.join(SPLITS)}")
        return getattr(self, f"n_{split}")

    def fingerprint(self) -> str:
        """A short hash of the config, a key for caches of anything derived from the world."""
        values = dataclasses.asdict(self)
        if self.downstream.is_identity:
            del values["downstream"]  # worlds without a shift keep the fingerprints they had before shifts existed
        payload = json.dumps(values, sort_keys=True, default=list)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    @staticmethod
    def help() -> dict[str, str]:
        """The help text of every field, by field name."""
        return {f.name: f.metadata["help"] for f in dataclasses.fields(WorldConfig)}


def shift_help() -> dict[str, str]:
    """The help text of every field of :class:`DownstreamShift`, by field name."""
    return {f.name: f.metadata["help"] for f in dataclasses.fields(DownstreamShift)}
