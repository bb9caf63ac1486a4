"""A dataset read from disk, served like the synthetic world: ``corpus.loader(split, ...)`` yields the same batches.

A :class:`Corpus` has the part of :class:`~meltr.data.world.World`'s interface the tasks and the fine-tuning
recipe use (``splits``, ``tokenizer``, ``config.image_size``, ``dataset``, ``loader``), so every task and backbone
reads a benchmark on disk as it reads the world. A batch holds only the keys its format has (see
:data:`~meltr.data.dataset.BATCH_KEYS`); pre-extracted features come as ``video`` ``[B, T, D]`` with ``video_mask``.

Real benchmarks have train / val / test but no meta split: :func:`carve_meta` moves a seeded fraction of train
into ``meta`` (or the val split serves as meta), and :attr:`Corpus.provenance` records which.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor

from meltr.data.dataset import PlannedDataset, ServedSplits, default_choice, mix_seed


class TextTokenizer(Protocol):
    """What a corpus needs of a tokenizer (the world's :class:`~meltr.data.tokenizer.Tokenizer` or WordPiece)."""

    pad_id: int
    cls_id: int
    sep_id: int
    mask_id: int
    unk_id: int

    @property
    def vocab_size(self) -> int: ...

    def encode_batch(self, texts: Sequence[str], max_len: int) -> np.ndarray: ...

    def decode(self, ids, *, skip_special: bool = True) -> str: ...


class ClipSource(Protocol):
    """Where a split's video comes from: :class:`~meltr.data.video.VideoFiles` or
    :class:`~meltr.data.video.VideoFeatures`."""

    def __len__(self) -> int: ...

    def read(self, index: int, *, train: bool, seed: int = 0, epoch: int = 0) -> dict[str, Tensor]: ...


@dataclass(frozen=True)
class Example:
    """The annotations of one clip (one video, or one segment of a video).

    Attributes:
        video_id: the id the format gives the video (and ``#k`` for the k-th segment of a YouCook2 video).
        captions: its captions (at least one for captioning / retrieval formats; none for QA / sentiment).
        transcript: the ASR transcript, ``""`` if the format has none.
        questions: ``(question, answer index, QA_TYPES index)`` triples.
        sentiment: the sentiment score (CMU-MOSI), else ``nan``.
        key: a unique id of the example when several share a video (a YouCook2 segment), else ``""``.
    """

    video_id: str
    captions: tuple[str, ...] = ()
    transcript: str = ""
    questions: tuple[tuple[str, int, int], ...] = ()
    sentiment: float = float("nan")
    key: str = ""


@dataclass(frozen=True)
class TextLengths:
    """Token lengths of a batch's texts, ``[CLS]`` and ``[SEP]`` included (the world's defaults)."""

    text_len: int = 32
    transcript_len: int = 32
    question_len: int = 16


@dataclass(frozen=True)
class CorpusInfo:
    """The fields of a corpus the recipes read like a :class:`~meltr.data.config.WorldConfig`'s."""

    format: str
    image_size: int
    n_frames: int
    lengths: TextLengths = field(default_factory=TextLengths)


class CorpusSplit:
    """One split of a corpus: its examples, their tokenized text and where their video comes from.

    Args:
        name: the split's name.
        examples: one per clip.
        source: reads clip ``i``'s video (``None``: a text-only split, e.g. when only annotations are inspected).
        tokenizer: tokenizes every text once, here.
        lengths: token lengths.
        audio: float32 ``[N, ...]`` per clip, or ``None``.
    """

    def __init__(
        self,
        name: str,
        examples: Sequence[Example],
        source: ClipSource | None,
        tokenizer: TextTokenizer,
        lengths: TextLengths,
        audio: np.ndarray | None = None,
    ) -> None:
        self.name = name
        self.examples = tuple(examples)
        self.source = source
        self.audio = audio
        if source is not None and len(source) != len(self.examples):
            raise ValueError(f"split {name}: {len(source)} videos for {len(self.examples)} examples")
        n = len(self.examples)
        self.captions: tuple[tuple[str, ...], ...] = tuple(e.captions for e in self.examples)
        self.caption_count = np.array([len(c) for c in self.captions], dtype=np.int64)
        most = int(self.caption_count.max()) if n else 0
        self.caption_ids = np.zeros((n, max(most, 1), lengths.text_len), dtype=np.int64)
        for i, texts in enumerate(self.captions):
            if texts:
                self.caption_ids[i, : len(texts)] = tokenizer.encode_batch(texts, lengths.text_len)
        self.has_transcript = any(e.transcript for e in self.examples)
        self.transcript_ids = tokenizer.encode_batch([e.transcript for e in self.examples], lengths.transcript_len)
        questions = [q for e in self.examples for q in e.questions]
        self.question_ids = tokenizer.encode_batch([q[0] for q in questions], lengths.question_len)
        self.answers = np.array([q[1] for q in questions], dtype=np.int64)
        self.qa_types = np.array([q[2] for q in questions], dtype=np.int64)
        self.qa_offsets = np.cumsum([0, *(len(e.questions) for e in self.examples)]).astype(np.int64)
        self.sentiment = np.array([e.sentiment for e in self.examples], dtype=np.float32)

    def __len__(self) -> int:
        return len(self.examples)

    @property
    def ids(self) -> tuple[str, ...]:
        """The video id of each clip."""
        return tuple(e.video_id for e in self.examples)

    @property
    def transcripts(self) -> tuple[str, ...]:
        return tuple(e.transcript for e in self.examples)

    def keys(self) -> tuple[str, ...]:
        """The batch keys a sample of this split has (besides ``video`` and ``clip_id``)."""
        keys = []
        if self.caption_count.any():
            keys += ["text", "text_mask"]
        if self.has_transcript:
            keys += ["transcript", "transcript_mask"]
        if len(self.answers):
            keys += ["question", "question_mask", "answer", "qa_type"]
        if not np.isnan(self.sentiment).all():
            keys.append("sentiment")
        if self.audio is not None:
            keys.append("audio")
        return tuple(keys)


class CorpusDataset(PlannedDataset):
    """One sample per clip of a corpus split (or per question with ``qa="all"``), drawn like
    :class:`~meltr.data.dataset.WorldDataset`: the same ``(seed, epoch, index)`` gives the same caption and
    question, so a world exported to disk and read back yields the world's own batches.

    Args:
        split: the split.
        caption, qa, qa_types, seed, epoch: as :class:`~meltr.data.dataset.WorldDataset`'s.
        train: training-time video sampling (a random frame per segment, random crop) instead of evaluation's
            (the middle frame of each segment, centre crop).
    """

    def __init__(
        self,
        split: CorpusSplit,
        *,
        caption: str | int = "random",
        qa: str | int = "random",
        qa_types: Sequence[str] | None = None,
        seed: int = 0,
        epoch: int = 0,
        train: bool = False,
    ) -> None:
        if split.source is None:
            raise ValueError(f"split {split.name} has no video source; read the corpus with its videos or features")
        self.train = bool(train)
        self.keys = split.keys()
        super().__init__(
            split, caption=caption, qa=qa, qa_types=qa_types, seed=seed, epoch=epoch, questions="answer" in self.keys
        )

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        split, plan = self.split, self.plan
        clip, question = plan.locate(index)
        sample = dict(split.source.read(clip, train=self.train, seed=plan.seed, epoch=plan.epoch))
        sample["clip_id"] = torch.tensor(clip, dtype=torch.int64)
        if "text" in self.keys:
            caption = plan.caption_of(clip, int(split.caption_count[clip]))
            sample["text"] = torch.from_numpy(split.caption_ids[clip, caption])
            sample["text_mask"] = sample["text"] != 0
        if "transcript" in self.keys:
            sample["transcript"] = torch.from_numpy(split.transcript_ids[clip])
            sample["transcript_mask"] = sample["transcript"] != 0
        if question is not None:
            sample["question"] = torch.from_numpy(split.question_ids[question])
            sample["question_mask"] = sample["question"] != 0
            sample["answer"] = torch.tensor(split.answers[question], dtype=torch.int64)
            sample["qa_type"] = torch.tensor(split.qa_types[question], dtype=torch.int64)
            if "text" not in self.keys:
                # QA benchmarks have no captions: the backbone's pretext losses read the question as the text
                sample["text"], sample["text_mask"] = sample["question"], sample["question_mask"]
        if "sentiment" in self.keys:
            sample["sentiment"] = torch.tensor(split.sentiment[clip], dtype=torch.float32)
            if "text" not in self.keys:
                # CMU-MOSI's text is the spoken transcript: the pretext losses read it as the text
                sample["text"], sample["text_mask"] = sample["transcript"], sample["transcript_mask"]
        if "audio" in self.keys:
            sample["audio"] = torch.from_numpy(np.asarray(split.audio[clip], dtype=np.float32))
        return sample


def carve_meta(count: int, fraction: float, seed: int) -> np.ndarray:
    """Which of ``count`` training clips form the meta split: ``round(fraction * count)`` indices, sorted, drawn
    without replacement from a generator seeded by ``seed`` only.

    Real benchmarks ship no meta split; the official MELTR code draws its meta batches from recent training
    batches. meltr holds a seeded part of train out instead, and records it (:attr:`Corpus.provenance`).
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"data.meta_fraction must be in [0, 1), got {fraction!r}")
    rng = np.random.default_rng(mix_seed(seed, 0x3E7A))
    return np.sort(rng.permutation(count)[: round(fraction * count)])


class Corpus(ServedSplits):
    """A benchmark read from disk, served like :class:`~meltr.data.world.World`.

    Attributes:
        config: format, frame size and frames per clip, token lengths.
        tokenizer: what tokenized the text (its ``decode`` gives generated captions back as text).
        splits: ``train``, ``meta``, ``test`` (and ``val`` when the format has one and it is not the meta split).
        answers: the answer vocabulary (QA formats; ``answer`` indexes it).
        provenance: where the data came from and how the meta split was made (written to the run directory).
        report: what the reader noticed (captions without video and the reverse, skipped videos), one line each.
        num_workers: the ``DataLoader`` workers of :meth:`loader` when it is not given any.
    """

    def __init__(
        self,
        config: CorpusInfo,
        tokenizer: TextTokenizer,
        splits: dict[str, CorpusSplit],
        *,
        answers: Sequence[str] = (),
        provenance: dict[str, Any] | None = None,
        report: Sequence[str] = (),
        num_workers: int = 0,
    ) -> None:
        self.config = config
        self.tokenizer = tokenizer
        self.splits = splits
        self.answers = tuple(answers)
        self.provenance = dict(provenance or {})
        self.report = tuple(report)
        self.num_workers = num_workers

    def dataset(
        self,
        split: str,
        *,
        caption: str | int | None = None,
        qa: str | int | None = None,
        qa_types: Sequence[str] | None = None,
        seed: int = 0,
        epoch: int = 0,
        train: bool | None = None,
    ) -> CorpusDataset:
        """A :class:`CorpusDataset` over ``split``; defaults as :meth:`World.dataset
        <meltr.data.world.World.dataset>` (fixed caption / question on test), training-time video sampling on
        train only."""
        return CorpusDataset(
            self[split],
            caption=default_choice(split, caption),
            qa=default_choice(split, qa),
            qa_types=qa_types,
            seed=seed,
            epoch=epoch,
            train=split == "train" if train is None else train,
        )

    def warn(self) -> None:
        """Issue every line of :attr:`report` as a warning."""
        for line in self.report:
            warnings.warn(line, stacklevel=2)

    def __repr__(self) -> str:
        return f"Corpus({self.config.format}: {self._sizes()}, vocab_size={self.tokenizer.vocab_size})"
