"""The torch view of a world split: one sample per clip (or per question), batches as dicts of tensors.

Batch keys (``B`` clips, ``F`` frames, ``L`` tokens, ``S`` audio samples):

- ``video``: float32 ``[B, F, 3, H, W]``, pixels in ``[0, 1]``.
- ``text``, ``text_mask``: int64 / bool ``[B, L]``, one caption as ``[CLS] ... [SEP]`` then ``[PAD]`` = 0;
  the mask is True on real tokens.
- ``transcript``, ``transcript_mask``: int64 / bool ``[B, L_r]``, the noisy ASR transcript, same layout.
- ``audio``: float32 ``[B, S]``, the audio-like signal.
- ``clip_id``: int64 ``[B]``, index of the clip in its split.
- ``label``: int64 ``[B]``, event class (index in :data:`~meltr.data.lexicon.EVENT_CLASSES`).
- ``sentiment``: float32 ``[B]``, score in ``[-3, 3]``.
- ``misaligned``: bool ``[B]``, the text comes from another clip.
- ``question``, ``question_mask``: int64 / bool ``[B, L_q]``, one question, same layout as ``text``.
- ``answer``: int64 ``[B]``, index in :data:`~meltr.data.lexicon.ANSWERS`.
- ``qa_type``: int64 ``[B]``, index in :data:`~meltr.data.lexicon.QA_TYPES`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from meltr.data.lexicon import QA_TYPES

if TYPE_CHECKING:
    from meltr.data.world import WorldSplit

BATCH_KEYS: tuple[str, ...] = (
    "video",
    "text",
    "text_mask",
    "transcript",
    "transcript_mask",
    "audio",
    "clip_id",
    "label",
    "sentiment",
    "misaligned",
    "question",
    "question_mask",
    "answer",
    "qa_type",
)
"""Every key of a batch, see the module docstring."""

_MASK64 = (1 << 64) - 1


def mix_seed(*values: int) -> int:
    """A 64-bit hash of integers (splitmix64 steps): draws that depend on ``(seed, epoch, index)`` only."""
    state = 0x9E3779B97F4A7C15
    for value in values:
        state = (state ^ (int(value) & _MASK64)) & _MASK64
        state = (state + 0x9E3779B97F4A7C15) & _MASK64
        z = state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
        state = z ^ (z >> 31)
    return state


def _choice_mode(name: str, mode: str | int) -> str | int:
    if isinstance(mode, bool) or not (mode in ("random", "first", "all") or (isinstance(mode, int) and mode >= 0)):
        raise ValueError(f"{name} must be 'random', 'first', 'all' or a non-negative int, got {mode!r}")
    if name == "caption" and mode == "all":
        raise ValueError("caption='all' is not supported; use 'random', 'first' or an index")
    return mode


class SamplePlan:
    """Which clip, caption and question each sample of a split carries (the world's and a dataset on disk's).

    One sample per clip that has an eligible question, or per eligible question with ``qa="all"``; one per clip
    when the split has no questions at all (``questions=False``). Draws depend on ``(seed, epoch, clip)`` only.

    Args:
        n_clips: clips of the split.
        qa_offsets: int64 ``[N + 1]``, the questions of clip ``i`` are rows ``qa_offsets[i]:qa_offsets[i + 1]``.
        qa_type_ids: int64 ``[Q]``, each question's index in :data:`~meltr.data.lexicon.QA_TYPES`.
        caption, qa, qa_types, seed, epoch: as :class:`WorldDataset`'s.
        questions: whether samples need a question.
    """

    def __init__(
        self,
        n_clips: int,
        qa_offsets: np.ndarray,
        qa_type_ids: np.ndarray,
        *,
        caption: str | int,
        qa: str | int,
        qa_types: Sequence[str] | None,
        seed: int,
        epoch: int,
        questions: bool = True,
    ) -> None:
        self.caption = _choice_mode("caption", caption)
        self.qa = _choice_mode("qa", qa)
        self.seed, self.epoch = int(seed), int(epoch)
        if qa_types is None:
            allowed = np.ones(len(qa_type_ids), dtype=bool)
        else:
            unknown = [t for t in qa_types if t not in QA_TYPES]
            if unknown:
                raise ValueError(f"unknown qa_types {unknown}; choose among {list(QA_TYPES)}")
            allowed = np.isin(qa_type_ids, [QA_TYPES.index(t) for t in qa_types])
        # eligible questions of clip i: self._questions[self._question_start[i]:self._question_start[i + 1]]
        self._questions = np.flatnonzero(allowed)
        clip_of_question = np.repeat(np.arange(n_clips), np.diff(qa_offsets))
        counts = np.bincount(clip_of_question[allowed], minlength=n_clips).astype(np.int64)
        self._question_start = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        self.questions = questions
        clips = np.flatnonzero(counts > 0)
        if not questions:
            self.samples = [(i, None) for i in range(n_clips)]
        elif self.qa == "all":
            # one sample per eligible question: (clip, k-th eligible question of the clip)
            self.samples = [(int(c), k) for c in clips for k in range(int(counts[c]))]
        else:
            self.samples = [(int(c), None) for c in clips]

    def __len__(self) -> int:
        return len(self.samples)

    def _pick(self, mode: str | int, count: int, index: int, salt: int) -> int:
        if mode == "first":
            return 0
        if mode == "random":
            return mix_seed(self.seed, self.epoch, index, salt) % count
        return mode

    def caption_of(self, clip: int, count: int) -> int:
        """Which of the clip's ``count`` captions the sample carries."""
        return min(self._pick(self.caption, count, clip, 1), count - 1)

    def locate(self, index: int) -> tuple[int, int | None]:
        """Sample ``index``'s clip and its question (a row of the split's questions; ``None`` without questions)."""
        clip, question_rank = self.samples[index]
        if not self.questions:
            return clip, None
        first, last = self._question_start[clip], self._question_start[clip + 1]
        if question_rank is None:
            question_rank = self._pick(self.qa, int(last - first), clip, 2) % int(last - first)
        return clip, int(self._questions[first + question_rank])


