"""``meltr reproduce``: every table's recipes validate, the summary is the mean +- std of the runs, the CLI works."""

import csv
import json
import statistics
import subprocess
import sys

import pytest

from meltr.models import build_backbone, pretrained_path
from meltr.recipes.reproduce import MINIATURE, get_table, run_config, summarise, write
from meltr.tasks import build_task

TINY = [
    "checkpoint=none",
    "size=tiny",
    "world.n_train=32",
    "world.n_meta=16",
    "world.n_test=16",
    "epochs=1",
    "batch_size=16",
]


@pytest.mark.parametrize("number", range(1, 8))
def test_every_row_of_every_table_is_a_valid_recipe_with_a_shipped_checkpoint(number, tmp_path):
    table = get_table(number)
    names = set()
    for row in table.rows:
        for seed in (0, 1, 2):
            config = run_config(table, row, seed, tmp_path)
            assert config.seed == seed and config.checkpoint == MINIATURE["checkpoint"]
            assert pretrained_path(config.backbone).exists()
            names.add(config.name)
    assert len(names) == 3 * len(table.rows)  # no two runs share a run directory


def test_table1_has_meltr_without_the_regulariser_and_table7_the_five_schemes(tmp_path):
    table1 = {row.label: run_config(get_table(1), row, 0, tmp_path) for row in get_table(1).rows}
    assert table1["UniVL + MELTR-"].reg_weight == 0 and table1["UniVL + MELTR"].reg_weight > 0
    assert table1["UniVL-Joint"].task_options == {"primary": "joint"}
    assert [row.label for row in get_table(7).rows if row.zero_shot] == ["zero-shot"]
    rows = [row for row in get_table(7).rows if not row.zero_shot]
    assert [row.label for row in rows] == ["(A)", "(B)", "(C)", "(D)", "(E)", "MELTR"]
    schemes = {}
    for row in rows[:5]:
        config = run_config(get_table(7), row, 0, tmp_path)
        assert config.combiner == "manual" and set(config.combiner_options) == {"weights"}
        assert config.task == "captioning" and config.backbone_options == {"caption_from_transcript": True}
        weights = config.combiner_options["weights"]
        assert {t: float(v) for t, v in row.extra.items()} == {t: float(weights[t]) for t in row.extra}
        schemes[row.label.strip("()")] = weights
    # the paper's coefficients: decoder 1 but 8 in (E), cmfm only in (C), (A) the primary loss alone
    assert [schemes[s]["decoder"] for s in "ABCDE"] == [1, 1, 1, 1, 8]
    assert [schemes[s]["cmfm"] for s in "ABCDE"] == [0, 0, 1, 0, 0]
    assert sum(schemes["A"].values()) == 1


def test_the_summary_is_mean_and_sample_std_over_seeds_with_the_paper_scale(tmp_path):
    table = get_table(5)
    runs = [{"BLEU-3": 10.0, "BLEU-4": 5.0, "METEOR": 12.0, "ROUGE-L": 30.0, "CIDEr": c} for c in (0.2, 0.4, 0.9)]
    zero, *keys = [f"{row.label} {json.dumps(row.extra, sort_keys=True)}" for row in table.rows]
    outcome = {
        "table": table,
        "scores": {zero: [dict(r) for r in runs], keys[0]: runs, keys[1]: [*runs[:2], {**runs[2], "BLEU-4": 8.0}]},
        "seconds": {zero: [0.0] * 3, keys[0]: [1.0, 2.0, 3.0], keys[1]: [4.0, 4.0, 4.0]},
        "seeds": [0, 1, 2],
        "settings": [],
    }
    header, cells, records = summarise(outcome)
    assert header[:2] == ["Model", "Modality"] and header[-1] == "time (s)"
    cider = [100 * c for c in (0.2, 0.4, 0.9)]  # Tables 4-5 print CIDEr x 100
    assert cells[1][header.index("CIDEr ↑")] == f"{statistics.fmean(cider):.1f} ± {statistics.stdev(cider):.1f}"
    assert (
        cells[2][header.index("BLEU-4 ↑")] == f"{statistics.fmean([5, 5, 8]):.2f} ± {statistics.stdev([5, 5, 8]):.2f}"
    )
    assert cells[1][-1] == "2" and records[2]["BLEU-4 seed2"] == 8.0
    markdown, path = write(outcome, tmp_path, command="meltr reproduce 5")
    assert "| UniVL + MELTR | V |" in markdown.read_text()
    with path.open() as handle:
        assert [row["model"] for row in csv.DictReader(handle)] == ["UniVL zero-shot", "UniVL", "UniVL + MELTR"]
    del outcome["scores"][keys[0]][0]["CIDEr"]
    with pytest.raises(ValueError, match="table 5, row 'UniVL': no metric 'CIDEr'"):
        summarise(outcome)


def test_unknown_tables_and_bad_settings_are_named(tmp_path):
    with pytest.raises(ValueError, match="unknown table '9'"):
        get_table("9")
    with pytest.raises(ValueError, match="epochs"):
        run_config(get_table(1), get_table(1).rows[0], 0, tmp_path, ["epochs=0"])


