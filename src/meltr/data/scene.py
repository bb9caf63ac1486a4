"""Scenes of the synthetic world: objects, their events over time, and the per-frame tracks they imply.

A scene has one *subject* (the object the captions and questions are about) and up to two *distractors*. No
two objects of a scene share a shape, so "the circle" always names one object. The subject does one or two
events (or one repeated action); a distractor stays (nearly) still or does one event of a kind the subject
does not do.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from meltr.data.lexicon import (
    COLOUR_VALENCE,
    COLOURS,
    DIRECTIONS,
    EVENT_CLASSES,
    EVENT_KINDS,
    EVENT_VALENCE,
    REPEAT_COUNTS,
    REPEATED_KINDS,
    SHAPES,
    SIZE_FRACTION,
    SIZES,
)

MOVE_DISTANCE = (0.30, 0.42)
"""Range of the distance travelled by a ``move``, as a fraction of the frame width."""
JUMP_HEIGHT = 0.20
SHAKE_OFFSET = 0.12
DRIFT_SPEED = 0.35
"""Largest drift of a still distractor, in pixels per frame at 32 px (motion clutter, not an event)."""

_UNIT = {"left": (-1.0, 0.0), "right": (1.0, 0.0), "up": (0.0, -1.0), "down": (0.0, 1.0)}


@dataclass(frozen=True)
class Event:
    """Something an object does over the frames ``[start, end)``.

    Args:
        kind: one of :data:`~meltr.data.lexicon.EVENT_KINDS`.
        start: first frame of the event.
        end: one past its last frame.
        direction: for ``move``, one of :data:`~meltr.data.lexicon.DIRECTIONS`.
        colour: for ``turn``, the colour the object turns into.
        count: for a repeated action (``jump``, ``blink``, ``shake``), how many times; it spans ``2 * count``
            frames, the action happening on every other frame.
        distance: for ``move``, the distance travelled as a fraction of the frame width.
    """

    kind: str
    start: int
    end: int
    direction: str | None = None
    colour: str | None = None
    count: int | None = None
    distance: float = 0.0

    @property
    def event_class(self) -> str:
        """The class name of the event (:data:`~meltr.data.lexicon.EVENT_CLASSES`)."""
        return f"move_{self.direction}" if self.kind == "move" else self.kind

    @property
    def switch_frame(self) -> int:
        """The frame where an instantaneous change (turn, appear, vanish) has happened."""
        return self.start + (self.end - self.start) // 2


@dataclass(frozen=True)
class SceneObject:
    """An object: its attributes at the first frame, where it starts and what it does.

    Args:
        shape: one of :data:`~meltr.data.lexicon.SHAPES`.
        colour: colour at the first frame.
        size: size at the first frame (``small`` or ``large``).
        x: horizontal centre at the first frame, as a fraction of the frame width.
        y: vertical centre at the first frame, as a fraction of the frame height (0 = top).
        events: what the object does, in time order and non-overlapping.
        drift: per-frame displacement of a still object, as a fraction of the frame width per frame.
        tint: a small per-object offset added to the palette colour, so colours are not exact.
    """

    shape: str
    colour: str
    size: str
    x: float
    y: float
    events: tuple[Event, ...] = ()
    drift: tuple[float, float] = (0.0, 0.0)
    tint: tuple[float, float, float] = (0.0, 0.0, 0.0)

    @property
    def final_colour(self) -> str:
        """The colour at the last frame."""
        colour = self.colour
        for event in self.events:
            if event.kind == "turn":
                colour = event.colour
        return colour

    @property
    def final_size(self) -> str:
        """The size at the last frame."""
        size = self.size
        for event in self.events:
            if event.kind in ("grow", "shrink"):
                size = "large" if event.kind == "grow" else "small"
        return size


@dataclass(frozen=True)
class Scene:
    """A clip's content: the subject, the distractors and the background.

    Args:
        subject: the object the captions and the questions are about.
        distractors: the other objects (drawn under the subject).
        background: per-clip parameters of the background (base colour, gradient, gratings).
        n_frames: frames of the clip.
    """

    subject: SceneObject
    distractors: tuple[SceneObject, ...]
    background: tuple[float, ...]
    n_frames: int

    @cached_property
    def tracks(self) -> tuple[Track, ...]:
        """The track of every object (drawing order) in units of the frame width (times the image size)."""
        return tuple(object_track(obj, self.n_frames, 1.0) for obj in self.objects)

    @property
    def objects(self) -> tuple[SceneObject, ...]:
        """All objects in drawing order: distractors first, the subject last (on top)."""
        return (*self.distractors, self.subject)

    @property
    def label(self) -> int:
        """Index in :data:`~meltr.data.lexicon.EVENT_CLASSES` of the subject's first event."""
        return EVENT_CLASSES.index(self.subject.events[0].event_class)

    def video_valence(self) -> float:
        """How pleasant the clip looks: the valence of the subject's events and colours.

        ``sum_e EVENT_VALENCE[e] + (cv(c_first) + cv(c_last)) / 2 + [turn] * (cv(c_last) - cv(c_first))`` with
        ``cv`` the colour valence: a colour change counts by whether it goes to a nicer colour.
        """
        subject = self.subject
        first, last = COLOUR_VALENCE[subject.colour], COLOUR_VALENCE[subject.final_colour]
        valence = sum(EVENT_VALENCE[e.kind] for e in subject.events) + 0.5 * (first + last)
        if any(e.kind == "turn" for e in subject.events):
            valence += last - first
        return float(valence)


