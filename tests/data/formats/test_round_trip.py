"""Every format: export a world, read it back, and the batches equal the world's own (exactly, lossless codec)."""

from __future__ import annotations

import pytest
import torch

from meltr.data import ANSWERS
from meltr.data.formats import EXPORTERS, READERS, export_world, read_dataset

pytest.importorskip("av")

TEXT = ("video", "text", "text_mask", "transcript", "transcript_mask", "clip_id")
QA = ("video", "question", "question_mask", "answer", "qa_type", "clip_id")
ALL_SPLITS = ("train", "meta", "test")
TGIF_TYPES = {"qa_types": ("action", "transition", "frame")}

# per format: read options, the world's loader options, the keys the format carries, the splits it writes
CASES = {
    "msrvtt": ({"meta": "val"}, {}, TEXT, ALL_SPLITS),
    "youcook2": ({"meta_fraction": 0.0}, {"caption": "first"}, TEXT, ("train", "test")),
    "tgifqa": ({"meta_fraction": 0.0, "answers": list(ANSWERS)}, TGIF_TYPES, QA, ("train", "test")),
    "tgifqa-json": ({"meta": "val", "layout": "json"}, TGIF_TYPES, QA, ALL_SPLITS),
    "msvdqa": ({"meta": "val"}, {"qa_types": ("open",)}, QA, ALL_SPLITS),
}


def batches(source, split, **options):
    return list(source.loader(split, 4, seed=3, epoch=1, **options))


def assert_batches_equal(expected, got, keys):
    assert len(expected) == len(got)
    for world_batch, corpus_batch in zip(expected, got, strict=True):
        assert set(keys) <= set(corpus_batch)
        for key in keys:
            assert torch.equal(world_batch[key], corpus_batch[key]), key


@pytest.mark.parametrize("fmt", sorted(CASES))
def test_export_then_read_gives_the_worlds_batches(fmt, tiny_world, tmp_path):
    read_options, loader_options, keys, splits = CASES[fmt]
    name = fmt.split("-")[0]
    export_world(tiny_world, name, tmp_path)
    corpus = read_dataset(name, tmp_path, tokenizer=tiny_world.tokenizer, **read_options)
    for split in splits:
        variants = [(False, "random"), (True, "random")] + ([(False, "all")] if "answer" in keys else [])
        for train, qa in variants:
            expected = batches(tiny_world, split, qa=qa, **loader_options)
            got = batches(corpus, split, train=train, qa=qa, **loader_options)
            assert_batches_equal(expected, got, keys)


def test_every_reader_has_an_exporter_or_is_the_folder_reader():
    assert set(READERS.names()) - set(EXPORTERS.names()) <= {"folder"}


def flat_video(batch):
    return batch["video"].flatten(2)


def test_mosi_round_trip_features_audio_and_sentiment(tiny_world, tmp_path):
    export_world(tiny_world, "mosi", tmp_path)
    corpus = read_dataset("mosi", tmp_path, tokenizer=tiny_world.tokenizer, meta="val")
    for split in ("train", "meta", "test"):
        for expected, got in zip(batches(tiny_world, split), batches(corpus, split), strict=True):
            for key in ("transcript", "transcript_mask", "sentiment", "clip_id"):
                assert torch.equal(expected[key], got[key]), key
            assert torch.equal(got["text"], expected["transcript"])  # MOSI's text is what is said
            assert torch.equal(flat_video(expected), got["video"])
            assert got["video_mask"].all()
            assert torch.equal(expected["audio"], got["audio"].flatten(1))


@pytest.mark.parametrize("fmt", ["msrvtt", "youcook2"])
def test_feature_pickle_round_trip(fmt, tiny_world, tmp_path):
    export_world(tiny_world, fmt, tmp_path, features=True)
    pickle_name = {"msrvtt": "msrvtt_videos_features.pickle", "youcook2": "youcookii_videos_features.pickle"}[fmt]
    corpus = read_dataset(
        fmt, tmp_path, tokenizer=tiny_world.tokenizer, features=pickle_name, meta_fraction=0.0, n_frames=10
    )
    assert corpus.provenance["video"] == "features"
    options = {"caption": "first"}
    for expected, got in zip(batches(tiny_world, "train", **options), batches(corpus, "train", **options), strict=True):
        frames = expected["video"].shape[1]
        assert (
            got["video"].shape[1] == 10
            and got["video_mask"][:, :frames].all()
            and not got["video_mask"][:, frames:].any()
        )
        assert torch.equal(flat_video(expected), got["video"][:, :frames])
        assert not got["video"][:, frames:].any()
        assert torch.equal(expected["text"], got["text"])
