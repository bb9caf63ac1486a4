"""Fixtures for the backbone tests."""

from __future__ import annotations

import pytest
import torch
from backbone_helpers import random_batch

from meltr.models import BACKBONES


@pytest.fixture
def batch() -> dict[str, torch.Tensor]:
    return random_batch()


@pytest.fixture(params=BACKBONES.names())
def backbone_name(request) -> str:
    return request.param