@dataclass(frozen=True)
class Track:
    """Where an object is and how it looks at every frame (pixel units).

    Attributes:
        x, y: centre, float ``[F]``.
        half: half-width, float ``[F]``.
        colour: index in :data:`~meltr.data.lexicon.COLOURS`, int ``[F]``.
        visible: bool ``[F]``.
    """

    x: np.ndarray
    y: np.ndarray
    half: np.ndarray
    colour: np.ndarray
    visible: np.ndarray


def progress(event: Event, n_frames: int) -> np.ndarray:
    """How far a gradual event has gone at each frame: 0 up to ``start``, 1 from ``end - 1`` on."""
    t = np.arange(n_frames, dtype=np.float64)
    return np.minimum(np.maximum((t - event.start) / max(event.end - 1 - event.start, 1), 0.0), 1.0)


def repeat_frames(event: Event, n_frames: int) -> np.ndarray:
    """The frames (bool ``[F]``) on which a repeated action happens: every other frame from ``start``."""
    t = np.arange(n_frames)
    return (t >= event.start) & (t < event.start + 2 * event.count) & ((t - event.start) % 2 == 0)


def object_track(obj: SceneObject, n_frames: int, image_size: float) -> Track:
    """The per-frame track of ``obj`` in a clip of ``n_frames`` frames of ``image_size`` pixels.

    Gradual events (move, grow, shrink) interpolate linearly from the event's first frame (initial state) to
    its last frame (final state) and keep their effect afterwards; turn, appear and vanish switch at
    :attr:`Event.switch_frame`; repeated actions act on every other frame of their window and leave no trace.
    """
    t = np.arange(n_frames, dtype=np.float64)
    x = np.full(n_frames, obj.x * image_size) + obj.drift[0] * image_size * t
    y = np.full(n_frames, obj.y * image_size) + obj.drift[1] * image_size * t
    half = np.full(n_frames, SIZE_FRACTION[obj.size] * image_size)
    colour = np.full(n_frames, COLOURS.index(obj.colour), dtype=np.int64)
    visible = np.ones(n_frames, dtype=bool)
    small, large = SIZE_FRACTION["small"] * image_size, SIZE_FRACTION["large"] * image_size
    for event in obj.events:
        if event.kind == "move":
            ux, uy = _UNIT[event.direction]
            p = progress(event, n_frames) * event.distance * image_size
            x, y = x + ux * p, y + uy * p
        elif event.kind == "grow":
            half = np.where(t >= event.start, small + (large - small) * progress(event, n_frames), half)
        elif event.kind == "shrink":
            half = np.where(t >= event.start, large + (small - large) * progress(event, n_frames), half)
        elif event.kind == "turn":
            colour = np.where(t >= event.switch_frame, COLOURS.index(event.colour), colour)
        elif event.kind == "appear":
            visible = visible & (t >= event.switch_frame)
        elif event.kind == "vanish":
            visible = visible & (t < event.switch_frame)
        elif event.kind == "jump":
            y = y - repeat_frames(event, n_frames) * JUMP_HEIGHT * image_size
        elif event.kind == "shake":
            x = x + repeat_frames(event, n_frames) * SHAKE_OFFSET * image_size
        elif event.kind == "blink":
            visible = visible & ~repeat_frames(event, n_frames)
    return Track(x=x, y=y, half=half, colour=colour, visible=visible)


