"""The world's language: captions from a grammar with paraphrases, a noisy ASR-like transcript, QA pairs and
the sentiment score.

Captions refer to the subject by a partial description (shape, colour and/or size at the first frame) and to
its events in time order, sometimes to only one of two events or without the count of a repeated action, and
sometimes to a distractor: many clips share a partial description, so retrieval has hard negatives. Each
caption comes with its *facts*, the set of things it asserts; a clip is consistent with a caption when the
caption's facts are a subset of :func:`scene_facts` of the clip (used to measure the ceiling of retrieval).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from meltr.data.lexicon import (
    ANSWER_INDEX,
    COLOURS,
    INTENSIFIER_GAIN,
    INTENSIFIERS,
    NEGATION_GAIN,
    NUMBER_WORDS,
    OPINION_WORDS,
    QA_TYPES,
    REPEATED_KINDS,
    SIZE_FRACTION,
)
from meltr.data.scene import Event, Scene, SceneObject

NP_FORM_PROBS = dict(
    zip(
        ("size colour shape", "colour shape", "size shape", "shape", "colour"),
        (0.45, 0.30, 0.10, 0.05, 0.10),
        strict=True,
    )
)
"""How a caption names the subject: which attributes (at the first frame) it mentions, and how often."""
LOCATION_PROB = 0.6
"""Probability that a caption also says where the subject starts (which third of the frame)."""
ONE_OF_TWO_PROB = 0.1
"""Probability that a caption of a two-event clip mentions only one of the events."""
VAGUE_PROB = 0.1
"""Probability that a caption leaves out a count or a target colour ("keeps jumping", "changes colour")."""
DISTRACTOR_PROB = 0.5
"""Probability that a caption of a clip with distractors also mentions one of them."""

Fact = tuple
"""One assertion: ``("shape", s)``, ``("colour", c)``, ``("size", z)``, ``("row", r)``, ``("col", c)``,
``("event", kind, param or None)``, ``("order", kind_1, kind_2)`` or
``("distractor", colour, shape, kind or "still" or None)``."""


@dataclass(frozen=True)
class QAPair:
    """A question about a clip with its one-word answer.

    Args:
        question: the question text.
        answer: one word of :data:`~meltr.data.lexicon.ANSWERS`.
        qa_type: one of :data:`~meltr.data.lexicon.QA_TYPES`.
        frame: for a Frame question, the frame that answers it; ``None`` otherwise.
    """

    question: str
    answer: str
    qa_type: str
    frame: int | None = None

    def __post_init__(self) -> None:
        if self.answer not in ANSWER_INDEX:
            raise ValueError(f"answer {self.answer!r} of {self.question!r} is not in the answer vocabulary")
        if self.qa_type not in QA_TYPES:
            raise ValueError(f"qa_type {self.qa_type!r} is not one of {QA_TYPES}")


@dataclass(frozen=True)
class Annotation:
    """The text side of a clip.

    Attributes:
        captions: distinct paraphrases describing the clip.
        caption_facts: the facts each caption asserts.
        transcript: the ASR-like narration, with a spoken opinion, words dropped, swapped and replaced.
        text_valence: the valence of the spoken opinion (before ASR noise).
        qa: the clip's questions.
        sentiment: the clip's score in ``[-3, 3]``.
    """

    captions: tuple[str, ...]
    caption_facts: tuple[frozenset, ...]
    transcript: str
    text_valence: float
    qa: tuple[QAPair, ...]
    sentiment: float


# ---------------------------------------------------------------------------------------------------- grammar

_MOVE_PHRASES = {
    "left": ("moves left", "moves to the left", "slides to the left", "drifts left", "travels to the left"),
    "right": (
        "moves right",
        "moves to the right",
        "slides to the right",
        "drifts right",
        "travels to the right",
    ),
    "up": ("moves up", "moves upward", "rises", "slides up", "goes up"),
    "down": ("moves down", "moves downward", "sinks", "falls", "goes down"),
}
_VERB_PHRASES = {
    "grow": ("grows", "gets bigger", "becomes large", "expands", "grows larger"),
    "shrink": ("shrinks", "gets smaller", "becomes small", "contracts", "shrinks down"),
    "appear": ("appears", "shows up", "comes into view", "pops up"),
    "vanish": ("vanishes", "disappears", "fades away", "goes away"),
}
_TURN_PHRASES = (
    "turns {c}",
    "becomes {c}",
    "changes colour to {c}",
    "changes to {c}",
    "changes from {c0} to {c}",
)
_TURN_VAGUE = ("changes colour", "changes its colour")
_REPEAT_PHRASES = {
    "jump": ("jumps {n} times", "hops {n} times", "bounces {n} times", "jumps up and down {n} times"),
    "blink": ("blinks {n} times", "flashes {n} times", "flickers {n} times"),
    "shake": ("shakes {n} times", "wiggles {n} times", "shakes from side to side {n} times"),
}
_REPEAT_VAGUE = {
    "jump": ("keeps jumping", "jumps repeatedly", "hops around"),
    "blink": ("keeps blinking", "flickers repeatedly"),
    "shake": ("keeps shaking", "wiggles repeatedly"),
}
_REPEAT_BASE = {
    "jump": ("jump", "hop", "bounce"),
    "blink": ("blink", "flash", "flicker"),
    "shake": ("shake", "wiggle"),
}
_STILL_PHRASES = ("stays still", "sits still", "does not move")

_NP_FORMS = tuple(NP_FORM_PROBS)
_NP_CUM_WEIGHTS = tuple(np.cumsum(list(NP_FORM_PROBS.values())).tolist())
_ONE_EVENT = (
    "{np} {vp}",
    "in this clip {np} {vp}",
    "here {np} {vp}",
    "we see {npi} that {vp}",
    "there is {npi} that {vp}",
)
_TWO_EVENTS = (
    "{np} {vp1} and then {vp2}",
    "{np} {vp1} then {vp2}",
    "first {np} {vp1} and then it {vp2}",
    "{np} {vp2} after it {vp1}",
    "{np} {vp1} before it {vp2}",
    "after {np} {vp1} it {vp2}",
)
_DISTRACTOR_CLAUSES = ("while {dnp} {dvp}", "next to {dnp}", "near {dnp}")

_WHEN = {
    "start": ("at the start", "at the beginning", "in the first frame"),
    "end": ("at the end", "in the last frame"),
}

_OPENERS = ("", "", "so", "okay so", "look", "well", "um", "alright", "here")
_OPINIONS = (
    "this is {a}",
    "i think it is {a}",
    "that looks {a}",
    "it is {a}",
    "what a {a} clip",
    "honestly {a}",
    "i find this {a}",
)


def _event_param(event: Event):
    if event.kind == "move":
        return event.direction
    if event.kind == "turn":
        return event.colour
    if event.kind in REPEATED_KINDS:
        return event.count
    return None


def verb_phrase(rng: random.Random, event: Event, colour_before: str, *, vague_prob: float = 0.0) -> tuple[str, set]:
    """A third-person verb phrase for ``event`` and the facts it asserts.

    Args:
        rng: the clip's random stream.
        event: what the object does.
        colour_before: the object's colour before the event (for "changes from red to blue").
        vague_prob: probability of leaving out the event's parameter (direction, colour or count).
    """
    vague = rng.random() < vague_prob
    if event.kind == "move":
        return rng.choice(_MOVE_PHRASES[event.direction]), {("event", "move", event.direction)}
    if event.kind == "turn":
        if vague:
            return rng.choice(_TURN_VAGUE), {("event", "turn", None)}
        phrase = rng.choice(_TURN_PHRASES)
        facts = {("event", "turn", event.colour)} | ({("colour", colour_before)} if "{c0}" in phrase else set())
        return phrase.format(c=event.colour, c0=colour_before), facts
    if event.kind in REPEATED_KINDS:
        if vague:
            return rng.choice(_REPEAT_VAGUE[event.kind]), {("event", event.kind, None)}
        phrase = rng.choice(_REPEAT_PHRASES[event.kind]).format(n=NUMBER_WORDS[event.count])
        return phrase, {("event", event.kind, event.count)}
    return rng.choice(_VERB_PHRASES[event.kind]), {("event", event.kind, None)}


def noun_phrase(rng: random.Random, obj: SceneObject, *, definite: bool) -> tuple[str, set]:
    """A partial description of ``obj`` (its attributes at the first frame) and the facts it asserts."""
    form = rng.choices(_NP_FORMS, cum_weights=_NP_CUM_WEIGHTS)[0]
    det = "the" if definite else "a"
    facts = {("shape", obj.shape)} if "shape" in form else set()
    facts |= {("colour", obj.colour)} if "colour" in form else set()
    facts |= {("size", obj.size)} if "size" in form else set()
    if form == "colour":
        text = rng.choice((f"{det} {obj.colour} object", f"{det} {obj.colour} shape", f"something {obj.colour}"))
    else:
        words = {"size": obj.size, "colour": obj.colour, "shape": obj.shape}
        text = " ".join([det, *(words[w] for w in form.split())])
    if rng.random() < LOCATION_PROB:
        where, where_facts = location_phrase(rng, obj)
        text, facts = f"{text} {where}", facts | where_facts
    return text, facts


def region(obj: SceneObject) -> tuple[str, str]:
    """The third of the frame the object starts in: ``(row, column)``, e.g. ``("top", "left")``."""
    rows, cols = ("top", "middle", "bottom"), ("left", "centre", "right")
    return rows[min(int(obj.y * 3), 2)], cols[min(int(obj.x * 3), 2)]


def location_phrase(rng: random.Random, obj: SceneObject) -> tuple[str, set]:
    """Where the object starts ("in the top left corner", "at the bottom", "on the left") and the facts."""
    row, col = region(obj)
    forms = [("row",), ("col",)]
    if row != "middle" and col != "centre":
        forms.append(("row", "col"))
    form = rng.choice(forms)
    if form == ("row", "col"):
        return f"in the {row} {col} corner", {("row", row), ("col", col)}
    if form == ("row",):
        return ("in the middle" if row == "middle" else f"at the {row}"), {("row", row)}
    return ("in the centre" if col == "centre" else f"on the {col}"), {("col", col)}


def _distractor_clause(rng: random.Random, scene: Scene) -> tuple[str, set]:
    other = rng.choice(scene.distractors)
    dnp = f"a {other.colour} {other.shape}"
    clause = rng.choice(_DISTRACTOR_CLAUSES)
    if "{dvp}" not in clause:
        return clause.format(dnp=dnp), {("distractor", other.colour, other.shape, None)}
    if other.events:
        dvp, _ = verb_phrase(rng, other.events[0], other.colour)
        key = other.events[0].kind
    else:
        dvp, key = rng.choice(_STILL_PHRASES), "still"
    return clause.format(dnp=dnp, dvp=dvp), {("distractor", other.colour, other.shape, key)}


def caption(rng: random.Random, scene: Scene, *, distractor_prob: float = DISTRACTOR_PROB) -> tuple[str, frozenset]:
    """One caption of ``scene`` and the facts it asserts."""
    subject = scene.subject
    events = subject.events
    if len(events) == 2 and rng.random() < ONE_OF_TWO_PROB:
        events = (rng.choice(events),)  # a partial description: only one of the two events
    np_text, facts = noun_phrase(rng, subject, definite=rng.random() < 0.6)
    npi_text = np_text.replace("the ", "a ", 1) if np_text.startswith("the ") else np_text
    phrases = []
    for event in events:
        phrase, event_facts = verb_phrase(rng, event, subject.colour, vague_prob=VAGUE_PROB)
        phrases.append(phrase)
        facts |= event_facts
    if len(events) == 1:
        text = rng.choice(_ONE_EVENT).format(np=np_text, npi=npi_text, vp=phrases[0])
    else:
        text = rng.choice(_TWO_EVENTS).format(np=np_text, vp1=phrases[0], vp2=phrases[1])
        facts.add(("order", events[0].kind, events[1].kind))
    if scene.distractors and rng.random() < distractor_prob:
        clause, clause_facts = _distractor_clause(rng, scene)
        text, facts = f"{text} {clause}", facts | clause_facts
    return text, frozenset(facts)


def scene_facts(scene: Scene) -> frozenset:
    """Every fact a caption of ``scene`` may assert (captions assert subsets of it)."""
    subject = scene.subject
    row, col = region(subject)
    facts: set = {
        ("shape", subject.shape),
        ("colour", subject.colour),
        ("size", subject.size),
        ("row", row),
        ("col", col),
    }
    for event in subject.events:
        facts |= {("event", event.kind, _event_param(event)), ("event", event.kind, None)}
    if len(subject.events) == 2:
        facts.add(("order", subject.events[0].kind, subject.events[1].kind))
    for other in scene.distractors:
        key = other.events[0].kind if other.events else "still"
        facts |= {
            ("distractor", other.colour, other.shape, None),
            ("distractor", other.colour, other.shape, key),
        }
    return frozenset(facts)


# ------------------------------------------------------------------------------------------------- transcript


def spoken_opinion(rng: random.Random) -> tuple[str, float]:
    """A spoken opinion ("i think it is not nice") and its valence in ``[-3, 3]``.

    ``valence = g * OPINION_WORDS[adjective]`` with ``g = 1``, ``INTENSIFIER_GAIN`` after "really" / "very",
    or ``NEGATION_GAIN`` after "not"; 15% of the speakers say nothing (valence 0).
    """
    if rng.random() < 0.15:
        return "", 0.0
    adjective = rng.choice(tuple(OPINION_WORDS))
    valence = OPINION_WORDS[adjective]
    modifier = rng.random()
    if modifier < 0.25:
        adjective, valence = f"{rng.choice(INTENSIFIERS)} {adjective}", INTENSIFIER_GAIN * valence
    elif modifier < 0.45:
        adjective, valence = f"not {adjective}", NEGATION_GAIN * valence
    return rng.choice(_OPINIONS).format(a=adjective), float(valence)


def asr_noise(
    rng: random.Random,
    words: list[str],
    *,
    drop: float,
    swap: float,
    substitute: float,
    replacements: Sequence[str],
) -> list[str]:
    """Corrupt a word sequence as speech recognition does: drop, swap with the next word, replace."""
    kept = [w for w in words if rng.random() >= drop] or words[:1]
    i = 0
    while i < len(kept) - 1:
        if rng.random() < swap:
            kept[i], kept[i + 1] = kept[i + 1], kept[i]
            i += 1
        i += 1
    return [rng.choice(replacements) if rng.random() < substitute else w for w in kept]


# --------------------------------------------------------------------------------------------------------- QA


def _frame_questions(scene: Scene, n_frames: int, rng: random.Random) -> list[QAPair]:
    subject = scene.subject
    tracks = scene.tracks
    track = tracks[-1]
    out = []
    for when, frame in (("start", 0), ("end", n_frames - 1)):
        phrase = rng.choice(_WHEN[when])
        shown = [k for k, t in enumerate(tracks) if t.visible[frame]]
        if shown:
            q = rng.choice(("how many objects are there {w}", "how many shapes can you see {w}"))
            out.append(QAPair(q.format(w=phrase), NUMBER_WORDS[len(shown)], "frame", frame))
        if not track.visible[frame]:
            continue
        colour = COLOURS[track.colour[frame]]
        out.append(QAPair(f"what colour is the {subject.shape} {phrase}", colour, "frame", frame))
        for size, fraction in SIZE_FRACTION.items():
            if abs(track.half[frame] - fraction) < 1e-9:
                q = rng.choice(("is the {s} small or large {w}", "what size is the {s} {w}"))
                out.append(QAPair(q.format(s=subject.shape, w=phrase), size, "frame", frame))
        same_colour = [k for k in shown if COLOURS[tracks[k].colour[frame]] == colour]
        if same_colour == [len(tracks) - 1]:
            out.append(QAPair(f"what shape is the {colour} object {phrase}", subject.shape, "frame", frame))
    return out


def _open_questions(scene: Scene, rng: random.Random) -> list[QAPair]:
    subject = scene.subject
    turns = any(e.kind == "turn" for e in subject.events)
    out = []
    for event in subject.events:
        vp, _ = verb_phrase(rng, event, subject.colour)
        out.append(QAPair(f"{rng.choice(('what', 'who', 'which shape'))} {vp}", subject.shape, "open"))
        if not turns:
            out.append(QAPair(f"what colour is the thing that {vp}", subject.colour, "open"))
        if event.kind == "move":
            q = rng.choice(
                (
                    "where does the {s} move",
                    "which way does the {s} go",
                    "in which direction does the {s} move",
                )
            )
            out.append(QAPair(q.format(s=subject.shape), event.direction, "open"))
        elif event.kind == "turn":
            q = rng.choice(("what colour does the {s} turn", "what colour does the {s} become"))
            out.append(QAPair(q.format(s=subject.shape), event.colour, "open"))
        elif event.kind in ("grow", "shrink"):
            q = rng.choice(("how does the {s} change", "how does the size of the {s} change"))
            out.append(QAPair(q.format(s=subject.shape), "bigger" if event.kind == "grow" else "smaller", "open"))
    return out


def _subject_reference(rng: random.Random, subject: SceneObject) -> str:
    return rng.choice((subject.shape, f"{subject.colour} {subject.shape}", f"{subject.size} {subject.shape}"))


def _action_questions(scene: Scene, rng: random.Random) -> list[QAPair]:
    subject = scene.subject
    out = []
    for event in subject.events:
        if event.kind not in REPEATED_KINDS:
            continue
        ref = _subject_reference(rng, subject)
        out.append(QAPair(f"what does the {ref} do {NUMBER_WORDS[event.count]} times", event.kind, "action"))
        base = rng.choice(_REPEAT_BASE[event.kind])
        out.append(QAPair(f"how many times does the {ref} {base}", NUMBER_WORDS[event.count], "action"))
        out.append(QAPair(f"what does the {ref} keep doing", event.kind, "action"))
    return out


def _transition_questions(scene: Scene, rng: random.Random) -> list[QAPair]:
    subject = scene.subject
    if len(subject.events) != 2:
        return []
    first, second = subject.events
    vp1, _ = verb_phrase(rng, first, subject.colour)
    vp2, _ = verb_phrase(rng, second, subject.colour)
    ref = _subject_reference(rng, subject)
    return [
        QAPair(f"what does the {ref} do after it {vp1}", second.kind, "transition"),
        QAPair(f"what does the {ref} do before it {vp2}", first.kind, "transition"),
        QAPair(f"what happens to the {ref} after it {vp1}", second.kind, "transition"),
        QAPair(f"what does the {ref} do first", first.kind, "transition"),
        QAPair(f"what does the {ref} do last", second.kind, "transition"),
    ]


def questions(rng: random.Random, scene: Scene, n_frames: int, per_type: int) -> tuple[QAPair, ...]:
    """Up to ``per_type`` questions of each QA type that applies to ``scene``.

    Frame and open questions apply to every clip; Action questions to clips with a repeated action; Transition
    questions to clips whose subject does two events.
    """
    out: list[QAPair] = []
    for candidates in (
        _action_questions(scene, rng),
        _transition_questions(scene, rng),
        _frame_questions(scene, n_frames, rng),
        _open_questions(scene, rng),
    ):
        out.extend(rng.sample(candidates, min(per_type, len(candidates))))
    return tuple(out)


# ------------------------------------------------------------------------------------------------ annotation


def sentiment_score(video_valence: float, text_valence: float, noise: float = 0.0) -> float:
    """``clip(0.6 * (v_video + v_text) + noise, -3, 3)``, the CMU-MOSI-like score of a clip.

    It depends on the video (events and colours, :meth:`~meltr.data.scene.Scene.video_valence`) and on the
    text (the spoken opinion of the transcript, :func:`spoken_opinion`).
    """
    return float(np.clip(0.6 * (video_valence + text_valence) + noise, -3.0, 3.0))


def annotate(
    rng: random.Random,
    scene: Scene,
    *,
    n_frames: int,
    n_captions: int,
    qa_per_type: int,
    transcript_noise: tuple[float, float, float],
    sentiment_noise: float,
    replacements: Sequence[str],
) -> Annotation:
    """Captions, transcript, questions and sentiment of ``scene``.

    Args:
        rng: the clip's random stream.
        scene: the clip's content.
        n_frames: frames of the clip (Frame questions name the first or last one).
        n_captions: distinct captions wanted (fewer if the grammar cannot produce that many in 20 tries each).
        qa_per_type: questions per applicable QA type.
        transcript_noise: ASR probabilities ``(drop, swap, substitute)``.
        sentiment_noise: std of the annotator noise of the sentiment score.
        replacements: words the ASR may hear instead of the spoken one.
    """
    captions: dict[str, frozenset] = {}
    for _ in range(20 * n_captions):
        text, facts = caption(rng, scene)
        captions.setdefault(text, facts)
        if len(captions) == n_captions:
            break
    narration, _ = caption(rng, scene, distractor_prob=0.0)
    opinion, text_valence = spoken_opinion(rng)
    spoken = " ".join(part for part in (rng.choice(_OPENERS), narration, opinion) if part).split()
    drop, swap, substitute = transcript_noise
    heard = asr_noise(rng, spoken, drop=drop, swap=swap, substitute=substitute, replacements=replacements)
    qa = questions(rng, scene, n_frames, qa_per_type)
    sentiment = sentiment_score(scene.video_valence(), text_valence, rng.gauss(0.0, sentiment_noise))
    return Annotation(
        captions=tuple(captions),
        caption_facts=tuple(captions.values()),
        transcript=" ".join(heard),
        text_valence=text_valence,
        qa=qa,
        sentiment=sentiment,
    )


def grammar_words() -> set[str]:
    """Every word the grammar can write, besides the lexicon's (used to build the vocabulary)."""
    texts = [
        *(p for ps in _MOVE_PHRASES.values() for p in ps),
        *(p for ps in _VERB_PHRASES.values() for p in ps),
        *_TURN_PHRASES,
        *_TURN_VAGUE,
        *(p for ps in _REPEAT_PHRASES.values() for p in ps),
        *(p for ps in _REPEAT_VAGUE.values() for p in ps),
        *(p for ps in _REPEAT_BASE.values() for p in ps),
        *_STILL_PHRASES,
        *_ONE_EVENT,
        *_TWO_EVENTS,
        *_DISTRACTOR_CLAUSES,
        *(p for ps in _WHEN.values() for p in ps),
        *_OPENERS,
        *_OPINIONS,
        "a the object shape something",
        "how many objects are there shapes can you see what colour is small or large size shape",
        "what who which shape colour is the thing that where does move which way go in direction",
        "turn become how change size of",
        "what does do times how many keep doing after it before happens to first last",
        "not",
        "in the top middle bottom left centre right corner at on",
    ]
    words = set()
    for text in texts:
        for word in text.split():
            if not (word.startswith("{") and word.endswith("}")):
                words.add(word)
    return words
