"""Video files in and out: PyAV decoding and encoding, frame sampling, resize / crop, pre-extracted features.

PyAV (the ``av`` package, extra ``meltr[video]``) ships FFmpeg inside its wheel; torchvision's video I/O and
torchcodec do not work with the CPU torch build this project pins. Everything here is picklable and draws its
randomness from ``(seed, epoch, index)`` only, so it runs the same in ``DataLoader`` workers as in the main process.

Frame sampling follows the papers' code: ``uniform`` (evaluation) takes the middle frame of each of ``n`` equal
segments of the clip; ``random`` (training) takes one frame drawn uniformly inside each segment (TSN's sparse
sampling, as Violet and All-in-one train). A clip shorter than ``n`` frames repeats frames in order.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F

from meltr.data.dataset import mix_seed

VIDEO_SUFFIXES: tuple[str, ...] = (".mp4", ".webm", ".avi", ".gif", ".mkv", ".mov")
"""File endings the video readers look for, in this order, when an annotation names a video without one."""

SAMPLING_MODES: tuple[str, ...] = ("uniform", "random")


class VideoDecodeError(RuntimeError):
    """A video file could not be decoded; the message names the file and what failed."""


def _require_av():
    try:
        import av
    except ImportError as error:  # pragma: no cover - the dev extra installs av
        raise ImportError(
            "reading or writing video files needs PyAV: pip install 'meltr[video]' (or pip install av)"
        ) from error
    return av


def write_video(path: str | Path, frames: np.ndarray, *, fps: int = 1, lossless: bool = True) -> Path:
    """Encode uint8 frames ``[F, 3, H, W]`` into an H.264 video file.

    ``lossless=True`` uses ``libx264rgb`` at ``crf 0`` in ``rgb24``: decoding gives back the exact bytes.
    ``lossless=False`` uses ordinary ``libx264`` ``yuv420p`` at ``crf 18`` (what cameras and web video use; the
    chroma is subsampled, so ``H`` and ``W`` must be even and pixels come back within a few levels).

    Args:
        path: the file to write (``.mp4``; parent directories are created).
        frames: uint8 ``[F, 3, H, W]``.
        fps: frames per second (frame ``i`` is at ``i / fps`` seconds).
        lossless: the codec, see above.

    Returns:
        ``path``.
    """
    av = _require_av()
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[1] != 3:
        raise ValueError(f"write_video: frames must be uint8 [F, 3, H, W], got {frames.dtype} {frames.shape}")
    height, width = frames.shape[2:]
    if not lossless and (height % 2 or width % 2):
        raise ValueError(f"write_video: yuv420p needs an even frame size, got {height}x{width}; use lossless=True")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264rgb" if lossless else "libx264", rate=fps)
        stream.width, stream.height = width, height
        stream.pix_fmt = "rgb24" if lossless else "yuv420p"
        stream.options = {"crf": "0" if lossless else "18"}
        for frame in frames:
            image = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame.transpose(1, 2, 0)), format="rgb24")
            container.mux(stream.encode(image))
        container.mux(stream.encode())
    return path


def _decoded_frames(path: Path, start: float | None, end: float | None) -> list:
    """The decoded ``av.VideoFrame`` objects of ``[start, end)`` seconds (all without a span), in order.

    Frames stay in their decoded pixel format: converting only the sampled ones to RGB is most of the saving
    when a long video gives a few frames. A span that starts late seeks to the key frame before it first.
    """
    av = _require_av()
    if not path.is_file():
        raise VideoDecodeError(f"{path}: no such video file")
    frames = []
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise VideoDecodeError(f"{path}: the file has no video stream")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            if start and stream.time_base is not None:
                container.seek(int(start / stream.time_base), stream=stream, backward=True, any_frame=False)
            for frame in container.decode(stream):
                time = frame.time if frame.time is not None else 0.0
                if start is not None and time < start - 1e-6:
                    continue
                if end is not None and time >= end - 1e-6:
                    break
                frames.append(frame)
    except VideoDecodeError:
        raise
    except Exception as error:  # FFmpeg raises many kinds (InvalidDataError, EOFError, ...)
        raise VideoDecodeError(f"{path}: cannot decode ({type(error).__name__}: {error})") from error
    if not frames:
        span = "" if start is None and end is None else f" in [{start}, {end}) s"
        raise VideoDecodeError(f"{path}: no frame decoded{span}")
    return frames


def _rgb(frame) -> np.ndarray:
    # libx264rgb decodes to planar gbrp, which PyAV hands out as RGB without a swscale pass
    return frame.to_ndarray() if frame.format.name in ("rgb24", "gbrp") else frame.to_ndarray(format="rgb24")


def decode_video(path: str | Path, start: float | None = None, end: float | None = None) -> np.ndarray:
    """Every frame of a video file (or of the time span ``[start, end)`` in seconds) as uint8 ``[N, H, W, 3]``.

    Raises:
        VideoDecodeError: the file is missing, is not a video FFmpeg can decode, or has no frame in the span;
            the message names the file.
    """
    return np.stack([_rgb(frame) for frame in _decoded_frames(Path(path), start, end)])


def sample_video(
    path: str | Path,
    count: int,
    mode: str,
    rng: np.random.Generator | None = None,
    start: float | None = None,
    end: float | None = None,
) -> np.ndarray:
    """``count`` frames of a video file (or of its span) chosen by :func:`frame_indices`, uint8 ``[count, H, W, 3]``.

    Raises:
        VideoDecodeError: as :func:`decode_video`.
    """
    frames = _decoded_frames(Path(path), start, end)
    chosen = frame_indices(len(frames), count, mode, rng)
    return np.stack([_rgb(frames[i]) for i in chosen])


def frame_indices(total: int, count: int, mode: str, rng: np.random.Generator | None = None) -> np.ndarray:
    """Which ``count`` of ``total`` frames to take: one per equal segment ``[floor(i T / n), floor((i+1) T / n))``.

    ``uniform`` takes each segment's middle frame ``floor((i + 1/2) T / n)``; ``random`` a frame drawn uniformly
    in each segment. When ``T < n`` segments hold one frame or none: frame ``floor(i T / n)`` is repeated.

    Returns:
        int64 ``[count]``, non-decreasing, in ``[0, total)``.
    """
    if total < 1 or count < 1:
        raise ValueError(f"frame_indices: need total >= 1 and count >= 1, got total={total}, count={count}")
    if mode not in SAMPLING_MODES:
        raise ValueError(f"frame sampling must be one of {SAMPLING_MODES}, got {mode!r}")
    starts = np.arange(count) * total // count
    stops = np.maximum((np.arange(count) + 1) * total // count, starts + 1)
    if mode == "uniform":
        return ((2 * np.arange(count) + 1) * total // (2 * count)).astype(np.int64)
    if rng is None:
        raise ValueError("frame_indices: random sampling needs an rng")
    return (starts + rng.integers(0, stops - starts)).astype(np.int64)


def resize_crop(
    frames: np.ndarray, size: int, *, crop: str = "center", rng: np.random.Generator | None = None
) -> Tensor:
    """uint8 ``[N, H, W, 3]`` -> float32 ``[N, 3, size, size]`` in ``[0, 1]``.

    The shorter side is resized to ``size`` (bilinear, antialiased) and a ``size x size`` square is cropped, at
    the centre (``crop="center"``, evaluation) or at a position drawn from ``rng`` (``crop="random"``, training).
    Frames already ``size x size`` are only divided by 255, so a lossless round trip stays exact.
    """
    video = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float().div_(255.0)
    height, width = video.shape[-2:]
    if (height, width) == (size, size):
        return video
    scale = size / min(height, width)
    new_h, new_w = max(size, round(height * scale)), max(size, round(width * scale))
    video = F.interpolate(video, size=(new_h, new_w), mode="bilinear", antialias=True, align_corners=False)
    if crop == "random":
        if rng is None:
            raise ValueError("resize_crop: a random crop needs an rng")
        top, left = int(rng.integers(0, new_h - size + 1)), int(rng.integers(0, new_w - size + 1))
    else:
        top, left = (new_h - size) // 2, (new_w - size) // 2
    return video[..., top : top + size, left : left + size].clamp_(0.0, 1.0)


def find_video(directory: Path, name: str) -> Path | None:
    """``directory / name`` if it exists, else the first ``directory / (name + suffix)`` of :data:`VIDEO_SUFFIXES`."""
    exact = directory / name
    if exact.suffix and exact.is_file():
        return exact
    for suffix in VIDEO_SUFFIXES:
        candidate = directory / f"{name}{suffix}"
        if candidate.is_file():
            return candidate
    return None


@dataclass(frozen=True)
class VideoSpan:
    """One sample's video: a file and, for a segment of a longer video (YouCook2), its span in seconds."""

    path: Path
    start: float | None = None
    end: float | None = None


