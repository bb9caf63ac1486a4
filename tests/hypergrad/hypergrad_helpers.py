"""Helpers shared by the hypergradient tests."""

from __future__ import annotations

from meltr.learner import AuxiliaryLearner


def spy_on_hypergradient(learner: AuxiliaryLearner) -> list:
    """Record every ``learner.hypergradient`` call as ``(args, hypergradient)``; the learner keeps working."""
    calls = []
    original = learner.hypergradient

    def spy(*args, **kwargs):
        out = original(*args, **kwargs)
        calls.append((args, out[0]))
        return out

    learner.hypergradient = spy
    return calls
