"""Recipes, overrides and saved configs read ``1e-3`` as a float (YAML 1.2), not as PyYAML's string."""

import pytest
import yaml

from meltr._yaml import load
from meltr.config import ConfigError, parse_assignments


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
    with pytest.raises(ConfigError, match=r"meltr pretrain: --set expects KEY=VALUE, got 'dim'"):
        parse_assignments(["dim"], "--set", "pretrain")


def test_duplicate_keys_are_refused_at_any_depth_and_merge_keys_still_work():
    with pytest.raises(yaml.YAMLError, match=r"duplicate key 'lr' \(line 2\)"):
        load("lr: 1e-4\nlr: 1e-3\n")
    with pytest.raises(yaml.YAMLError, match="duplicate key 'seed'"):
        load("world: {seed: 1, seed: 2}\n")
    assert load("base: &b {a: 1}\nuse: {<<: *b, c: 2}\n")["use"] == {"a": 1, "c": 2}
