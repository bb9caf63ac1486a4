"""`meltr finetune`: recipes, the run directory, resume, and bad input."""

import json
import math
import subprocess
import sys

import pytest
import torch
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from meltr.recipes import config_path, shipped_configs
from meltr.recipes.finetune import FinetuneConfig, apply_overrides, finetune

# Every shipped fine-tuning config: the top-level ones and the recipe every reproduced table starts from (the tables
# themselves are checked in test_reproduce.py).
FINETUNE_CONFIGS = ["demo_retrieval", "tiny", "tiny_msrvtt_disk", "reproduce/miniature"]


def test_every_shipped_finetune_config_is_listed():
    shipped = [name for name in shipped_configs() if not name.startswith("reproduce/table")]
    assert sorted(shipped) == sorted(FINETUNE_CONFIGS)


@pytest.mark.parametrize("name", FINETUNE_CONFIGS)
def test_every_shipped_recipe_loads_and_validates(name):
    config = FinetuneConfig.load(config_path(name))
    assert config.as_dict()["name"]


def test_overrides_set_fields_and_nested_options():
    values = {"combiner_options": {"d_model": 32}}
    apply_overrides(values, ["seed=3", "combiner_options.num_heads=2", "world.n_train=64", "hypergrad=cg"])
    assert values == {
        "combiner_options": {"d_model": 32, "num_heads": 2},
        "seed": 3,
        "world": {"n_train": 64},
        "hypergrad": "cg",
    }


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("combiner=meltrr", "'combiner' must be one of"),
        ("epochs=0", "'epochs' must be at least 1"),
        ("learning_rate=1", "unknown field"),
        ("hypergrad=aid", "'hypergrad' must be one of"),
        ("lr=fast", r"tiny\.yaml: field 'lr' must be a number, got 'fast'"),
        ("epochs=2.5", "field 'epochs' must be an integer, got 2.5"),
        ("eval_clips=all", "field 'eval_clips' must be an integer or null"),
        ("world=3", "field 'world' must be dict"),
    ],
)
def test_bad_recipes_name_the_field(override, message):
    with pytest.raises(ValueError, match=message):
        FinetuneConfig.load(config_path("tiny"), [override])


@pytest.mark.parametrize(("raw", "expected"), [("1e-3", 1e-3), ("3", 3.0), ("0.5", 0.5), ("2E-4", 2e-4)])
def test_floats_that_yaml_reads_as_strings_or_ints_become_floats(raw, expected):
    # YAML 1.1 reads 1e-3 (no dot) as a string and 3 as an int; a float field takes both.
    config = FinetuneConfig.load(config_path("tiny"), [f"lr={raw}", f"reg_weight={raw}"])
    assert type(config.lr) is float and config.lr == expected
    assert type(config.reg_weight) is float and config.reg_weight == expected


def test_gamma_is_an_alias_of_reg_weight_in_files_and_overrides(tmp_path):
    assert FinetuneConfig.load(config_path("tiny"), ["gamma=0.25"]).reg_weight == 0.25
    recipe = tmp_path / "old.yaml"
    recipe.write_text(config_path("tiny").read_text() + "gamma: 0.5\n")
    assert FinetuneConfig.load(recipe).reg_weight == 0.5
    with pytest.raises(ValueError, match="'reg_weight' or its alias 'gamma', not both"):
        FinetuneConfig.from_dict({"gamma": 0.5, "reg_weight": 0.1})


