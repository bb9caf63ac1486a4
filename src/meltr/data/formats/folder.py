"""A folder of your own videos with a CSV or JSON of captions.

Files (under the dataset's root)::

    captions.csv     columns video, caption[, split]   (one row per caption; split: train, val or test)
    captions.json    or: [{"video": ..., "caption": ..., "split": ...}, ...]
    videos/          the files the ``video`` column names (with or without their ending: .mp4, .webm, .avi, .gif)

A video's captions are all its rows; a row without ``split`` is train. Give a video's rows one split.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from meltr.data.formats.common import FormatError, ReadOptions, assemble, entry_field, need, read_json, read_rows
from meltr.data.formats.corpus import Corpus, Example, TextTokenizer
from meltr.data.video import VIDEO_SUFFIXES

NAME = "folder"
SPLITS = ("train", "val", "test")


def read_folder(
    root: str | Path, tokenizer: TextTokenizer, options: ReadOptions | None = None, *, captions: str | None = None
) -> Corpus:
    """Read a folder of videos with captions (module docstring); ``captions`` names the file (default
    ``captions.csv``, else ``captions.json``)."""
    options = options or ReadOptions()
    root = Path(root)
    if captions is None:
        captions = (
            "captions.json"
            if (root / "captions.json").is_file() and not (root / "captions.csv").is_file()
            else "captions.csv"
        )
    path = need(root, captions, NAME, "the captions: columns video, caption[, split]")
    rows: list[tuple[str, dict]] = []
    if path.suffix == ".json":
        data = read_json(path)
        if not isinstance(data, list):
            raise FormatError(f"{path}: top level: expected a list of {{video, caption, split}}")
        for i, entry in enumerate(data):
            where = f"entry {i}"
            rows.append(
                (
                    where,
                    {
                        "video": str(entry_field(entry, "video", path, where)),
                        "caption": str(entry_field(entry, "caption", path, where)),
                        "split": str(entry.get("split") or "train"),
                    },
                )
            )
    else:
        rows = [
            (f"line {line}", {**row, "split": row.get("split") or "train"})
            for line, row in read_rows(path, ["video", "caption"])
        ]
    texts: dict[str, list[str]] = defaultdict(list)
    split_of: dict[str, str] = {}
    for where, row in rows:
        name = row["video"].strip()
        video_id = Path(name).stem if Path(name).suffix.lower() in VIDEO_SUFFIXES else name
        split = row["split"].strip()
        if split not in SPLITS:
            raise FormatError(f"{path}: {where}: field 'split' = {split!r} is not one of {list(SPLITS)}")
        if split_of.setdefault(video_id, split) != split:
            raise FormatError(f"{path}: {where}: field 'split': video {video_id!r} is already in {split_of[video_id]}")
        texts[video_id].append(row["caption"])
    examples: dict[str, list[Example]] = {split: [] for split in SPLITS}
    for video_id, captions_of in texts.items():
        examples[split_of[video_id]].append(Example(video_id, tuple(captions_of)))
    examples = {split: items for split, items in examples.items() if items or split == "train"}
    return assemble(NAME, root, examples, options, tokenizer, default_videos="videos", annotation_file=path.name)