@dataclass(frozen=True)
class VideoFiles:
    """Decode one clip per sample from video files (``video`` in ``[0, 1]``, ``[n_frames, 3, size, size]``).

    Args:
        spans: the file (and span) of each clip.
        n_frames: frames per clip.
        image_size: side of the square frames.
        mean, std: optional per-channel normalisation ``(x - mean) / std`` after scaling to ``[0, 1]`` (e.g.
            CLIP's for Hugging Face towers); the reference backbones take ``[0, 1]`` and leave these ``None``.
    """

    spans: tuple[VideoSpan, ...]
    n_frames: int
    image_size: int
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None

    def __len__(self) -> int:
        return len(self.spans)

    def read(self, index: int, *, train: bool, seed: int = 0, epoch: int = 0) -> dict[str, Tensor]:
        """``{"video": float32 [n_frames, 3, S, S]}`` of clip ``index``; random frames and crop when ``train``.

        Raises:
            VideoDecodeError: the file cannot be decoded (the message names it).
        """
        span = self.spans[index]
        rng = np.random.default_rng(mix_seed(seed, epoch, index, 0x71DE0)) if train else None
        mode = "random" if train else "uniform"
        chosen = sample_video(span.path, self.n_frames, mode, rng, span.start, span.end)
        video = resize_crop(chosen, self.image_size, crop="random" if train else "center", rng=rng)
        if self.mean is not None:
            mean = torch.tensor(self.mean).view(1, 3, 1, 1)
            std = torch.tensor(self.std if self.std is not None else (1.0, 1.0, 1.0)).view(1, 3, 1, 1)
            video = (video - mean) / std
        return {"video": video}