def test_every_learner_option_reaches_the_learner(tmp_path, monkeypatch):
    import inspect

    from meltr.learner import AuxiliaryLearner
    from meltr.recipes import finetune as recipe

    # every keyword of the learner that is not an object the recipe builds is a field of the config
    built = {"meta_optimizer", "meta_data", "lookahead_data", "gamma"}
    # the training-loop hooks: objects of the user's own loop (backward, grad_scaler, replay_fetch) or options the
    # recipe does not expose yet (precision, accumulation, gradient clipping, replay storage); a new learner
    # keyword must be a config field or listed here
    loop_hooks = {
        "backward",
        "grad_scaler",
        "max_grad_norm",
        "accumulate",
        "precision",
        "replay_storage",
        "replay_fetch",
        "replay_index_key",
        "replay_in_checkpoint",
    }
    options = [p for p in inspect.signature(AuxiliaryLearner).parameters.values() if p.kind is p.KEYWORD_ONLY]
    assert {p.name for p in options} - built - loop_hooks == set(recipe.LEARNER_FIELDS)
    assert set(recipe.LEARNER_FIELDS) <= set(FinetuneConfig.__dataclass_fields__)
    seen = {}

    class Spy(AuxiliaryLearner):
        def __init__(self, *args, **kwargs):
            seen.update(kwargs)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(recipe, "AuxiliaryLearner", Spy)
    changed = ["clip_norm=7.5", "replay_size=4", "on_nonfinite=raise", "fd_scale=2e-5", "track_sensitivity=false"]
    config = FinetuneConfig.load(
        config_path("tiny"), [*changed, "hypergrad_scope=[backbone.text_encoder.*]", "epochs=1", f"out_root={tmp_path}"]
    )
    recipe.finetune(config, progress=False)
    assert seen["clip_norm"] == 7.5 and seen["replay_size"] == 4 and seen["on_nonfinite"] == "raise"
    assert seen["fd_scale"] == 2e-5 and seen["track_sensitivity"] is False
    assert seen["hypergrad_scope"] == ["backbone.text_encoder.*"]


def test_a_missing_recipe_names_the_file(tmp_path):
    with pytest.raises(ValueError, match=r"nope\.yaml: no such recipe"):
        FinetuneConfig.load(tmp_path / "nope.yaml")


