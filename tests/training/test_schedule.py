"""The learning-rate schedule of pre-training (meltr.training.schedule)."""

import itertools

import pytest

from meltr.training.schedule import learning_rate_factor


def test_the_schedule_warms_up_then_decays_to_a_tenth():
    factors = [learning_rate_factor(step, 4, 20) for step in range(21)]
    assert factors[:4] == [0.25, 0.5, 0.75, 1.0]
    assert factors[4] == pytest.approx(1.0) and factors[20] == pytest.approx(0.1)
    assert all(a >= b for a, b in itertools.pairwise(factors[3:]))


@pytest.mark.parametrize(
    ("kind", "factors"),
    [
        ("linear", [0.5, 1.0, 1.0, 2 / 3, 1 / 3, 0.0]),
        ("cosine", [0.5, 1.0, 1.0, 0.75, 0.25, 0.0]),
        ("constant", [0.5, 1.0, 1.0, 1.0, 1.0, 1.0]),
    ],
)
def test_schedules_warm_up_then_decay(kind, factors):
    from meltr.training.schedule import schedule_factor

    got = [schedule_factor(kind, step, 2, 5) for step in range(6)]  # 2 warm-up steps, decay to 0 at step 5
    assert got == pytest.approx(factors)
    with pytest.raises(ValueError, match="lr_schedule"):
        schedule_factor("step", 0, 2, 5)
