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