@dataclass(frozen=True)
class VideoFeatures:
    """Pre-extracted per-second features (UniVL's S3D) as the ``video`` of a sample, with a ``video_mask``.

    A clip's features ``[T, D]`` (the rows ``[start, end)`` of its video's for a segment) become ``video``
    ``[max_frames, D]``: clips longer than ``max_frames`` keep ``max_frames`` rows sampled like frames
    (:func:`frame_indices`), shorter ones are zero-padded and ``video_mask`` is False on the padding.

    Args:
        features: the feature array of each video, by video id.
        keys: per sample, its video id and its row span ``(start, end)`` (``None``: every row).
        max_frames: rows per sample.
    """

    features: Mapping[str, np.ndarray]
    keys: tuple[tuple[str, int | None, int | None], ...]
    max_frames: int

    def __len__(self) -> int:
        return len(self.keys)

    def read(self, index: int, *, train: bool, seed: int = 0, epoch: int = 0) -> dict[str, Tensor]:
        """``{"video": float32 [max_frames, D], "video_mask": bool [max_frames]}`` of sample ``index``."""
        video_id, start, end = self.keys[index]
        rows = np.asarray(self.features[video_id], dtype=np.float32)[start:end]
        if len(rows) == 0:
            raise VideoDecodeError(f"features of video {video_id!r}: no row in [{start}, {end})")
        if len(rows) > self.max_frames:
            rng = np.random.default_rng(mix_seed(seed, epoch, index, 0x71DE0)) if train else None
            rows = rows[frame_indices(len(rows), self.max_frames, "random" if train else "uniform", rng)]
        video = torch.zeros(self.max_frames, rows.shape[1])
        video[: len(rows)] = torch.from_numpy(rows)
        mask = torch.zeros(self.max_frames, dtype=torch.bool)
        mask[: len(rows)] = True
        return {"video": video, "video_mask": mask}