class PlannedDataset(Dataset):
    """A dataset over one split whose samples a :class:`SamplePlan` picks: what the world's
    :class:`WorldDataset` and a dataset on disk's :class:`~meltr.data.formats.corpus.CorpusDataset` share.

    Args:
        split: the split (``len``, ``qa_offsets``, ``qa_types``).
        **choices: the plan's ``caption``, ``qa``, ``qa_types``, ``seed``, ``epoch`` (as :class:`WorldDataset`'s)
            and ``questions`` (:class:`SamplePlan`).
    """

    def __init__(self, split: Any, **choices: Any) -> None:
        self.split = split
        self.plan = SamplePlan(len(split), split.qa_offsets, split.qa_types, **choices)

    def set_epoch(self, epoch: int) -> None:
        """Draw other captions and questions (``"random"`` modes) from now on."""
        self.plan.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.plan)


class WorldDataset(PlannedDataset):
    """One sample per clip of a split (or per question with ``qa="all"``).

    Args:
        split: the split to read.
        caption: which caption a sample carries: ``"random"`` (drawn from ``(seed, epoch, index)``),
            ``"first"`` (caption 0, the fixed query of retrieval evaluation) or an index (clipped to the
            clip's number of captions).
        qa: which question: ``"random"``, ``"first"``, an index (taken modulo the clip's number of eligible
            questions) or ``"all"`` (one sample per question: evaluation over every question).
        qa_types: only questions of these types (:data:`~meltr.data.lexicon.QA_TYPES`); clips without any
            are left out of the dataset. ``None`` keeps every question (every clip has Frame and open questions).
        seed: seed of the caption / question draws.
        epoch: mixed into the draws; change it with :meth:`set_epoch`.
    """

    def __init__(
        self,
        split: WorldSplit,
        *,
        caption: str | int = "random",
        qa: str | int = "random",
        qa_types: Sequence[str] | None = None,
        seed: int = 0,
        epoch: int = 0,
    ) -> None:
        super().__init__(split, caption=caption, qa=qa, qa_types=qa_types, seed=seed, epoch=epoch)
        self.qa_types = None if qa_types is None else tuple(qa_types)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        split = self.split
        clip, question = self.plan.locate(index)
        caption = self.plan.caption_of(clip, int(split.caption_count[clip]))
        text = torch.from_numpy(split.caption_ids[clip, caption])
        transcript = torch.from_numpy(split.transcript_ids[clip])
        question_ids = torch.from_numpy(split.question_ids[question])
        return {
            "video": torch.from_numpy(split.video[clip]).float().div_(255.0),
            "text": text,
            "text_mask": text != 0,
            "transcript": transcript,
            "transcript_mask": transcript != 0,
            "audio": torch.from_numpy(split.audio[clip]),
            "clip_id": torch.tensor(clip, dtype=torch.int64),
            "label": torch.tensor(split.clips[clip].label, dtype=torch.int64),
            "sentiment": torch.tensor(split.clips[clip].annotation.sentiment, dtype=torch.float32),
            "misaligned": torch.tensor(bool(split.text_source[clip] != clip)),
            "question": question_ids,
            "question_mask": question_ids != 0,
            "answer": torch.tensor(split.answers[question], dtype=torch.int64),
            "qa_type": torch.tensor(split.qa_types[question], dtype=torch.int64),
        }


