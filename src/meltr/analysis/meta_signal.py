"""Is MELTR's meta step learning anything? A summary of the per-meta-step diagnostics of a run.

Two signals are logged by :class:`~meltr.learner.AuxiliaryLearner`:

- ``meta/lookahead/*`` (every ``lookahead_every`` meta steps): whether the combiner's update made the inner step
  better for the primary task on a held-out batch: the primary loss after a normalised look-ahead step with the
  combiner after the update against before it (``gain = before - after``, positive when the step helped), and the
  cosine of each step direction with the held-out primary gradient;
- ``meta/hypergrad_cosine_prev``: the cosine between successive hypergradients. Near 0, successive meta steps
  point in unrelated directions and the meta-gradient is mostly noise; consistently positive, they agree;
- ``meta/scope_cosine`` (every ``scope_cosine_every`` meta steps, with a ``hypergrad_scope``): the cosine between the
  scoped hypergradient the run used and the full-scope one at the same weights, batches and masks: the fidelity the
  scope costs on this run.

A meta step that helps no more often than chance (a two-sided sign test on the gains) is indistinguishable from
noise on this run.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any


def sign_test(helped: int, total: int) -> float:
    """Two-sided p-value of ``helped`` successes in ``total`` fair coin flips (exact binomial)."""
    if total == 0:
        return 1.0
    extreme = max(helped, total - helped)
    tail = sum(math.comb(total, k) for k in range(extreme, total + 1)) / 2**total
    return min(1.0, 2 * tail)


def _finite(rows: Iterable[Mapping[str, Any]], key: str) -> list[float]:
    return [float(r[key]) for r in rows if isinstance(r.get(key), int | float) and math.isfinite(r[key])]


def _mean_and_error(values: list[float]) -> tuple[float, float]:
    if not values:
        return math.nan, math.nan
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, math.nan
    variance = sum((v - mean) ** 2 for v in values) / (len(values) - 1)
    return mean, math.sqrt(variance / len(values))


def meta_signal(steps: Iterable[Mapping[str, Any]]) -> dict[str, float]:
    """Summarise a run's meta-step diagnostics (the rows of ``steps.json``).

    Returns:
        ``meta_steps``; ``lookahead_checks``, ``lookahead_helped`` (the share of checks with a positive gain),
        ``lookahead_gain`` and ``lookahead_gain_se`` (mean and its standard error), ``lookahead_p`` (sign test),
        ``lookahead_cos_change`` (mean of cos_after - cos_before); ``hypergrad_cosine`` and
        ``hypergrad_cosine_se`` (mean cosine of successive hypergradients); ``scope_checks``, ``scope_cosine``,
        ``scope_cosine_se`` and ``scope_cosine_min`` (the scoped against the full hypergradient). NaN where the run
        logged nothing.
    """
    rows = list(steps)
    meta_rows = [r for r in rows if isinstance(r.get("meta/hypergrad_norm"), int | float)]
    gains = _finite(rows, "meta/lookahead/gain")
    cos_change = [
        float(r["meta/lookahead/cos_after"]) - float(r["meta/lookahead/cos_before"])
        for r in rows
        if isinstance(r.get("meta/lookahead/cos_after"), int | float)
        and isinstance(r.get("meta/lookahead/cos_before"), int | float)
    ]
    helped = sum(g > 0 for g in gains)
    gain, gain_se = _mean_and_error(gains)
    cosine, cosine_se = _mean_and_error(_finite(rows, "meta/hypergrad_cosine_prev"))
    scope = _finite(rows, "meta/scope_cosine")
    scope_cosine, scope_cosine_se = _mean_and_error(scope)
    return {
        "meta_steps": float(len(meta_rows)),
        "lookahead_checks": float(len(gains)),
        "lookahead_helped": helped / len(gains) if gains else math.nan,
        "lookahead_gain": gain,
        "lookahead_gain_se": gain_se,
        "lookahead_p": sign_test(helped, len(gains)) if gains else math.nan,
        "lookahead_cos_change": _mean_and_error(cos_change)[0],
        "hypergrad_cosine": cosine,
        "hypergrad_cosine_se": cosine_se,
        "scope_checks": float(len(scope)),
        "scope_cosine": scope_cosine,
        "scope_cosine_se": scope_cosine_se,
        "scope_cosine_min": min(scope) if scope else math.nan,
    }


def describe(summary: Mapping[str, float]) -> str:
    """One paragraph a person can read: does the meta signal beat noise on this run?"""
    lines = [f"meta steps: {summary['meta_steps']:.0f}"]
    if summary["lookahead_checks"] > 0:
        verdict = "better than chance" if summary["lookahead_p"] < 0.05 else "not distinguishable from chance"
        lines.append(
            f"look-ahead checks: {summary['lookahead_checks']:.0f}; the meta step lowered the held-out primary loss "
            f"in {100 * summary['lookahead_helped']:.0f}% of them (sign test p = {summary['lookahead_p']:.3g}: "
            f"{verdict}); mean gain {summary['lookahead_gain']:.2e} +- {summary['lookahead_gain_se']:.1e}"
        )
    else:
        lines.append("look-ahead checks: none logged (set lookahead_every > 0 in the recipe)")
    if math.isfinite(summary["hypergrad_cosine"]):
        lines.append(
            f"cosine of successive hypergradients: {summary['hypergrad_cosine']:.3f} "
            f"+- {summary['hypergrad_cosine_se']:.3f} (0: successive meta steps unrelated, i.e. noise)"
        )
    if summary.get("scope_checks", 0) > 0:
        lines.append(
            f"scoped vs full hypergradient: cosine {summary['scope_cosine']:.3f} +- {summary['scope_cosine_se']:.3f} "
            f"(min {summary['scope_cosine_min']:.3f}) over {summary['scope_checks']:.0f} checks "
            "(1: the scope loses nothing; below ~0.9 the scope changes the meta step's direction)"
        )
    return "\n".join(lines)
