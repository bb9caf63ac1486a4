"""Pixels and sound of a batch of scenes, vectorised with numpy over clips, frames and pixels.

Video: a dark background (per-clip colour, gradient and two drifting gratings), the objects drawn with
hard-edged masks (distractors first, the subject on top), then per-pixel, per-frame Gaussian noise. Audio:
each event of each object is a tone with its own frequency and envelope (repeated actions give one beat per
repetition; the subject is louder than the distractors), plus a hum and Gaussian noise.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import numpy as np

from meltr.data.lexicon import COLOURS, PALETTE, SHAPES
from meltr.data.scene import Scene, repeat_frames

_PALETTE = np.array([PALETTE[c] for c in COLOURS], dtype=np.float32)

SUBJECT_LOUDNESS = 1.0
DISTRACTOR_LOUDNESS = 0.35

# Tones in cycles per sample (1024 samples a clip); ``_FLAT`` sounds through a frame, ``_BEAT`` decays in it.
_SILENT, _FLAT, _BEAT = 0, 1, 2
_MOVE_TONE = {"left": 0.030, "right": 0.040, "up": 0.052, "down": 0.064}
_BEAT_TONE = {"turn": 0.09, "appear": 0.11, "vanish": 0.13, "jump": 0.16, "blink": 0.20}
_SHAKE_TONE = 0.24
_RESIZE_TONES = (0.03, 0.10)


NOISE_BANK_SIZE = 1 << 22


@functools.cache
def _noise_bank() -> np.ndarray:
    return np.random.default_rng(0x5EED).standard_normal(NOISE_BANK_SIZE, dtype=np.float32)


def _noise_window(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Standard Gaussian noise of ``shape``: a window of a fixed bank of samples at a random offset.

    Ten times cheaper than drawing the samples; windows of two clips overlap (shifted) only by chance, which
    nothing downstream can exploit. Falls back to fresh draws when the window exceeds the bank.
    """
    count = math.prod(shape)
    if count > NOISE_BANK_SIZE // 4:
        return rng.standard_normal(shape, dtype=np.float32)
    start = int(rng.integers(NOISE_BANK_SIZE - count))
    return _noise_bank()[start : start + count].reshape(shape)


def shape_mask(shape: str, dx: np.ndarray, dy: np.ndarray, half: np.ndarray) -> np.ndarray:
    """Which pixels an object of ``shape`` covers, given offsets from its centre and its half-width.

    Args:
        shape: one of :data:`~meltr.data.lexicon.SHAPES`.
        dx, dy: pixel-centre offsets from the object's centre (y grows downwards), broadcastable.
        half: the half-width, broadcastable to ``dx``.
    """
    adx, ady = np.abs(dx), np.abs(dy)
    if shape == "square":
        return np.maximum(adx, ady) <= 0.88 * half
    if shape == "circle":
        return dx * dx + dy * dy <= half * half
    if shape == "triangle":  # apex up, base down, as wide as tall
        return (dy >= -half) & (dy <= half) & (adx <= 0.5 * (dy + half))
    if shape == "cross":
        arm = 0.36 * half
        return ((adx <= arm) & (ady <= half)) | ((ady <= arm) & (adx <= half))
    raise KeyError(f"unknown shape {shape!r}; choose one of: {', '.join(SHAPES)}")


def render_videos(
    scenes: Sequence[Scene],
    noise_rngs: Sequence[np.random.Generator],
    *,
    n_frames: int,
    image_size: int,
    pixel_noise: float,
    background_texture: float,
) -> np.ndarray:
    """Render clips to pixels.

    Args:
        scenes: the clips' content.
        noise_rngs: one generator per clip for its pixel noise (the clip's own stream).
        n_frames: frames per clip.
        image_size: height and width.
        pixel_noise: std of the per-pixel Gaussian noise.
        background_texture: amplitude of the drifting gratings.

    Returns:
        uint8 ``[N, F, 3, H, W]``.
    """
    n, size = len(scenes), image_size
    coords = np.arange(size, dtype=np.float32) + 0.5
    xx, yy = coords[None, :], coords[:, None]  # [1, W], [H, 1]
    u, v = xx / size - 0.5, yy / size - 0.5
    frames = np.arange(n_frames, dtype=np.float32)

    bg = np.array([s.background for s in scenes], dtype=np.float32).reshape(n, -1)
    # background [N, F, 1, H, W]: gradient plus two drifting gratings, then the base colour per channel
    shade = (bg[:, 3, None, None] * u + bg[:, 4, None, None] * v)[:, None]
    for g in range(2):
        freq, angle, phase, speed = (bg[:, 5 + 4 * g + i] for i in range(4))
        along = np.cos(angle)[:, None, None] * u + np.sin(angle)[:, None, None] * v  # [N, H, W]
        arg = (2 * np.pi * 8 * freq)[:, None, None, None] * along[:, None] + (phase[:, None] + speed[:, None] * frames)[
            :, :, None, None
        ]
        shade = shade + background_texture * np.sin(arg)
    image = shade[:, :, None] + bg[:, None, 0:3, None, None]  # [N, F, 3, H, W]

    slots = max(len(s.objects) for s in scenes)
    cx = np.zeros((n, slots, n_frames), np.float32)
    cy, half = np.zeros_like(cx), np.zeros_like(cx)
    rgb = np.zeros((n, slots, n_frames, 3), np.float32)
    visible = np.zeros((n, slots, n_frames), bool)
    shape_of = np.full((n, slots), -1)
    for i, scene in enumerate(scenes):
        offset = slots - len(scene.objects)  # right-align so the subject is always in the last slot
        for j, (obj, track) in enumerate(zip(scene.objects, scene.tracks, strict=True)):
            k = offset + j
            cx[i, k], cy[i, k], half[i, k] = track.x * size, track.y * size, track.half * size
            visible[i, k] = track.visible
            rgb[i, k] = _PALETTE[track.colour] + np.asarray(obj.tint, np.float32)
            shape_of[i, k] = SHAPES.index(obj.shape)
    # which object (slot) is on top at each pixel, -1 for the background; later slots cover earlier ones
    on_top = np.full((n, n_frames, size, size), -1, dtype=np.int8)
    for k in range(slots):
        for s, shape in enumerate(SHAPES):
            rows = np.flatnonzero(shape_of[:, k] == s)
            if rows.size == 0:
                continue
            dx = xx - cx[rows, k, :, None, None]  # [n_s, F, 1, W]
            dy = yy - cy[rows, k, :, None, None]  # [n_s, F, H, 1]
            mask = shape_mask(shape, dx, dy, half[rows, k, :, None, None])
            mask &= visible[rows, k, :, None, None]
            on_top[rows] = np.where(mask, np.int8(k), on_top[rows])
    covered = on_top >= 0
    clip, frame, row, col = np.nonzero(covered)
    image[clip, frame, :, row, col] = rgb[clip, on_top[clip, frame, row, col].astype(np.int64), frame]

    if pixel_noise > 0:
        image += pixel_noise * np.stack([_noise_window(rng, image.shape[1:]) for rng in noise_rngs])
    np.clip(image, 0.0, 1.0, out=image)
    image *= 255.0
    return np.rint(image, out=image).astype(np.uint8)


