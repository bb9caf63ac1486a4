"""The learning-rate schedule of pre-training (meltr.training.schedule)."""

import itertools

import pytest

from meltr.training.schedule import learning_rate_factor


def test_the_schedule_warms_up_then_decays_to_a_tenth():
    factors = [learning_rate_factor(step, 4, 20) for step in range(21)]
    assert factors[:4] == [0.25, 0.5, 0.75, 1.0]
    assert factors[4] == pytest.approx(1.0) and factors[20] == pytest.approx(0.1)
    assert all(a >= b for a, b in itertools.pairwise(factors[3:]))
