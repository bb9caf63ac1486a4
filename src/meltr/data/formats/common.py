"""What every reader shares: options, strict file parsing with errors that name file / line / field, and the
assembly of examples, videos and splits into a :class:`~meltr.data.formats.corpus.Corpus`."""

from __future__ import annotations

import csv
import json
import math
import pickle
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from meltr.data.formats.corpus import (
    Corpus,
    CorpusInfo,
    CorpusSplit,
    Example,
    TextLengths,
    TextTokenizer,
    carve_meta,
)
from meltr.data.video import (
    VideoDecodeError,
    VideoFeatures,
    VideoFiles,
    VideoSpan,
    decode_video,
    find_video,
)


class FormatError(ValueError):
    """A file of a dataset is malformed; the message names the file, the line (or entry) and the field."""


@dataclass(frozen=True)
class ReadOptions:
    """How a reader serves a dataset (the ``data:`` block of a recipe, less ``format`` and ``root``).

    Every path is relative to the dataset's root unless absolute.
    """

    videos: str | None = field(
        default=None, metadata={"help": "Folder of the video files (default: the format's, see docs/data.md)."}
    )
    features: str | None = field(
        default=None,
        metadata={
            "help": "Pre-extracted features instead of video files: a pickle {video_id: float[T, D]} (UniVL's S3D "
            "file; unpickled because you name it here) or a folder of {video_id}.npy."
        },
    )
    feature_fps: float = field(default=1.0, metadata={"help": "Feature rows per second (UniVL's S3D: 1)."})
    n_frames: int = field(default=8, metadata={"help": "Frames (or feature rows) per clip."})
    image_size: int = field(default=32, metadata={"help": "Side of the square frames after resize and crop."})
    mean: tuple[float, float, float] | None = field(
        default=None,
        metadata={
            "help": "Per-channel mean subtracted from pixels in [0, 1] (e.g. CLIP's for Hugging Face towers); the "
            "reference backbones take [0, 1] and leave it unset."
        },
    )
    std: tuple[float, float, float] | None = field(default=None, metadata={"help": "Per-channel std (with mean)."})
    meta: str = field(
        default="train",
        metadata={
            "help": "Where the meta split comes from: 'train' (a seeded meta_fraction of train, held out) or "
            "'val' (the format's validation split)."
        },
    )
    meta_fraction: float = field(default=0.1, metadata={"help": "Share of train held out as meta (meta: train)."})
    seed: int = field(default=0, metadata={"help": "Seed of the meta split."})
    on_bad_video: str = field(
        default="raise",
        metadata={"help": "A video that does not decode: 'raise' (refuse, naming it) or 'skip' (drop it, reported)."},
    )
    verify_videos: bool = field(
        default=True, metadata={"help": "Open every video and decode its first frame while reading the annotations."}
    )
    num_workers: int = field(
        default=0, metadata={"help": "DataLoader worker processes of this dataset's loaders (decoding runs there)."}
    )
    text_len: int = field(default=32, metadata={"help": "Tokens of a caption, [CLS] and [SEP] included."})
    transcript_len: int = field(default=32, metadata={"help": "Tokens of a transcript."})
    question_len: int = field(default=16, metadata={"help": "Tokens of a question."})

    def __post_init__(self) -> None:
        if self.meta not in ("train", "val"):
            raise ValueError(f"data.meta must be 'train' or 'val', got {self.meta!r}")
        if self.on_bad_video not in ("raise", "skip"):
            raise ValueError(f"data.on_bad_video must be 'raise' or 'skip', got {self.on_bad_video!r}")
        if not isinstance(self.num_workers, int) or isinstance(self.num_workers, bool) or self.num_workers < 0:
            raise ValueError(f"data.num_workers must be a non-negative int, got {self.num_workers!r}")
        for name in ("n_frames", "image_size", "text_len", "transcript_len", "question_len"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"data.{name} must be a positive int, got {value!r}")
        for name in ("mean", "std"):
            value = getattr(self, name)
            if value is not None:
                if len(value) != 3 or not all(isinstance(v, (int, float)) for v in value):
                    raise ValueError(f"data.{name} must be three numbers (one per channel), got {value!r}")
                object.__setattr__(self, name, tuple(float(v) for v in value))
        if self.std is not None and (self.mean is None or min(self.std) <= 0):
            raise ValueError(f"data.std must be positive and come with data.mean, got std={self.std!r}")
        if not self.feature_fps > 0:
            raise ValueError(f"data.feature_fps must be positive, got {self.feature_fps!r}")

    @property
    def lengths(self) -> TextLengths:
        return TextLengths(self.text_len, self.transcript_len, self.question_len)

    @staticmethod
    def help() -> dict[str, str]:
        return {f.name: f.metadata["help"] for f in fields(ReadOptions)}


def need(root: Path, name: str, fmt: str, what: str) -> Path:
    """``root / name``, or a ``FileNotFoundError`` naming the file and the format that expects it."""
    path = Path(name) if Path(name).is_absolute() else Path(root) / name
    if not path.exists():
        raise FileNotFoundError(f"{fmt}: {path} is missing ({what}); docs/data.md shows the {fmt} layout")
    return path


