"""The summary of a run's meta-step diagnostics (meltr analyze)."""

import itertools
import math
import statistics

import pytest

from meltr.analysis.meta_signal import describe, meta_signal, sign_test


def brute_force_p(helped, total):
    """Share of all 2^n equally likely outcomes at least as far from n/2 as the observed one."""
    outcomes = list(itertools.product((0, 1), repeat=total))
    extreme = abs(helped - total / 2)
    return sum(abs(sum(o) - total / 2) >= extreme for o in outcomes) / len(outcomes)


@pytest.mark.parametrize(("helped", "total"), [(0, 0), (3, 10), (5, 10), (9, 10), (12, 12), (4, 11), (7, 13)])
def test_sign_test_matches_brute_force_enumeration(helped, total):
    assert sign_test(helped, total) == pytest.approx(brute_force_p(helped, total), rel=1e-12)


def test_summary_of_logged_rows():
    rows = [{"step": 1}]  # an inner step without meta step
    gains = [0.2, -0.1, 0.3, 0.4]
    for i, gain in enumerate(gains):
        rows.append(
            {
                "step": i + 2,
                "meta/hypergrad_norm": 1.0,
                "meta/lookahead/gain": gain,
                "meta/lookahead/cos_before": 0.1,
                "meta/lookahead/cos_after": 0.1 + gain,
                **({} if i == 0 else {"meta/hypergrad_cosine_prev": 0.2 * i}),
            }
        )
    summary = meta_signal(rows)
    assert summary["meta_steps"] == 4 and summary["lookahead_checks"] == 4
    assert summary["lookahead_helped"] == 0.75
    assert summary["lookahead_gain"] == pytest.approx(sum(gains) / 4)
    assert summary["lookahead_gain_se"] == pytest.approx(statistics.stdev(gains) / math.sqrt(len(gains)))
    assert summary["lookahead_p"] == pytest.approx(brute_force_p(3, 4))
    assert summary["lookahead_cos_change"] == pytest.approx(sum(gains) / 4)
    assert summary["hypergrad_cosine"] == pytest.approx(0.4)
    assert "75%" in describe(summary)


def test_a_run_without_diagnostics_says_so():
    summary = meta_signal([{"step": 1, "loss/a": 1.0}])
    assert summary["lookahead_checks"] == 0 and math.isnan(summary["lookahead_gain"])
    assert "none logged" in describe(summary)
