"""Pre-extracted features through UniVL's feature stem: padded rows (video_mask False) change nothing."""

from __future__ import annotations

import pytest
import torch

from meltr.data.formats import export_world, read_dataset
from meltr.models import build_backbone


@pytest.fixture(scope="module")
def feature_batch(tiny_world, tmp_path_factory):
    root = tmp_path_factory.mktemp("features")
    export_world(tiny_world, "msrvtt", root, features=True)
    corpus = read_dataset(
        "msrvtt", root, tokenizer=tiny_world.tokenizer, features="msrvtt_videos_features.pickle", n_frames=11
    )
    return next(iter(corpus.loader("train", 6, seed=1)))


def test_padding_rows_do_not_change_losses_or_representations(feature_batch, tiny_world):
    batch = feature_batch
    assert batch["video"].shape[1:] == (11, 3 * 32 * 32) and not batch["video_mask"][:, 8:].any()
    torch.manual_seed(0)
    model = build_backbone(
        "univl",
        "tiny",
        vocab_size=tiny_world.tokenizer.vocab_size,
        frame_stem="features",
        feature_dim=3072,
        max_frames=11,
        caption_from_transcript=True,
    ).eval()
    garbage = batch["video"].clone()
    garbage[~batch["video_mask"]] = torch.randn(int((~batch["video_mask"]).sum()), 3072) * 5
    noisy = {**batch, "video": garbage}
    losses = model(batch, torch.Generator().manual_seed(3))
    again = model(noisy, torch.Generator().manual_seed(3))
    assert set(losses) == set(model.tasks)
    for task in model.tasks:
        assert losses[task].shape == (6,) and torch.isfinite(losses[task]).all()
        torch.testing.assert_close(losses[task], again[task], rtol=0, atol=1e-5)
    torch.testing.assert_close(model.encode_video(batch), model.encode_video(noisy), rtol=0, atol=1e-6)
    torch.testing.assert_close(model.fused(batch), model.fused(noisy), rtol=0, atol=1e-6)
    assert torch.equal(model.generate(batch, 6), model.generate(noisy, 6))
    # the rows that exist do matter
    changed = batch["video"].clone()
    changed[:, 0] += 1.0
    assert not torch.allclose(model.encode_video(batch), model.encode_video({**batch, "video": changed}))


def test_feature_stem_refuses_the_wrong_width(feature_batch, tiny_world):
    model = build_backbone("univl", "tiny", vocab_size=tiny_world.tokenizer.vocab_size, frame_stem="features")
    with pytest.raises(ValueError, match=r"feature_dim.*\(6, 11, 3072\)|takes video \[B, T <= 64, 1024\]"):
        model(feature_batch)