def read_rows(path: Path, columns: Sequence[str], *, delimiter: str = ",") -> list[tuple[int, dict[str, str]]]:
    """The rows of a CSV / TSV file with a header, as ``(line number, {column: value})``.

    Raises:
        FormatError: a required column is missing from the header, or a row leaves one empty (naming the file,
            the line and the column).
    """
    with Path(path).open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle, delimiter=delimiter)
        header = reader.fieldnames or []
        missing = [c for c in columns if c not in header]
        if missing:
            raise FormatError(f"{path}: line 1: missing column(s) {missing}; the header has {header}")
        rows = []
        for row in reader:
            line = reader.line_num
            for column in columns:
                if row.get(column) is None or row[column].strip() == "":
                    raise FormatError(f"{path}: line {line}: field {column!r} is empty")
            rows.append((line, row))
    return rows


def convert(value: Any, kind: Callable[[Any], Any], path: Path, where: str, name: str) -> Any:
    """``kind(value)``, or a :class:`FormatError` naming the file, the line / entry and the field."""
    try:
        result = kind(value)
    except (TypeError, ValueError):
        raise FormatError(f"{path}: {where}: field {name!r} = {value!r} is not a {kind.__name__}") from None
    if isinstance(result, float) and not math.isfinite(result):
        raise FormatError(f"{path}: {where}: field {name!r} = {value!r} is not finite")
    return result


def read_json(path: Path) -> Any:
    """The JSON document at ``path``; a :class:`FormatError` naming the line and column if it is not JSON."""
    try:
        with Path(path).open(encoding="utf-8") as handle:
            return json.load(handle)
    except json.JSONDecodeError as error:
        raise FormatError(f"{path}: line {error.lineno}, column {error.colno}: not valid JSON ({error.msg})") from None


def entry_field(entry: Any, name: str, path: Path, where: str) -> Any:
    """``entry[name]`` of a JSON entry, or a :class:`FormatError` naming the file, the entry and the field."""
    if not isinstance(entry, Mapping):
        raise FormatError(f"{path}: {where}: expected an object with field {name!r}, got {type(entry).__name__}")
    if name not in entry or entry[name] is None:
        raise FormatError(f"{path}: {where}: missing field {name!r}")
    return entry[name]


def read_pickle(path: Path) -> Any:
    """Unpickle ``path``: only ever a file the user named (a pickle runs any code it carries), never a download."""
    try:
        with Path(path).open("rb") as handle:
            return pickle.load(handle)
    except (pickle.UnpicklingError, EOFError, AttributeError, ImportError) as error:
        raise FormatError(f"{path}: not a readable pickle ({type(error).__name__}: {error})") from None


def load_feature_pickle(path: Path) -> dict[str, np.ndarray]:
    """UniVL's feature file: a pickle ``{video_id: float[T, D]}`` (read with :func:`read_pickle`)."""
    table = read_pickle(path)
    if not isinstance(table, dict):
        raise FormatError(f"{path}: a feature pickle holds a dict video_id -> float[T, D], got {type(table).__name__}")
    return {str(key): np.asarray(value, dtype=np.float32) for key, value in table.items()}


def load_feature_folder(path: Path, ids: Sequence[str]) -> dict[str, np.ndarray]:
    """A folder of ``{video_id}.npy`` files (float ``[T, D]``), loaded without pickles (``allow_pickle=False``)."""
    return {
        video_id: np.load(path / f"{video_id}.npy", allow_pickle=False).astype(np.float32, copy=False)
        for video_id in ids
        if (path / f"{video_id}.npy").is_file()
    }


def _first(items: Sequence[str], count: int = 5) -> str:
    shown = ", ".join(items[:count])
    return shown + (", ..." if len(items) > count else "")


def _probe(path: Path) -> str | None:
    """``None`` if the file decodes (its first frame at least), else the reason."""
    try:
        decode_video(path, end=1e-3) if path.suffix != ".gif" else decode_video(path)
    except VideoDecodeError as error:
        return str(error)
    return None


