"""The backbones read the synthetic world's batches as they come (``meltr.data``)."""

from __future__ import annotations

import pytest
import torch

from meltr.models import BACKBONES, build_backbone

data = pytest.importorskip("meltr.data")


@pytest.fixture(scope="module")
def world():
    return data.make_world(n_pretrain=8, n_train=8, n_meta=0, n_test=0)


@pytest.mark.parametrize("name", BACKBONES.names())
def test_a_world_batch_gives_every_loss(world, name):
    batch = next(iter(world.loader("train", batch_size=8)))
    model = build_backbone(name, "tiny", vocab_size=world.tokenizer.vocab_size)
    torch.manual_seed(0)
    losses = model(batch)
    assert list(losses) == list(model.tasks)
    for task, loss in losses.items():
        assert loss.shape == (8,) and torch.isfinite(loss).all() and (loss >= 0).all(), task
