"""Generation of the synthetic world: splits of clips with video, audio, captions, transcripts, QA, labels."""

from __future__ import annotations

import dataclasses
import hashlib
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from meltr.data.config import SPLITS, WorldConfig
from meltr.data.dataset import ServedSplits, WorldDataset, default_choice
from meltr.data.language import Annotation, annotate, scene_facts
from meltr.data.lexicon import ANSWER_INDEX, QA_TYPES
from meltr.data.render import render_audio, render_videos
from meltr.data.scene import Scene, sample_scene
from meltr.data.tokenizer import SPECIAL_TOKENS, Tokenizer, world_tokenizer

RENDER_CHUNK = 256
"""Clips rendered at once: large enough to vectorise, small enough to keep the float32 frames in cache."""


def clip_seed(seed: int, split: str, index: int) -> int:
    """The seed of clip ``index`` of ``split``: a 64-bit hash of ``(seed, split, index)``."""
    digest = hashlib.blake2b(f"{seed}/{split}/{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


@dataclass(frozen=True)
class Clip:
    """The ground truth of one clip.

    Attributes:
        index: position in its split (the ``clip_id`` of a batch).
        seed: the clip's own seed (:func:`clip_seed`).
        scene: the objects, their events and the background.
        annotation: the clip's own captions, transcript, questions and sentiment (aligned with its video even
            when the split serves another clip's text, see :attr:`WorldSplit.text_source`).
    """

    index: int
    seed: int
    scene: Scene
    annotation: Annotation

    @property
    def label(self) -> int:
        """Event class of the subject's first event."""
        return self.scene.label


@dataclass(frozen=True)
class WorldSplit:
    """One split: the clips' ground truth, their rendered signals and the text as served (tokenized).

    Attributes:
        name: ``pretrain``, ``train``, ``meta`` or ``test``.
        clips: the ground truth, one per clip.
        video: uint8 ``[N, F, 3, H, W]``.
        audio: float32 ``[N, S]``.
        captions: per clip, the captions served with its video (another clip's if misaligned).
        transcripts: per clip, the transcript served with its video.
        text_source: int64 ``[N]``, the clip whose text is served (its own index unless misaligned).
        caption_ids: int64 ``[N, C, text_len]``, the served captions tokenized (rows past a clip's
            ``caption_count`` are padding).
        caption_count: int64 ``[N]``.
        transcript_ids: int64 ``[N, transcript_len]``.
        question_ids: int64 ``[Q, question_len]``, every question of the split, clip after clip.
        qa_offsets: int64 ``[N + 1]``, the questions of clip ``i`` are rows ``qa_offsets[i]:qa_offsets[i+1]``.
        answers: int64 ``[Q]``, index in :data:`~meltr.data.lexicon.ANSWERS`.
        qa_types: int64 ``[Q]``, index in :data:`~meltr.data.lexicon.QA_TYPES`.
    """

    name: str
    clips: tuple[Clip, ...]
    video: np.ndarray
    audio: np.ndarray
    captions: tuple[tuple[str, ...], ...]
    transcripts: tuple[str, ...]
    text_source: np.ndarray
    caption_ids: np.ndarray
    caption_count: np.ndarray
    transcript_ids: np.ndarray
    question_ids: np.ndarray
    qa_offsets: np.ndarray
    answers: np.ndarray
    qa_types: np.ndarray

    def __len__(self) -> int:
        return len(self.clips)

    @property
    def misaligned(self) -> np.ndarray:
        """bool ``[N]``: the clip's video is served with another clip's text."""
        return self.text_source != np.arange(len(self.clips))

    @property
    def labels(self) -> np.ndarray:
        """int64 ``[N]``, the event class of each clip."""
        return np.array([c.label for c in self.clips], dtype=np.int64)

    @property
    def sentiment(self) -> np.ndarray:
        """float32 ``[N]``, the sentiment score of each clip."""
        return np.array([c.annotation.sentiment for c in self.clips], dtype=np.float32)


class World(ServedSplits):
    """A generated world: its config, tokenizer and splits.

    Build it with :func:`make_world`; read it through :meth:`dataset` and :meth:`loader` (from
    :class:`~meltr.data.dataset.ServedSplits`); ``world["train"]`` is a split.

    Attributes:
        config: what generated it.
        tokenizer: the word-level tokenizer of its language.
        splits: ``{"pretrain": ..., "train": ..., "meta": ..., "test": ...}``.
    """

    def __init__(self, config: WorldConfig, tokenizer: Tokenizer, splits: dict[str, WorldSplit]) -> None:
        self.config = config
        self.tokenizer = tokenizer
        self.splits = splits

    def dataset(
        self,
        split: str,
        *,
        caption: str | int | None = None,
        qa: str | int | None = None,
        qa_types: Sequence[str] | None = None,
        seed: int = 0,
        epoch: int = 0,
    ) -> WorldDataset:
        """A torch ``Dataset`` over ``split`` (see :class:`~meltr.data.dataset.WorldDataset`).

        ``caption`` and ``qa`` default to ``"first"`` on the test split (fixed queries) and ``"random"``
        (drawn per ``(seed, epoch, index)``) elsewhere.
        """
        return WorldDataset(
            self[split],
            caption=default_choice(split, caption),
            qa=default_choice(split, qa),
            qa_types=qa_types,
            seed=seed,
            epoch=epoch,
        )

    def __repr__(self) -> str:
        return f"World({self._sizes()}, vocab_size={self.tokenizer.vocab_size}, seed={self.config.seed})"


def make_world(config: WorldConfig | None = None, progress: bool = False, **overrides) -> World:
    """Generate the world of ``config`` (default :class:`WorldConfig`), with fields replaced by ``overrides``;
    ``progress`` shows a bar of the clips generated (on stderr, if it is a terminal).

    Example:
        >>> world = make_world(n_pretrain=0, n_train=64, n_meta=16, n_test=64, seed=1)
        >>> batch = next(iter(world.loader("train", batch_size=8)))
        >>> batch["video"].shape
        torch.Size([8, 8, 3, 32, 32])
    """
    config = WorldConfig() if config is None else config
    if overrides:
        unknown = sorted(set(overrides) - {f.name for f in dataclasses.fields(WorldConfig)})
        if unknown:
            raise TypeError(f"unknown WorldConfig field(s) {unknown}; see WorldConfig.help()")
        config = dataclasses.replace(config, **overrides)
    tokenizer = world_tokenizer()
    total = sum(config.split_size(name) for name in SPLITS)
    disable = None if progress else True  # None: a bar only on a terminal
    with tqdm(total=total, desc="generating the world", unit="clip", disable=disable, leave=False) as bar:
        splits = {name: generate_split(config, name, tokenizer, advance=bar.update) for name in SPLITS}
    return World(config, tokenizer, splits)


def generate_clips(
    config: WorldConfig, split: str, indices: Sequence[int], replacements: Sequence[str]
) -> tuple[list[Clip], np.ndarray, np.ndarray]:
    """Generate clips ``indices`` of ``split``: their ground truth, uint8 video and float32 audio."""
    clips, noise_rngs = [], []
    for index in indices:
        seed = clip_seed(config.seed, split, index)
        rng = random.Random(seed)
        scene = sample_scene(
            rng, config.n_frames, config.max_objects, config.two_event_prob, config.distractor_event_prob
        )
        annotation = annotate(
            rng,
            scene,
            n_frames=config.n_frames,
            n_captions=config.n_captions,
            qa_per_type=config.qa_per_type,
            transcript_noise=(config.transcript_drop, config.transcript_swap, config.transcript_substitute),
            sentiment_noise=config.sentiment_noise,
            replacements=replacements,
        )
        clips.append(Clip(index=index, seed=seed, scene=scene, annotation=annotation))
        noise_rngs.append(np.random.default_rng(seed))
    size, frames = config.image_size, config.n_frames
    if not clips:
        return (
            [],
            np.zeros((0, frames, 3, size, size), np.uint8),
            np.zeros((0, config.audio_samples), np.float32),
        )
    scenes = [c.scene for c in clips]
    video = render_videos(scenes, noise_rngs, n_frames=frames, image_size=size, **config.render_options(split))
    channels = config.channel_index(split)
    if channels is not None:
        video = np.ascontiguousarray(video[:, :, channels])
    audio = render_audio(
        scenes, noise_rngs, n_frames=frames, n_samples=config.audio_samples, audio_noise=config.audio_noise
    )
    return clips, video, audio


def misaligned_sources(
    n: int, fraction: float, rng: np.random.Generator, captions: Sequence[tuple[str, ...]]
) -> np.ndarray:
    """Which clip's text each clip is served with: exactly ``round(fraction * n)`` clips get another clip's.

    A misaligned clip takes the text of a uniformly drawn other clip whose captions differ from its own.

    Returns:
        int64 ``[n]``, equal to ``arange(n)`` except at the misaligned clips.
    """
    source = np.arange(n, dtype=np.int64)
    count = round(fraction * n)
    if count == 0:
        return source
    if n < 2:
        raise ValueError(f"WorldConfig.misaligned_fraction: cannot misalign {count} of {n} clip(s)")
    for i in rng.choice(n, size=count, replace=False):
        for _ in range(32):
            j = int(rng.integers(n - 1))
            j += j >= i  # uniform over the other clips
            if captions[j] != captions[i]:
                break
        source[i] = j
    return source


def generate_split(
    config: WorldConfig, split: str, tokenizer: Tokenizer | None = None, advance: Callable[[int], object] | None = None
) -> WorldSplit:
    """Generate one split of the world of ``config`` (clips in chunks of :data:`RENDER_CHUNK`; ``advance(n)`` is
    called after each chunk of ``n`` clips)."""
    tokenizer = world_tokenizer() if tokenizer is None else tokenizer
    replacements = tokenizer.id_to_token[len(SPECIAL_TOKENS) :]
    n = config.split_size(split)
    clips, videos, audios = [], [], []
    for start in range(0, max(n, 1), RENDER_CHUNK):
        chunk, video, audio = generate_clips(config, split, range(start, min(start + RENDER_CHUNK, n)), replacements)
        clips += chunk
        if advance is not None:
            advance(len(chunk))
        videos.append(video)
        audios.append(audio)
    own_captions = [c.annotation.captions for c in clips]
    source = np.arange(n, dtype=np.int64)
    if split in config.misaligned_splits:
        rng = np.random.default_rng(clip_seed(config.seed, f"{split}/misaligned", n))
        source = misaligned_sources(n, config.misaligned_fraction, rng, own_captions)
    captions = tuple(own_captions[j] for j in source)
    transcripts = tuple(clips[j].annotation.transcript for j in source)

    caption_count = np.array([len(c) for c in captions], dtype=np.int64)
    caption_ids = np.zeros((n, config.n_captions, config.text_len), dtype=np.int64)
    for i, texts in enumerate(captions):
        caption_ids[i, : len(texts)] = tokenizer.encode_batch(texts, config.text_len)
    qa = [pair for clip in clips for pair in clip.annotation.qa]
    qa_offsets = np.cumsum([0, *(len(clip.annotation.qa) for clip in clips)]).astype(np.int64)
    return WorldSplit(
        name=split,
        clips=tuple(clips),
        video=np.concatenate(videos),
        audio=np.concatenate(audios),
        captions=captions,
        transcripts=transcripts,
        text_source=source,
        caption_ids=caption_ids,
        caption_count=caption_count,
        transcript_ids=tokenizer.encode_batch(transcripts, config.transcript_len),
        question_ids=tokenizer.encode_batch([p.question for p in qa], config.question_len),
        qa_offsets=qa_offsets,
        answers=np.array([ANSWER_INDEX[p.answer] for p in qa], dtype=np.int64),
        qa_types=np.array([QA_TYPES.index(p.qa_type) for p in qa], dtype=np.int64),
    )


def retrieval_ceiling(split: WorldSplit, caption: int = 0) -> float:
    """Text-to-video R@1 of an oracle that knows which clips each query caption is consistent with.

    The oracle ranks the clips consistent with the query (its facts are a subset of the clip's
    :func:`~meltr.data.language.scene_facts`) first, in random order, so its expected R@1 is the mean over
    queries of ``1 / #consistent clips`` (0 when the query came from another clip and does not fit its video).
    It is the ceiling of a split's retrieval: captions are partial descriptions shared by several clips.

    Args:
        split: the split whose clips are the gallery and whose served captions are the queries.
        caption: which caption of each clip is the query (clipped to the clip's number of captions).
    """
    truths = [scene_facts(clip.scene) for clip in split.clips]
    total = 0.0
    for i, source in enumerate(split.text_source):
        facts = split.clips[source].annotation.caption_facts
        query = facts[min(caption, len(facts) - 1)]
        if query <= truths[i]:
            total += 1.0 / sum(query <= truth for truth in truths)
    return total / max(len(split), 1)
