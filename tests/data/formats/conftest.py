"""A tiny world shared by the format tests (generation and export are the slow parts)."""

from __future__ import annotations

import pytest

from meltr.data import World, WorldConfig, make_world

TINY = WorldConfig(seed=11, n_pretrain=0, n_train=12, n_meta=4, n_test=6, misaligned_fraction=0.25)


@pytest.fixture(scope="session")
def tiny_world() -> World:
    return make_world(TINY)
