"""The fixed inventory of the synthetic world: attributes, events, classes, answers and their words.

Everything a clip can be made of, and every word the world's language can produce, is listed here, so that the
vocabulary, the answer vocabulary and the event classes do not depend on the seed or the split sizes.
"""

from __future__ import annotations

SHAPES: tuple[str, ...] = ("square", "circle", "triangle", "cross")
"""Object shapes; within a clip the shape identifies an object (no two objects share a shape)."""

COLOURS: tuple[str, ...] = ("red", "green", "blue", "yellow", "purple", "white")
"""Object colours, rendered with :data:`PALETTE`."""

PALETTE: dict[str, tuple[float, float, float]] = {
    "red": (0.92, 0.12, 0.12),
    "green": (0.12, 0.78, 0.22),
    "blue": (0.20, 0.38, 1.00),
    "yellow": (0.98, 0.86, 0.10),
    "purple": (0.68, 0.22, 0.88),
    "white": (0.96, 0.96, 0.96),
}
"""RGB in [0, 1] of each colour, far apart so that the nearest palette entry identifies a noisy pixel."""

SIZES: tuple[str, ...] = ("small", "large")
"""Object sizes; the half-width of an object is :data:`SIZE_FRACTION` of the frame width."""

SIZE_FRACTION: dict[str, float] = {"small": 0.10, "large": 0.17}

DIRECTIONS: tuple[str, ...] = ("left", "right", "up", "down")

NUMBER_WORDS: dict[int, str] = {0: "zero", 1: "one", 2: "two", 3: "three", 4: "four"}

REPEAT_COUNTS: tuple[int, ...] = (2, 3, 4)
"""How many times a repeated action can happen (``2 * count`` frames are needed to show it)."""

EVENT_KINDS: tuple[str, ...] = (
    "move",
    "turn",
    "grow",
    "shrink",
    "appear",
    "vanish",
    "jump",
    "blink",
    "shake",
)
"""What an object can do. ``turn`` changes colour; ``jump``, ``blink`` and ``shake`` are repeated actions."""

REPEATED_KINDS: frozenset[str] = frozenset({"jump", "blink", "shake"})

EVENT_CLASSES: tuple[str, ...] = (*(f"move_{d}" for d in DIRECTIONS), *(k for k in EVENT_KINDS if k != "move"))
"""The clip label: the class of the first event of the clip's subject (12 classes): ``move`` split by its direction
(``move_left``, ``move_right``, ``move_up``, ``move_down``), then the other kinds in :data:`EVENT_KINDS`' order."""

QA_TYPES: tuple[str, ...] = ("action", "transition", "frame", "open")
"""QA sub-tasks: TGIF-QA Action (which repeated action / how many times), Transition (what happens before or
after), Frame (answerable from one frame) and MSVD-QA-style open-ended questions."""

CHANGE_WORDS: tuple[str, ...] = ("bigger", "smaller")

ANSWERS: tuple[str, ...] = (
    *SHAPES,
    *COLOURS,
    *SIZES,
    *DIRECTIONS,
    *(NUMBER_WORDS[n] for n in (1, 2, 3, 4)),
    *EVENT_KINDS,
    *CHANGE_WORDS,
)
"""The fixed answer vocabulary: every QA answer is one of these words (index = the ``answer`` target)."""

ANSWER_INDEX: dict[str, int] = {word: i for i, word in enumerate(ANSWERS)}

COLOUR_VALENCE: dict[str, float] = {
    "red": -1.0,
    "green": 0.5,
    "blue": 0.25,
    "yellow": 1.0,
    "purple": -0.5,
    "white": 0.0,
}
"""How pleasant a colour looks (the video part of the sentiment score)."""

EVENT_VALENCE: dict[str, float] = {
    "move": 0.0,
    "turn": 0.0,  # a colour change is scored by the colours before and after
    "grow": 0.75,
    "shrink": -0.75,
    "appear": 1.0,
    "vanish": -1.0,
    "jump": 1.0,
    "blink": 0.0,
    "shake": -1.0,
}
"""How pleasant an event looks (the video part of the sentiment score)."""

OPINION_WORDS: dict[str, float] = {
    "wonderful": 2.0,
    "lovely": 2.0,
    "great": 1.5,
    "nice": 1.0,
    "good": 1.0,
    "pleasant": 1.0,
    "okay": 0.0,
    "fine": 0.0,
    "plain": 0.0,
    "dull": -1.0,
    "boring": -1.0,
    "bad": -1.0,
    "ugly": -1.5,
    "awful": -2.0,
    "terrible": -2.0,
}
"""Sentiment adjectives of the transcript and their valence (the text part of the sentiment score)."""

INTENSIFIERS: tuple[str, ...] = ("really", "very")
INTENSIFIER_GAIN = 1.5
NEGATION_GAIN = -0.5
"""``not good`` counts as ``-0.5 * valence(good)``, ``really good`` as ``1.5 * valence(good)``."""
