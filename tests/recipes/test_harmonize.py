"""The gradient-harmonisation experiment (meltr.recipes.harmonize, ``meltr harmonize``) on a tiny world: the scores of
the curriculum against hand-built examples and against the world's record, the pipeline's outputs, determinism, the
linear probe, and the CLI."""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import re

import numpy as np
import pytest
import torch

from meltr.cli.main import main
from meltr.combine import FixedWeights
from meltr.recipes.harmonize import (
    DROP_METRICS,
    INIT_ROW,
    LABELS,
    METRICS,
    ROWS,
    HarmonizeConfig,
    caption_bags,
    drop_metrics,
    pretrain_row,
    row_method,
    run_harmonize,
    write_report,
)
from meltr.surgery import Curriculum, Realign, RealignCurriculum

TINY = {
    "steps": 3,
    "batch_size": 8,
    "warmup_steps": 1,
    "n_pretrain": 32,
    "n_probe": 24,
    "n_test": 24,
    "probe_iterations": 20,
    "seeds": (0,),
}


@pytest.fixture(scope="module")
def world():
    from meltr.data import make_world

    return make_world(HarmonizeConfig(**TINY).world_config())


# ------------------------------------------------------------------------------- precision / recall by hand


# -------------------------------------------------------------------------------------- the pipeline's parts


def test_rows_map_to_the_paper_methods():
    config = HarmonizeConfig(**TINY, reweight=3.0)
    _, combiner = row_method("rw_va", config)
    assert isinstance(combiner, FixedWeights) and combiner.weights.tolist() == [3.0, 1.0]
    assert row_method("rw_vt", config)[1].weights.tolist() == [1.0, 3.0]
    assert isinstance(row_method("gr", config)[0], Realign) and row_method("gr", config)[1] is None
    cl, both = row_method("cl", config)[0], row_method("both", config)[0]
    assert isinstance(cl, Curriculum) and isinstance(both, RealignCurriculum) and cl.per_sample and both.per_sample
    assert cl.schedule(0) == config.gamma_start and cl.schedule(config.steps - 1) == config.gamma_end
    with pytest.raises(ValueError, match="unknown row"):
        row_method("pcgrad", config)


@pytest.mark.parametrize(
    "field, value",
    [
        ("rows", ("baseline", "pcgrad")),
        ("seeds", ()),
        ("batch_size", 1),
        ("steps", 0),
        ("misaligned_fraction", 1.5),
        ("measure", "angle"),
        ("gamma_schedule", "exp"),
        ("model", {"width": 3}),
        ("world", {"n_test": 5}),
        ("size", "huge"),
        ("reweight", 0.0),
    ],
)
def test_bad_configs_name_the_field(field, value):
    with pytest.raises(ValueError, match=re.escape(f"HarmonizeConfig.{field}")):
        HarmonizeConfig(**{**TINY, field: value})


def test_caption_bags_hold_the_served_captions(world):
    split = world["pretrain"]
    clip_ids = torch.arange(len(split))
    ids, mask = caption_bags(split, clip_ids, 3, torch.Generator().manual_seed(0))
    assert ids.shape == (len(split), 3, split.caption_ids.shape[2]) and torch.equal(mask, ids != 0)
    for clip in range(len(split)):
        served = {tuple(row) for row in split.caption_ids[clip, : split.caption_count[clip]].tolist()}
        bag = [tuple(row) for row in ids[clip].tolist()]
        assert set(bag) <= served and len(set(bag)) == min(3, len(served))
    for clip in np.flatnonzero(split.misaligned):  # a misaligned clip's bag is the other clip's captions
        bag = {world.tokenizer.decode(row) for row in ids[clip].tolist()}
        assert bag <= set(split.clips[split.text_source[clip]].annotation.captions)
    again, _ = caption_bags(split, clip_ids, 3, torch.Generator().manual_seed(0))
    assert torch.equal(ids, again)


# --------------------------------------------------------------------------------------------- the real runs


