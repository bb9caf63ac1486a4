"""Helpers of the exporters: a world's splits written as a benchmark's files (video, features, tables)."""

from __future__ import annotations

import csv
import json
import pickle
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from meltr.data.video import write_video

WORLD_TO_BENCHMARK: dict[str, str] = {"train": "train", "meta": "val", "test": "test"}
"""Which split of a benchmark each world split is written as (the pretrain split is never exported)."""


@dataclass(frozen=True)
class ExportOptions:
    """How a world is written.

    Attributes:
        lossless: video files in lossless H.264 RGB (``libx264rgb``, crf 0: a round trip is exact) or in
            ordinary ``yuv420p`` (within a few levels).
        features: write a feature pickle (each frame's pixels flattened, in ``[0, 1]``: a stand-in for S3D
            features that a round trip can check exactly) instead of video files.
        fps: frames per second of the video files (and feature rows per second).
    """

    lossless: bool = True
    features: bool = False
    fps: int = 1


def pixel_features(video: np.ndarray) -> np.ndarray:
    """uint8 ``[F, 3, H, W]`` -> float32 ``[F, 3 H W]`` in ``[0, 1]`` (the exported stand-in for S3D features)."""
    return (video.reshape(len(video), -1).astype(np.float32) / 255.0).astype(np.float32)


def write_videos(directory: Path, videos: dict[str, np.ndarray], options: ExportOptions) -> None:
    """One ``{id}.mp4`` per entry of ``videos`` (uint8 ``[F, 3, H, W]``)."""
    for video_id, frames in videos.items():
        write_video(directory / f"{video_id}.mp4", frames, fps=options.fps, lossless=options.lossless)


def write_pickle(path: Path, value: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as handle:
        pickle.dump(value, handle, protocol=4)
    return path


def write_json(path: Path, value: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, indent=1) + "\n", encoding="utf-8")
    return path


def write_table(path: Path, columns: Sequence[str], rows: Sequence[Sequence[Any]], *, delimiter: str = ",") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, delimiter=delimiter, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows(rows)
    return path


def write_media(out: Path, videos: dict[str, np.ndarray], options: ExportOptions, *, folder: str, pickle_name: str):
    """Video files under ``out / folder``, or with ``options.features`` one feature pickle ``out / pickle_name``."""
    if options.features:
        write_pickle(out / pickle_name, {key: pixel_features(frames) for key, frames in videos.items()})
    else:
        write_videos(out / folder, videos, options)