def sample_scene(
    rng: random.Random, n_frames: int, max_objects: int, two_event_prob: float, distractor_event_prob: float
) -> Scene:
    """Draw a scene: the subject's first event class is uniform over the 12 classes (balanced labels).

    Args:
        rng: the clip's own random stream.
        n_frames: frames of the clip.
        max_objects: most objects (subject included).
        two_event_prob: probability of a second subject event when the first allows one.
        distractor_event_prob: probability that a distractor does an event.
    """
    first_class = rng.choice(EVENT_CLASSES)
    shape = rng.choice(SHAPES)
    colour = rng.choice(COLOURS)
    size = {"grow": "small", "shrink": "large"}.get(first_class, rng.choice(SIZES))
    kind = "move" if first_class.startswith("move_") else first_class
    direction = first_class[5:] if kind == "move" else None
    half = n_frames // 2
    if kind in REPEATED_KINDS:
        events = (_repeated_event(rng, kind, 0, n_frames),)
    elif kind != "vanish" and rng.random() < two_event_prob:
        first = _event(rng, kind, 0, half, colour=colour, direction=direction)
        resize = "grow" if _size_after(size, first) == "small" else "shrink"
        second_kind = rng.choice([k for k in ("move", "turn", "vanish", resize) if k != kind])
        current_colour = first.colour if first.kind == "turn" else colour
        events = (first, _event(rng, second_kind, half, n_frames, colour=current_colour))
    else:
        length = rng.randint(half, n_frames)
        start = rng.randint(0, n_frames - length)
        events = (_event(rng, kind, start, start + length, colour=colour, direction=direction),)

    taken_shapes = [shape]
    subject_kinds = {e.kind for e in events}
    subject = _place(rng, SceneObject(shape, colour, size, 0.0, 0.0, events, tint=_tint(rng)), n_frames, [])
    distractors: list[SceneObject] = []
    for _ in range(rng.randint(0, max_objects - 1)):
        d_shape = rng.choice([s for s in SHAPES if s not in taken_shapes])
        taken_shapes.append(d_shape)
        d_colour, d_size = rng.choice(COLOURS), rng.choice(SIZES)
        d_events: tuple[Event, ...] = ()
        drift = (0.0, 0.0)
        if rng.random() < distractor_event_prob:
            d_kind = rng.choice([k for k in EVENT_KINDS if k not in subject_kinds])
            d_size = {"grow": "small", "shrink": "large"}.get(d_kind, d_size)
            if d_kind in REPEATED_KINDS:
                d_events = (_repeated_event(rng, d_kind, 0, n_frames),)
            else:
                length = rng.randint(half, n_frames)
                start = rng.randint(0, n_frames - length)
                d_events = (_event(rng, d_kind, start, start + length, colour=d_colour),)
        else:
            scale = DRIFT_SPEED / 32.0
            drift = (rng.uniform(-scale, scale), rng.uniform(-scale, scale))
        candidate = SceneObject(d_shape, d_colour, d_size, 0.0, 0.0, d_events, drift, _tint(rng))
        distractors.append(_place(rng, candidate, n_frames, [subject, *distractors]))
    background = _background(rng)
    return Scene(subject=subject, distractors=tuple(distractors), background=background, n_frames=n_frames)


def _background(rng: random.Random) -> tuple[float, ...]:
    """Base RGB, horizontal and vertical gradient, then (frequency, angle, phase, speed) of two gratings."""
    base = [rng.uniform(0.06, 0.30) for _ in range(3)]
    gradient = [rng.uniform(-0.08, 0.08) for _ in range(2)]
    gratings = []
    for _ in range(2):
        gratings += [rng.uniform(0.15, 0.6), rng.uniform(0, 2 * np.pi), rng.uniform(0, 2 * np.pi)]
        gratings.append(rng.uniform(-0.6, 0.6))
    return (*base, *gradient, *gratings)


def _size_after(size: str, event: Event) -> str:
    return {"grow": "large", "shrink": "small"}.get(event.kind, size)


def _tint(rng: random.Random) -> tuple[float, float, float]:
    return (rng.uniform(-0.06, 0.06), rng.uniform(-0.06, 0.06), rng.uniform(-0.06, 0.06))


def _event(rng: random.Random, kind: str, start: int, end: int, *, colour: str, direction: str | None = None) -> Event:
    if kind == "move":
        return Event(
            "move",
            start,
            end,
            direction=direction or rng.choice(DIRECTIONS),
            distance=rng.uniform(*MOVE_DISTANCE),
        )
    if kind == "turn":
        return Event("turn", start, end, colour=rng.choice([c for c in COLOURS if c != colour]))
    return Event(kind, start, end)


def _repeated_event(rng: random.Random, kind: str, lo: int, hi: int) -> Event:
    count = rng.choice([c for c in REPEAT_COUNTS if 2 * c <= hi - lo])
    start = rng.randint(lo, hi - 2 * count)
    return Event(kind, start, start + 2 * count, count=count)


def _place(rng: random.Random, obj: SceneObject, n_frames: int, others: list[SceneObject]) -> SceneObject:
    """Choose the initial centre so that the object stays inside the frame at every frame.

    Tracks are affine in the initial position, so the feasible initial centres form a box; inside it, a
    distractor prefers a start away from the objects already placed (a few tries, then it takes what it has).
    """
    size = 1000  # fine grid: positions as fractions
    track = object_track(obj, n_frames, size)
    margin = track.half.max() / size + 0.03
    lo_x, hi_x = margin - track.x.min() / size, 1 - margin - track.x.max() / size
    lo_y, hi_y = margin - track.y.min() / size, 1 - margin - track.y.max() / size
    best, best_gap = None, -np.inf
    for _ in range(1 if not others else 8):
        x = rng.uniform(lo_x, hi_x) if lo_x < hi_x else 0.5 * (lo_x + hi_x)
        y = rng.uniform(lo_y, hi_y) if lo_y < hi_y else 0.5 * (lo_y + hi_y)
        gap = min(
            (np.hypot(x - o.x, y - o.y) - SIZE_FRACTION[o.size] - SIZE_FRACTION[obj.size] for o in others),
            default=np.inf,
        )
        if gap > best_gap:
            best, best_gap = (x, y), gap
        if gap > 0.02:
            break
    return SceneObject(obj.shape, obj.colour, obj.size, float(best[0]), float(best[1]), obj.events, obj.drift, obj.tint)