def test_curriculum_records_are_scored_against_the_worlds_record(world):
    # gamma high enough that CL drops about everything it sees at the last step: drops are certain to happen.
    config = HarmonizeConfig(**TINY, gamma_start=-1.0, gamma_end=0.5)
    _, steps, samples = pretrain_row(world, config, "cl", seed=0)
    split = world["pretrain"]
    truth = split.text_source[samples["clip_id"]] != samples["clip_id"]  # misaligned: served another clip's text
    assert np.array_equal(samples["misaligned"], truth) and truth.any() and not truth.all()
    assert samples["dropped"].any()
    assert len(samples["step"]) == config.steps * config.batch_size
    gamma = np.repeat([config.gamma()(s) for s in range(config.steps)], config.batch_size)
    assert np.array_equal(samples["dropped"], samples["alignment"] <= gamma)
    metrics = drop_metrics(samples, split.misaligned)
    hits = int((samples["dropped"] & truth).sum())
    assert metrics["drop_precision"] == pytest.approx(hits / samples["dropped"].sum())
    assert metrics["drop_recall"] == pytest.approx(hits / truth.sum())
    assert metrics["drop_rate"] == pytest.approx(samples["dropped"].mean())
    aligned, other = samples["alignment"][~truth], samples["alignment"][truth]
    wins = (aligned[:, None] > other[None, :]).mean() + 0.5 * (aligned[:, None] == other[None, :]).mean()
    assert metrics["indicator_auc"] == pytest.approx(wins)
    assert [s["dropped_fraction"] for s in steps] == pytest.approx(samples["dropped"].reshape(3, 8).mean(1).tolist())


def test_a_run_is_deterministic_under_its_seed(world):
    config = HarmonizeConfig(**TINY)
    first, first_steps, _ = pretrain_row(world, config, "gr", seed=1)
    second, second_steps, _ = pretrain_row(world, config, "gr", seed=1)
    assert first_steps == second_steps
    pairs = zip(first.state_dict().values(), second.state_dict().values(), strict=True)
    assert all(torch.equal(a, b) for a, b in pairs)
    _, other_steps, _ = pretrain_row(world, config, "gr", seed=2)
    assert other_steps != first_steps
    assert all(bool(s["projected"]) == (s["cosine"] < 0) for s in first_steps)  # GR projects exactly on conflicts


def test_the_experiment_runs_every_row_and_writes_the_report(world, tmp_path):
    result = run_harmonize(HarmonizeConfig(**TINY), world=world)
    assert [(run.row, run.seed) for run in result.runs] == [(INIT_ROW, 0)] + [(row, 0) for row in ROWS]
    init = result.runs[0]
    assert set(init.metrics) == set(METRICS) and init.steps == [] and init.samples is None
    for run in result.runs[1:]:
        expected = set(METRICS) | (set(DROP_METRICS) if run.row in ("cl", "both") else set())
        assert set(run.metrics) == expected
        assert (run.samples is not None) == (run.row in ("cl", "both"))
        assert len(run.steps) == 3 and all(-1.0 <= s["cosine"] <= 1.0 for s in run.steps)
        assert 0 <= run.metrics["video_top1"] <= run.metrics["video_top5"] <= 100
        assert 0 <= run.metrics["t2v_r1"] <= run.metrics["t2v_r5"] <= run.metrics["t2v_r10"] <= 100
        assert 1 <= run.metrics["t2v_mdr"] <= 24
    summary = result.summary()
    assert list(summary) == [INIT_ROW, *ROWS]
    mean, std = summary["baseline"]["audio_top1"]
    assert mean == result.runs[1].metrics["audio_top1"] and math.isnan(std)  # one seed: no spread
    paths = write_report(result, tmp_path / "docs" / "h.md", "meltr harmonize --tiny")
    assert [p.name for p in paths] == ["h.md", "h.csv", "h-seeds.csv", "h-cosine.png"]
    assert all(p.stat().st_size > 0 for p in paths)
    text = paths[0].read_text()
    assert "meltr harmonize --tiny" in text and "![gradient cosine](h-cosine.png)" in text
    for label in LABELS.values():
        assert f"| {label} |" in text
    with paths[1].open() as handle:
        table = list(csv.DictReader(handle))
    assert [line["row"] for line in table] == [INIT_ROW, *ROWS]
    assert float(table[1]["video_top1_mean"]) == pytest.approx(result.runs[1].metrics["video_top1"], rel=1e-5)