def test_retrieval_can_fine_tune_on_the_joint_loss_and_then_ranks_pairwise():
    backbone = build_backbone("univl", "tiny", vocab_size=50, image_size=16)
    assert build_task("retrieval", backbone, "univl").scoring == "dual"
    joint = build_task("retrieval", backbone, "univl", primary="joint")
    assert joint.primary_task == "joint" and joint.scoring == "pairwise"
    with pytest.raises(ValueError, match="primary 'vtm' is not a task of univl"):
        build_task("retrieval", backbone, "univl", primary="vtm")


def test_reproduce_runs_a_table_through_the_cli_and_reuses_finished_runs(tmp_path):
    command = [sys.executable, "-m", "meltr.cli.main", "reproduce", "6", "--seeds", "0", "1", "--runs", str(tmp_path)]
    first = subprocess.run([*command, "--set", *TINY], capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr[-2000:]
    assert "| UniVL + MELTR |" in first.stdout
    results = sorted(tmp_path.glob("table6/*/results.json"))
    assert len(results) == 4
    stamps = [path.stat().st_mtime_ns for path in results]
    with (tmp_path / "table6.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:
        values = [float(row["Corr seed0"]), float(row["Corr seed1"])]
        assert float(row["Corr mean"]) == pytest.approx(statistics.fmean(values))
    again = subprocess.run([*command, "--set", *TINY], capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and [path.stat().st_mtime_ns for path in results] == stamps
    bad = subprocess.run([*command, "--set", *TINY, "lr=-1"], capture_output=True, text=True, timeout=600)
    assert bad.returncode == 2 and "lr" in bad.stderr


def test_tuning_gives_every_row_the_same_lr_budget_chosen_on_validation_only(tmp_path):
    from meltr.recipes.reproduce import row_key, run_table
    from meltr.recipes.tuning import validation_score

    lrs = [1e-4, 3e-3]
    outcome = run_table(6, [0, 1], tmp_path, TINY, progress=False, lrs=lrs, tune_seeds=1)
    table = outcome["table"]
    for row in table.rows:
        key = row_key(row)
        seed0 = {lr: validation_score(run_config(table, row, 0, tmp_path, TINY, lr).run_dir) for lr in lrs}
        assert outcome["validation"][key] == {lr: [seed0[lr]] for lr in lrs}
        chosen = outcome["lrs"][key]
        assert seed0[chosen] == max(seed0.values()) and chosen == next(lr for lr in lrs if seed0[lr] == seed0[chosen])
        # seed 1 runs only at the chosen rate, and the row reports the runs at that rate
        seed1_dirs = {lr: run_config(table, row, 1, tmp_path, TINY, lr).run_dir for lr in lrs}
        assert [(lr, d.exists()) for lr, d in seed1_dirs.items()] == [(lr, lr == chosen) for lr in lrs]
        reported = [
            json.loads((run_config(table, row, s, tmp_path, TINY, chosen).run_dir / "results.json").read_text())
            for s in (0, 1)
        ]
        assert outcome["scores"][key] == [r["test"] for r in reported]
    header, cells, _ = summarise(outcome)
    assert header[-2:] == ["lr", "time (s)"]
    assert [line[-2] for line in cells] == [f"{outcome['lrs'][row_key(row)]:g}" for row in table.rows]
    markdown, _ = write(outcome, tmp_path)
    assert "validation per learning rate" in markdown.read_text()
    with pytest.raises(ValueError, match="--tune-seeds"):
        run_table(6, [0, 1], tmp_path, TINY, lrs=lrs, tune_seeds=3)


def test_validation_score_and_best_choice_against_the_files(tmp_path):
    from meltr.recipes.tuning import best_choice, validation_score

    epochs = [{"epoch": 0, "val/t2v/R@1": 3.0}, {"epoch": 1, "val/t2v/R@1": 2.0}]
    (tmp_path / "epochs.json").write_text(json.dumps(epochs))
    (tmp_path / "results.json").write_text(json.dumps({"best_epoch": 0, "metric": "t2v/R@1"}))
    assert validation_score(tmp_path) == 3.0
    assert best_choice({1e-4: [1.0, 3.0], 3e-4: [2.0, 2.0], 1e-3: [1.9, 2.0]}) == 1e-4  # the first of equal means
    with pytest.raises(ValueError, match="not a finished finetune run"):
        validation_score(tmp_path / "missing")
    with pytest.raises(ValueError, match="at least one validation score"):
        best_choice({1e-4: []})


def test_a_zero_shot_row_is_the_recipes_model_tested_without_fine_tuning(tmp_path):
    from meltr.recipes.finetune import zero_shot
    from meltr.recipes.reproduce import row_key, run_table

    outcome = run_table(5, [0], tmp_path, TINY, progress=False)
    table = outcome["table"]
    (row,) = [row for row in table.rows if row.zero_shot]
    expected = zero_shot(run_config(table, row, 0, tmp_path, TINY))
    assert outcome["scores"][row_key(row)] == [expected]
    assert not run_config(table, row, 0, tmp_path, TINY).run_dir.exists()  # nothing is trained or written for it
    fine_tuned = outcome["scores"][row_key(table.rows[1])][0]
    assert fine_tuned != expected