def audio_score(scene: Scene, n_frames: int) -> np.ndarray:
    """The per-frame "score" of a clip's sound: start / end frequency, loudness and envelope per object.

    Returns:
        float ``[K, F, 4]``: ``(f_start, f_end, amplitude, envelope)`` per object (drawing order) and frame.
    """
    score = np.zeros((len(scene.objects), n_frames, 4))
    frames = np.arange(n_frames)
    for k, obj in enumerate(scene.objects):
        loudness = SUBJECT_LOUDNESS if obj is scene.subject else DISTRACTOR_LOUDNESS
        for event in obj.events:
            if event.kind == "move":
                window = (frames >= event.start) & (frames < event.end)
                score[k, window] = (_MOVE_TONE[event.direction], _MOVE_TONE[event.direction], loudness, _FLAT)
            elif event.kind in ("grow", "shrink"):
                lo, hi = _RESIZE_TONES if event.kind == "grow" else _RESIZE_TONES[::-1]
                length = event.end - event.start
                for t in range(event.start, event.end):
                    a, b = (t - event.start) / length, (t + 1 - event.start) / length
                    score[k, t] = (lo + (hi - lo) * a, lo + (hi - lo) * b, loudness, _FLAT)
            elif event.kind in ("turn", "appear", "vanish"):
                tone = _BEAT_TONE[event.kind]
                score[k, min(event.switch_frame, n_frames - 1)] = (tone, tone, loudness, _BEAT)
            else:
                tone = _SHAKE_TONE if event.kind == "shake" else _BEAT_TONE[event.kind]
                envelope = _FLAT if event.kind == "shake" else _BEAT
                score[k, repeat_frames(event, n_frames)] = (tone, tone, loudness, envelope)
    return score


def render_audio(
    scenes: Sequence[Scene],
    noise_rngs: Sequence[np.random.Generator],
    *,
    n_frames: int,
    n_samples: int,
    audio_noise: float,
) -> np.ndarray:
    """Synthesize the clips' audio-like signals from their :func:`audio_score`.

    Sample ``n`` belongs to frame ``floor(n F / S)``; within a frame the frequency glides linearly from
    ``f_start`` to ``f_end``, the phase is the running sum of the frequency (no clicks at frame boundaries),
    and the envelope is flat or a decaying beat ``exp(-5 tau)``, ``tau`` the position in the frame.

    Returns:
        float32 ``[N, S]``.
    """
    n = len(scenes)
    slots = max(len(s.objects) for s in scenes)
    score = np.zeros((n, slots, n_frames, 4))
    for i, scene in enumerate(scenes):
        score[i, : len(scene.objects)] = audio_score(scene, n_frames)
    position = np.arange(n_samples) * n_frames / n_samples
    frame = position.astype(np.int64)
    tau = position - frame
    per_sample = score[:, :, frame]  # [N, K, S, 4]
    freq = per_sample[..., 0] + (per_sample[..., 1] - per_sample[..., 0]) * tau
    envelope = np.where(per_sample[..., 3] == _BEAT, np.exp(-5.0 * tau), (per_sample[..., 3] == _FLAT) * 1.0)
    phase = 2 * np.pi * np.cumsum(freq, axis=-1)
    signal = (per_sample[..., 2] * envelope * np.sin(phase)).sum(axis=1)
    samples = np.arange(n_samples)
    for i, rng in enumerate(noise_rngs):
        hum_freq, hum_phase = rng.uniform(0.002, 0.01), rng.uniform(0, 2 * np.pi)
        signal[i] += 0.3 * np.sin(2 * np.pi * hum_freq * samples + hum_phase)
        if audio_noise > 0:
            signal[i] += audio_noise * rng.standard_normal(n_samples)
    return signal.astype(np.float32)
