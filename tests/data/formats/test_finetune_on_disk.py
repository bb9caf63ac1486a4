"""`meltr finetune` with a `data:` block: the exported world gives the in-memory world's run, step for step."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from meltr.data import WorldConfig, make_world
from meltr.data.formats import export_world
from meltr.recipes import config_path
from meltr.recipes.finetune import FinetuneConfig, finetune

pytest.importorskip("av")

TINY = config_path("tiny")
WORLD = {"n_train": 32, "n_meta": 16, "n_test": 16, "seed": 2, "misaligned_fraction": 0.25}
RUN = {
    "checkpoint": "none",
    "size": "tiny",
    "batch_size": 16,
    "epochs": 1,
    "meta_source": "split",
    "combiner_options": {"d_model": 16, "mlp_hidden": 8, "ff_dim": 32, "num_heads": 2},
}


def recipe(out_root: Path, **fields) -> FinetuneConfig:
    values = {**yaml.safe_load(TINY.read_text()), **RUN, "out_root": str(out_root), **fields}
    return FinetuneConfig.from_dict({k: v for k, v in values.items() if v is not None})


def test_finetune_on_exported_msrvtt_reaches_the_in_memory_worlds_metrics(tmp_path):
    reference = finetune(recipe(tmp_path / "world", world=WORLD), progress=False)
    export_world(make_world(WorldConfig(n_pretrain=0, **WORLD)), "msrvtt", tmp_path / "msrvtt")
    data = {"format": "msrvtt", "root": str(tmp_path / "msrvtt"), "meta": "val", "tokenizer": "world"}
    on_disk = finetune(recipe(tmp_path / "disk", world=None, data=data), progress=False)
    assert on_disk.test == reference.test  # lossless codec: exactly the same run
    assert on_disk.epochs == reference.epochs
    steps = [json.loads((tmp_path / run / "tiny" / "steps.json").read_text()) for run in ("world", "disk")]
    assert [row["loss/align"] for row in steps[0]] == [row["loss/align"] for row in steps[1]]
    provenance = json.loads((tmp_path / "disk" / "tiny" / "data.json").read_text())
    assert provenance["format"] == "msrvtt" and provenance["meta"] == {"from": "val"}


@pytest.mark.slow
def test_meta_split_carved_from_train_is_recorded_in_the_run_directory(tmp_path):
    export_world(make_world(WorldConfig(n_pretrain=0, **WORLD)), "msrvtt", tmp_path / "msrvtt")
    data = {"format": "msrvtt", "root": str(tmp_path / "msrvtt"), "meta_fraction": 0.5, "seed": 3}
    result = finetune(recipe(tmp_path / "run", world=None, data=data), progress=False)
    provenance = json.loads((result.run_dir / "data.json").read_text())
    assert provenance["meta"]["from"] == "train" and provenance["meta"]["seed"] == 3
    assert len(provenance["meta"]["ids"]) == 16 and provenance["sizes"]["train"] == 16
    assert 0 <= result.test["t2v/R@1"] <= 100


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"root": "x"}, r"'data' needs \['format'\]"),
        ({"format": "kinetics", "root": "x"}, r"'data.format' must be one of"),
        ({"format": "msrvtt", "root": "x", "tokenizer": "gpt2"}, r"'data.tokenizer' must be wordpiece or world"),
    ],
)
def test_bad_data_blocks_name_the_field(tmp_path, data, message):
    with pytest.raises(ValueError, match=message):
        recipe(tmp_path, world=None, data=data)
    with pytest.raises(ValueError, match="'world' and 'data' exclude each other"):
        recipe(tmp_path, world=WORLD, data={"format": "msrvtt", "root": "x"})
