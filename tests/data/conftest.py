"""A small world shared by the tests of meltr.data (built once per session: generation is the slow part)."""

from __future__ import annotations

import pytest

from meltr.data import World, WorldConfig, make_world

SMALL = WorldConfig(seed=7, n_pretrain=0, n_train=64, n_meta=8, n_test=96, misaligned_fraction=0.25)


@pytest.fixture(scope="session")
def world() -> World:
    return make_world(SMALL)