def test_a_rerun_in_the_run_directory_reuses_every_recorded_run_bit_for_bit(world, tmp_path, monkeypatch):
    import meltr.recipes.harmonize as recipe
    from meltr.training.run_directory import RunDirectory

    config = HarmonizeConfig(**{**TINY, "rows": ("baseline", "cl")})
    with RunDirectory(tmp_path / "run", "harmonize", dataclasses.asdict(config)) as directory:
        first = run_harmonize(config, world=world, directory=directory)
    assert sorted(p.name for p in (tmp_path / "run" / "records").iterdir()) == [
        "baseline-s0.json", "cl-s0.json", "init-s0.json"
    ]  # fmt: skip

    def refuse(*args, **kwargs):
        raise AssertionError("a recorded run was run again")

    monkeypatch.setattr(recipe, "pretrain_row", refuse)
    monkeypatch.setattr(recipe, "evaluate_backbone", refuse)
    with RunDirectory(tmp_path / "run", "harmonize", dataclasses.asdict(config)) as directory:
        second = run_harmonize(config, world=world, directory=directory)
    for a, b in zip(first.runs, second.runs, strict=True):
        same = json.dumps([a.row, a.seed, a.steps, a.metrics, a.seconds])  # NaN (no gamma) as itself
        assert same == json.dumps([b.row, b.seed, b.steps, b.metrics, b.seconds])
        assert (a.samples is None) == (b.samples is None)
        for key in a.samples or {}:
            assert a.samples[key].dtype == b.samples[key].dtype and np.array_equal(a.samples[key], b.samples[key])


def test_the_cli_refuses_bad_options_before_running(tmp_path, capsys):
    for argv, message in [
        (["--set", "colour=1"], "unknown field 'colour'"),
        (["--model", "dimm=3"], "dimm"),
        (["--batch-size", "1"], r"HarmonizeConfig\.batch_size"),
        (["--model", "dim"], "KEY=VALUE"),
    ]:
        assert main(["harmonize", *argv, "--out", str(tmp_path / "h.md")]) == 2  # a usage error, one line
        error = capsys.readouterr().err
        assert error.startswith("meltr harmonize: ") and error.count("\n") == 1 and re.search(message, error)
    assert not (tmp_path / "h.md").exists()


@pytest.mark.slow
def test_meltr_harmonize_end_to_end(tmp_path, capsys):
    out = tmp_path / "harmonize.md"
    code = main(
        ["harmonize", "--seeds", "0", "1", "--steps", "4", "--batch-size", "8", "--rows", "baseline", "cl", "gr",
         "--set", "n_pretrain=32", "--set", "n_probe=24", "--set", "n_test=24", "--model", "dim=16",
         "--out", str(out), "--runs", str(tmp_path / "runs"), "--quiet"]
    )  # fmt: skip
    assert code == 0
    text = out.read_text()
    assert "--seeds 0 1 --steps 4" in text and "mean ± std over seeds 0, 1" in text
    assert "| VATT |" in text and "| + CL |" in text and "| + GR |" in text and "| + Both |" not in text
    assert "## What the curriculum dropped" in text and " ± " in text
    for name in ("harmonize.csv", "harmonize-seeds.csv", "harmonize-cosine.png"):
        assert (tmp_path / name).stat().st_size > 0
    with (tmp_path / "harmonize-seeds.csv").open() as handle:
        assert [(r["row"], r["seed"]) for r in csv.DictReader(handle)] == [
            ("init", "0"), ("init", "1"), ("baseline", "0"), ("baseline", "1"), ("gr", "0"), ("gr", "1"),
            ("cl", "0"), ("cl", "1"),
        ]  # fmt: skip
    assert "wrote" in capsys.readouterr().out
