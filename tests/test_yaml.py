"""Recipes, overrides and saved configs read ``1e-3`` as a float (YAML 1.2), not as PyYAML's string."""

import pytest

from meltr._yaml import load, parse_assignments


@pytest.mark.parametrize(
    ("text", "expected"),
    [("1e-3", 1e-3), ("-2E+4", -2e4), ("1.5e-3", 1.5e-3), ("3", 3), ("0.5", 0.5), ("1e", "1e"), ("e5", "e5")],
)
def test_scalars(text, expected):
    value = load(text)
    assert value == expected and type(value) is type(expected)


def test_a_document_keeps_its_other_types():
    assert load("lr: 1e-4\nname: run\nwarm: true\nsizes: [1, 2e1]\nnothing: null") == {
        "lr": 1e-4,
        "name": "run",
        "warm": True,
        "sizes": [1, 20.0],
        "nothing": None,
    }


def test_assignments_and_their_errors():
    assert parse_assignments(["dim=64", "temperature=5e-2", "name=x"], "--set", "pretrain") == {
        "dim": 64,
        "temperature": 0.05,
        "name": "x",
    }
    with pytest.raises(SystemExit, match=r"meltr pretrain: --set expects KEY=VALUE, got 'dim'"):
        parse_assignments(["dim"], "--set", "pretrain")