def test_the_cli_runs_a_tiny_recipe_end_to_end(tmp_path):
    command = [
        sys.executable,
        "-m",
        "meltr.cli.main",
        "finetune",
        "--config",
        "tiny",
        "--quiet",
        "--tensorboard",
        f"out_root={tmp_path}",
        "lookahead_every=2",
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    run_dir = tmp_path / "tiny"
    for name in (
        "config.yaml",
        "steps.csv",
        "steps.json",
        "epochs.csv",
        "epochs.json",
        "last.pt",
        "best.pt",
        "results.json",
        "plots/curves.png",
        "plots/sensitivity.png",
    ):
        assert (run_dir / name).exists(), name
    steps = json.loads((run_dir / "steps.json").read_text())
    primary = [row["loss/align"] for row in steps]
    assert len(steps) == 3 * (96 // 16)
    # the pre-trained start matches texts to clips: the primary (InfoNCE) loss stays well below chance, ln(batch)
    assert sum(primary) / len(primary) < 0.8 * math.log(16)
    assert any("meta/hypergrad_norm" in row for row in steps)
    checked = [row for row in steps if "meta/lookahead/gain" in row]
    meta_steps = [row for row in steps if "meta/hypergrad_norm" in row]
    assert len(checked) == (len(meta_steps) + 1) // 2  # every second meta step, the first included
    results = json.loads((run_dir / "results.json").read_text())
    # the recipe learns: retrieval far above chance on its 48 test clips (chance R@1 1/48 = 2.1%, median rank 24.5)
    assert results["test"]["t2v/R@1"] >= 4 * 100 / 48 and results["test"]["t2v/MdR"] <= 10
    assert results["metric"] == "t2v/R@1"
    assert results["last_epoch"] == 2 and "t2v/R@1" in results["test_last"]
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["out_root"] == str(tmp_path)
    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    logged = events.Scalars("steps/loss/align")
    assert [event.step for event in logged] == [row["step"] for row in steps]
    assert [event.value for event in logged] == pytest.approx(primary)
    assert [event.step for event in events.Scalars("epochs/val/t2v/R@1")] == [0, 1, 2]

    analyze = subprocess.run(
        [sys.executable, "-m", "meltr.cli.main", "analyze", str(run_dir)], capture_output=True, text=True, timeout=300
    )
    assert analyze.returncode == 0, analyze.stderr[-2000:]
    fig3 = (run_dir / "analysis" / "fig3.csv").read_text().splitlines()
    assert fig3[0] == "task,loss,meltr,derivative" and len(fig3) == 1 + 8 * 61
    fig4 = (run_dir / "analysis" / "fig4.csv").read_text().splitlines()
    assert fig4[0].split(",")[:3] == ["epoch", "joint", "align"] and len(fig4) == 1 + 3
    assert (run_dir / "analysis" / "fig3.png").stat().st_size > 10_000
    signal = json.loads((run_dir / "analysis" / "meta_signal.json").read_text())
    assert signal["lookahead_checks"] == len(checked) and 0 <= signal["lookahead_helped"] <= 1
    assert "look-ahead checks" in (run_dir / "analysis" / "meta_signal.txt").read_text()
    assert (run_dir / "analysis" / "meta_signal.png").exists()


def test_resume_continues_and_ends_where_an_uninterrupted_run_ends(tmp_path, caplog):
    base = [
        "checkpoint=none",
        "size=tiny",
        "world.n_train=48",
        "world.n_meta=16",
        "world.n_test=16",
        "batch_size=16",
        "epochs=2",
        "combiner_options.d_model=16",
        "combiner_options.num_heads=2",
    ]
    whole = FinetuneConfig.load(config_path("tiny"), [*base, f"out_root={tmp_path / 'a'}"])
    reference = finetune(whole, progress=False)
    first = FinetuneConfig.load(config_path("tiny"), [*base, "epochs=1", f"out_root={tmp_path / 'b'}"])
    finetune(first, progress=False)
    # an interrupted run is a run directory whose last.pt stops early: continue it with the full recipe
    config_file = tmp_path / "b" / "tiny" / "config.yaml"
    config_file.write_text(yaml.safe_dump({**yaml.safe_load(config_file.read_text()), "epochs": 2}, sort_keys=False))
    second = FinetuneConfig.load(config_path("tiny"), [*base, f"out_root={tmp_path / 'b'}"])
    caplog.clear()
    with caplog.at_level("INFO", logger="meltr"):
        resumed = finetune(second, progress=False)
    assert caplog.messages[0].startswith("resumed")
    assert resumed.test == reference.test
    steps_a = json.loads((tmp_path / "a" / "tiny" / "steps.json").read_text())
    steps_b = json.loads((tmp_path / "b" / "tiny" / "steps.json").read_text())
    assert [r["loss/align"] for r in steps_a] == [r["loss/align"] for r in steps_b]


def test_analyze_refuses_a_folder_that_is_not_a_run(tmp_path):
    from meltr.analysis.figures import analyze_run

    with pytest.raises(ValueError, match="not a finished meltr finetune run directory"):
        analyze_run(tmp_path)


def test_a_run_directory_of_another_recipe_is_left_alone(tmp_path):
    run_dir = tmp_path / "tiny"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text("name: tiny\nseed: 99\n")
    (run_dir / "notes.txt").write_text("keep me")
    config = FinetuneConfig.load(config_path("tiny"), [f"out_root={tmp_path}"])
    with pytest.raises(ValueError, match="another recipe"):
        finetune(config, progress=False)
    assert sorted(p.name for p in run_dir.iterdir()) == ["config.yaml", "notes.txt"]


def test_a_run_of_a_re_made_checkpoint_is_not_mistaken_for_the_finished_one(tmp_path):
    """Same recipe, new weights in the checkpoint file: the run directory of the old weights is refused, untouched."""
    from meltr.data import make_world
    from meltr.models import build_backbone
    from meltr.training.backbones import save_pretrained

    world = make_world(n_pretrain=0, n_train=32, n_meta=16, n_test=16)
    weights = tmp_path / "backbone.pt"

    def make_checkpoint(seed):
        torch.manual_seed(seed)
        model = build_backbone("univl", "tiny", vocab_size=world.tokenizer.vocab_size, image_size=32)
        save_pretrained(weights, model, "univl")

    make_checkpoint(0)
    overrides = [f"checkpoint={weights}", f"out_root={tmp_path / 'runs'}", "epochs=1", "batch_size=16"]
    overrides += ["world.n_train=32", "world.n_meta=16", "world.n_test=16"]
    config = FinetuneConfig.load(config_path("tiny"), overrides)
    finetune(config, progress=False)
    start = json.loads((config.run_dir / "start.json").read_text())
    assert start["checkpoint"] == str(weights) and len(start["sha256"]) == 64

    finetune(config, progress=False)  # same weights: the finished run is simply reused
    before = {p.name: p.read_bytes() for p in config.run_dir.iterdir() if p.is_file()}
    make_checkpoint(1)
    with pytest.raises(ValueError, match="started from other weights"):
        finetune(config, progress=False)
    assert {p.name: p.read_bytes() for p in config.run_dir.iterdir() if p.is_file()} == before
    assert json.loads((config.run_dir / "start.json").read_text()) == start
