"""CMU-MOSI as MMSA's processed pickle: sentiment regression from the transcript, visual and acoustic features.

File (under the dataset's root; ``file:`` names another)::

    Processed/unaligned_50.pkl   {"train" | "valid" | "test": {
                                     "id": [str], "raw_text": [str],
                                     "vision": float[N, T_v, D_v], "audio": float[N, T_a, D_a],
                                     "regression_labels": float[N] in [-3, 3],
                                     "vision_lengths": [int], "audio_lengths": [int]   (optional)}}

``raw_text`` (what the speaker says) is the transcript and the text; ``vision`` rows are the clip's ``video``
features (the first ``vision_lengths[i]`` rows, with a ``video_mask``); ``audio`` is the clip's ``audio``;
``regression_labels`` is the ``sentiment``. ``valid`` is the val split. The pickle is unpickled because you point
the reader at it; nothing is downloaded.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from meltr.data.formats.common import FormatError, ReadOptions, assemble, need, read_pickle
from meltr.data.formats.corpus import Corpus, Example, TextTokenizer
from meltr.data.formats.writing import WORLD_TO_BENCHMARK, ExportOptions, pixel_features, write_pickle

NAME = "mosi"
DEFAULT_FILE = "Processed/unaligned_50.pkl"
SPLITS = {"train": "train", "valid": "val", "test": "test"}
FIELDS = ("raw_text", "vision", "audio", "regression_labels")


def read_mosi(
    root: str | Path, tokenizer: TextTokenizer, options: ReadOptions | None = None, *, file: str = DEFAULT_FILE
) -> Corpus:
    """Read CMU-MOSI from MMSA's pickle (module docstring) into a :class:`~meltr.data.formats.corpus.Corpus`."""
    options = options or ReadOptions()
    root = Path(root)
    path = need(root, file, NAME, "MMSA's processed pickle")
    data = read_pickle(path)
    if not isinstance(data, dict):
        raise FormatError(f"{path}: top level: expected {{train, valid, test}}, got {type(data).__name__}")
    examples, vision, audio = {}, {}, {}
    for source, split in SPLITS.items():
        if source not in data:
            raise FormatError(f"{path}: top level: missing split {source!r}")
        table = data[source]
        for name in FIELDS:
            if not isinstance(table, dict) or name not in table:
                raise FormatError(f"{path}: [{source!r}]: missing field {name!r}")
        count = len(table["raw_text"])
        for name in (*FIELDS, "id", "vision_lengths"):
            if name in table and len(table[name]) != count:
                raise FormatError(f"{path}: [{source!r}]: field {name!r} has {len(table[name])} rows, raw_text {count}")
        ids = [str(i) for i in table.get("id", [f"{source}_{k}" for k in range(count)])]
        lengths = table.get("vision_lengths", [len(table["vision"][k]) for k in range(count)])
        examples[split] = []
        for k in range(count):
            label = float(table["regression_labels"][k])
            if not (math.isfinite(label) and -3.0 <= label <= 3.0):
                raise FormatError(
                    f"{path}: [{source!r}] row {k}: field 'regression_labels' = {label} is not in [-3, 3]"
                )
            length = int(lengths[k])
            if length < 1:
                raise FormatError(f"{path}: [{source!r}] row {k}: field 'vision_lengths' = {length} is not positive")
            vision[ids[k]] = np.asarray(table["vision"][k], dtype=np.float32)[:length]
            audio[ids[k]] = np.asarray(table["audio"][k], dtype=np.float32)
            examples[split].append(Example(ids[k], transcript=str(table["raw_text"][k]).strip(), sentiment=label))
    return assemble(
        NAME,
        root,
        examples,
        options,
        tokenizer,
        default_videos="",
        annotation_file=path.name,
        audio=audio,
        features=vision,
    )


def export_mosi(world, out: Path, options: ExportOptions, file: str = DEFAULT_FILE) -> list[Path]:
    """Write ``world``'s train / meta / test as MMSA's pickle (meta -> ``valid``): ``raw_text`` the transcript,
    ``vision`` each frame's pixels flattened in ``[0, 1]``, ``audio`` the signal cut into one row per frame,
    ``regression_labels`` the sentiment."""
    benchmark = {value: key for key, value in SPLITS.items()}
    data = {}
    for world_split, split_name in WORLD_TO_BENCHMARK.items():
        split = world[world_split]
        frames = split.video.shape[1]
        data[benchmark[split_name]] = {
            "id": [f"{split_name}_{i:05d}$_$0" for i in range(len(split))],
            "raw_text": list(split.transcripts),
            "vision": np.stack([pixel_features(v) for v in split.video]) if len(split) else np.zeros((0, frames, 0)),
            "audio": split.audio.reshape(len(split), frames, -1),
            "regression_labels": split.sentiment.astype(np.float32),
            "vision_lengths": [frames] * len(split),
            "audio_lengths": [frames] * len(split),
        }
    write_pickle(out / file, data)
    return sorted(out.iterdir())