def assemble(
    fmt: str,
    root: Path,
    examples: Mapping[str, Sequence[Example]],
    options: ReadOptions,
    tokenizer: TextTokenizer,
    *,
    default_videos: str,
    annotation_file: str,
    spans: Mapping[str, tuple[float, float]] | None = None,
    answers: Sequence[str] = (),
    audio: Mapping[str, np.ndarray] | None = None,
    features: Mapping[str, np.ndarray] | None = None,
    notes: Sequence[str] = (),
) -> Corpus:
    """Attach videos (or features) to the examples of each split, check them, make the meta split, tokenize.

    Args:
        fmt: the format's name (in messages and the provenance).
        root: the dataset's root folder.
        examples: the examples of each split (``train``, ``test`` and optionally ``val``).
        options: the reader's options.
        tokenizer: tokenizes every text.
        default_videos: the format's video folder, relative to ``root``, when ``options.videos`` is unset.
        annotation_file: the file the examples came from (named in the coverage report).
        spans: per example id with a span, ``(start, end)`` in seconds (YouCook2's segments).
        answers: the answer vocabulary (QA formats).
        audio: per example id, its audio array (CMU-MOSI).
        features: the features of each video when the format carries them itself (CMU-MOSI's ``vision``).
        notes: what the format's reader noticed already (added to the report).

    Returns:
        the corpus; :attr:`Corpus.report` lists captions without video, videos without captions and skipped
        videos (each also issued as a warning).
    """
    spans = spans or {}
    report: list[str] = list(notes)
    if features is None and options.features is not None:
        location = need(root, options.features, fmt, "data.features: a feature pickle or a folder of .npy")
        all_ids = sorted({e.video_id for split in examples.values() for e in split})
        features = load_feature_folder(location, all_ids) if location.is_dir() else load_feature_pickle(location)
    video_dir = None if features is not None else need(root, options.videos or default_videos, fmt, "the videos")

    def span_rows(key: str) -> tuple[int | None, int | None]:
        if key not in spans:
            return None, None
        start, end = spans[key]
        return math.floor(start * options.feature_fps), math.ceil(end * options.feature_fps)

    kept: dict[str, list[tuple[Example, Any]]] = {}
    missing: list[str] = []
    bad: dict[Path, str] = {}
    for name, split in examples.items():
        kept[name] = []
        for example in split:
            key = _key(example)
            if features is not None:
                if example.video_id not in features:
                    missing.append(example.video_id)
                    continue
                kept[name].append((example, (example.video_id, *span_rows(key))))
                continue
            path = find_video(video_dir, example.video_id)
            if path is None:
                missing.append(example.video_id)
                continue
            if options.verify_videos and path not in bad:
                reason = _probe(path)
                if reason is not None:
                    bad[path] = reason
            start, end = spans.get(key, (None, None))
            kept[name].append((example, VideoSpan(path, start, end)))
    where = "the features" if features is not None else str(video_dir)
    if missing:
        unique = sorted(set(missing))
        report.append(
            f"{fmt}: {len(unique)} video id(s) of {annotation_file} have no video in {where} (their "
            f"{len(missing)} example(s) dropped): {_first(unique)}"
        )
    used = {e.video_id for split in kept.values() for e, _ in split}
    available = (
        set(features)
        if features is not None
        else {p.stem for p in video_dir.iterdir() if p.is_file() and not p.name.startswith(".")}
    )
    unused = sorted(available - used - set(missing))
    if unused:
        report.append(
            f"{fmt}: {len(unused)} video(s) in {where} have no annotation in {annotation_file}: {_first(unused)}"
        )
    if bad:
        if options.on_bad_video == "raise":
            path, reason = next(iter(bad.items()))
            raise VideoDecodeError(
                f"{fmt}: {len(bad)} video(s) do not decode, first {reason}; fix or remove them, or set "
                "data.on_bad_video: skip to drop them"
            )
        report.append(f"{fmt}: {len(bad)} video(s) do not decode and were skipped: {_first([str(p) for p in bad])}")
        for name in kept:
            kept[name] = [(e, s) for e, s in kept[name] if not (isinstance(s, VideoSpan) and s.path in bad)]

    meta_record: dict[str, Any]
    if options.meta == "val":
        if "val" not in kept:
            raise ValueError(f"{fmt}: data.meta is 'val' but this format has no validation split; use meta: train")
        kept["meta"] = kept.pop("val")
        meta_record = {"from": "val"}
    else:
        train = kept["train"]
        chosen = set(carve_meta(len(train), options.meta_fraction, options.seed).tolist())
        kept["meta"] = [pair for i, pair in enumerate(train) if i in chosen]
        kept["train"] = [pair for i, pair in enumerate(train) if i not in chosen]
        meta_record = {
            "from": "train",
            "fraction": options.meta_fraction,
            "seed": options.seed,
            "ids": [e.video_id for e, _ in kept["meta"]],
        }
    splits = {}
    for name in ("train", "meta", "val", "test"):
        if name not in kept:
            continue
        pairs = kept[name]
        split_examples = [e for e, _ in pairs]
        if features is not None:
            source: Any = VideoFeatures(features, tuple(s for _, s in pairs), options.n_frames)
        else:
            source = VideoFiles(
                tuple(s for _, s in pairs), options.n_frames, options.image_size, options.mean, options.std
            )
        split_audio = None if audio is None else np.stack([audio[_key(e)] for e in split_examples])
        splits[name] = CorpusSplit(name, split_examples, source, tokenizer, options.lengths, split_audio)
    for line in report:
        warnings.warn(line, stacklevel=3)
    provenance = {
        "format": fmt,
        "root": str(root),
        "video": "features" if features is not None else "files",
        "meta": meta_record,
        "sizes": {name: len(split) for name, split in splits.items()},
    }
    info = CorpusInfo(fmt, options.image_size, options.n_frames, options.lengths)
    return Corpus(
        info, tokenizer, splits, answers=answers, provenance=provenance, report=report, num_workers=options.num_workers
    )


def _key(example: Example) -> str:
    return example.key or example.video_id