def default_choice(split: str, mode: str | int | None) -> str | int:
    """A split's caption / question choice: ``mode`` if given, else ``"first"`` on test (fixed queries) and
    ``"random"`` elsewhere."""
    if mode is not None:
        return mode
    return "first" if split == "test" else "random"


def split_loader(
    dataset: Dataset,
    split: str,
    batch_size: int,
    *,
    shuffle: bool | None,
    seed: int,
    epoch: int,
    drop_last: bool,
    num_workers: int,
) -> DataLoader:
    """A ``DataLoader`` of :func:`collate`'d batches whose order depends on ``(seed, epoch)`` only (shuffled by
    default everywhere but on the test split)."""
    generator = torch.Generator().manual_seed(mix_seed(seed, epoch, 0x5F) % 2**63)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=split != "test" if shuffle is None else shuffle,
        generator=generator,
        collate_fn=collate,
        drop_last=drop_last,
        num_workers=num_workers,
    )


class ServedSplits:
    """Named splits served as datasets and loaders: what the synthetic :class:`~meltr.data.world.World` and a
    dataset read from disk (:class:`~meltr.data.formats.corpus.Corpus`) share.

    A subclass sets ``splits`` and defines ``dataset(split, *, caption, qa, qa_types, seed, epoch, **options)``;
    ``num_workers`` is the loaders' default number of worker processes.
    """

    splits: dict[str, Any]
    num_workers: int = 0

    def __getitem__(self, split: str) -> Any:
        if split not in self.splits:
            raise KeyError(f"unknown split {split!r}; choose one of: {', '.join(self.splits)}")
        return self.splits[split]

    def loader(
        self,
        split: str,
        batch_size: int = 32,
        *,
        shuffle: bool | None = None,
        seed: int = 0,
        epoch: int = 0,
        caption: str | int | None = None,
        qa: str | int | None = None,
        qa_types: Sequence[str] | None = None,
        drop_last: bool = False,
        num_workers: int | None = None,
        **options: Any,
    ) -> DataLoader:
        """A ``DataLoader`` of batches (dicts of tensors, see :func:`collate`).

        The order (when shuffled) and the caption / question of each clip depend only on ``(seed, epoch)``:
        make one loader per epoch with ``epoch=e`` for fresh draws.

        Args:
            split: which split.
            batch_size: clips per batch.
            shuffle: shuffle the clips; default everywhere but on the test split.
            seed: seed of the order and of the caption / question draws.
            epoch: the epoch, mixed into the seed.
            caption, qa, qa_types: see :meth:`dataset`.
            drop_last: drop the last incomplete batch.
            num_workers: worker processes of the ``DataLoader`` (default :attr:`num_workers`).
            **options: the dataset's own options (a corpus's ``train``: training-time video sampling).
        """
        dataset = self.dataset(split, caption=caption, qa=qa, qa_types=qa_types, seed=seed, epoch=epoch, **options)
        return split_loader(
            dataset,
            split,
            batch_size,
            shuffle=shuffle,
            seed=seed,
            epoch=epoch,
            drop_last=drop_last,
            num_workers=self.num_workers if num_workers is None else num_workers,
        )

    def _sizes(self) -> str:
        return ", ".join(f"{name}={len(split)}" for name, split in self.splits.items())


def collate(samples: Sequence[dict[str, Tensor]]) -> dict[str, Tensor]:
    """Stack samples of :class:`WorldDataset` into a batch (every key gets a leading batch dimension)."""
    if not samples:
        raise ValueError("cannot collate an empty list of samples")
    return {key: torch.stack([s[key] for s in samples]) for key in samples[0]}
