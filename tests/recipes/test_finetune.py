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
FINETUNE_CONFIGS = ["demo_retrieval", "tiny", "tiny_hf", "tiny_msrvtt_disk", "reproduce/miniature"]


def test_every_shipped_finetune_config_is_listed():
    shipped = [name for name in shipped_configs() if not name.startswith("reproduce/table")]
    assert sorted(shipped) == sorted(FINETUNE_CONFIGS)


@pytest.mark.parametrize("name", FINETUNE_CONFIGS)
def test_every_shipped_recipe_loads_and_validates(name):
    if name == "tiny_hf":
        pytest.importorskip("transformers")
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
        ("device=gpu", "field 'device' must be cpu, cuda or auto, got 'gpu'"),
        ("precision=16", "field 'precision' must be 32, bf16 or fp16, got '16'"),
        ("precision=half", "field 'precision' must be 32, bf16 or fp16"),
        ("lr_schedule=step", r"field 'lr_schedule' must be one of \['constant', 'linear', 'cosine'\]"),
        ("warmup_steps=-1", "field 'warmup_steps' must be 0 \\(no warm-up\\) or positive"),
        ("max_grad_norm=0", "field 'max_grad_norm' must be positive or null, got 0.0"),
        ("accumulate=0", "field 'accumulate' must be at least 1"),
        ("val_every=-1", r"field 'val_every' must be 0 \(every epoch only\) or positive, got -1"),
        ("accumulate=1.5", "field 'accumulate' must be an integer"),
        ("replay_storage=index", "field 'replay_storage' must be device or cpu"),
        ("accumulate=7", r"world.n_train \(96\) is smaller than batch_size x accumulate \(112\)"),
        ("backbone=bert", "field 'backbone' must be one of .* or {hf: DIR, ...}, got 'bert'"),
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
    built = {"meta_optimizer", "meta_data", "lookahead_data", "gamma", "grad_scaler"}
    # the training-loop hooks for a user's own loop: how it back-propagates, and how it re-fetches replayed batches
    # from dataset indices (replay_storage='index'); a new learner keyword must be a config field or listed here
    loop_hooks = {"backward", "replay_fetch", "replay_index_key"}
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
    changed += ["max_grad_norm=0.5", "accumulate=2", "precision=fp16"]
    changed += ["replay_storage=cpu", "replay_in_checkpoint=false"]
    config = FinetuneConfig.load(
        config_path("tiny"), [*changed, "hypergrad_scope=[backbone.text_encoder.*]", "epochs=1", f"out_root={tmp_path}"]
    )
    recipe.finetune(config, progress=False)
    assert seen["clip_norm"] == 7.5 and seen["replay_size"] == 4 and seen["on_nonfinite"] == "raise"
    assert seen["fd_scale"] == 2e-5 and seen["track_sensitivity"] is False
    assert seen["hypergrad_scope"] == ["backbone.text_encoder.*"]
    assert seen["max_grad_norm"] == 0.5 and seen["accumulate"] == 2 and seen["precision"] == "fp16"
    assert isinstance(seen["grad_scaler"], torch.amp.GradScaler)  # fp16 gradients underflow without one
    assert seen["replay_storage"] == "cpu" and seen["replay_in_checkpoint"] is False
    state = torch.load(config.run_dir / "last.pt", weights_only=True)
    assert state["learner"]["replay_batches"] == [] and state["grad_scaler"]["scale"] > 0


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
        "validation.csv",
        "validation.json",
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


@pytest.mark.parametrize(
    "loop",
    [
        [],
        ["batch_size=8", "accumulate=2", "lr_schedule=cosine", "warmup_steps=2", "max_grad_norm=0.5", "precision=fp16"],
    ],
    ids=["plain", "schedule-accumulate-clip-fp16"],
)
def test_resume_continues_and_ends_where_an_uninterrupted_run_ends(tmp_path, caplog, loop):
    base = [
        *loop,
        "checkpoint=none",
        "size=tiny",
        "world.n_train=48",
        "world.n_meta=16",
        "world.n_test=16",
        *([] if loop else ["batch_size=16"]),
        "epochs=2",
        "combiner_options.d_model=16",
        "combiner_options.num_heads=2",
    ]
    whole = FinetuneConfig.load(config_path("tiny"), [*base, f"out_root={tmp_path / 'a'}"])
    reference = finetune(whole, progress=False)
    second = FinetuneConfig.load(config_path("tiny"), [*base, f"out_root={tmp_path / 'b'}"])

    class Interrupted(Exception):
        pass

    class InterruptAfterFirstEpoch:
        """Stops the run right after it saved last.pt of epoch 0 (a killed process leaves the same directory)."""

        def log(self, stream, row):
            pass

        def flush(self):
            raise Interrupted

        def close(self):
            pass

    with pytest.raises(Interrupted):
        finetune(second, progress=False, loggers=(InterruptAfterFirstEpoch(),))
    saved = torch.load(tmp_path / "b" / "tiny" / "last.pt", weights_only=True)
    assert saved["epoch"] == 0 and not (tmp_path / "b" / "tiny" / "results.json").exists()
    caplog.clear()
    with caplog.at_level("INFO", logger="meltr"):
        resumed = finetune(second, progress=False)
    assert caplog.messages[0].startswith("resumed")
    assert resumed.test == reference.test
    steps_a = json.loads((tmp_path / "a" / "tiny" / "steps.json").read_text())
    steps_b = json.loads((tmp_path / "b" / "tiny" / "steps.json").read_text())
    assert [r["loss/align"] for r in steps_a] == [r["loss/align"] for r in steps_b]
    assert [r["lr"] for r in steps_a] == [r["lr"] for r in steps_b]


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


# -- the training loop's options: schedule, accumulation, precision, device -------------------------------------------
SMALL_WORLD = ["world.n_train=48", "world.n_meta=16", "world.n_test=16", "epochs=2", "eval_clips=16"]


def steps_of(result):
    return json.loads((result.run_dir / "steps.json").read_text())


def test_the_schedule_and_accumulation_count_optimiser_steps(tmp_path):
    """batch_size 8 and accumulate 2 over 48 clips: 6 micro-batches and 3 optimiser steps per epoch, a meta step every
    second optimiser step, and the logged learning rate follows warm-up + linear decay over the 6 optimiser steps."""
    from meltr.training.schedule import schedule_factor

    overrides = [*SMALL_WORLD, "batch_size=8", "accumulate=2", "lr_schedule=linear", "warmup_steps=2", "lr=1e-3"]
    config = FinetuneConfig.load(config_path("tiny"), [*overrides, f"out_root={tmp_path}"])
    steps = steps_of(finetune(config, progress=False))
    assert len(steps) == 2 * 6 and not any(row["skipped"] for row in steps)
    meta_rows = [i for i, row in enumerate(steps) if "meta/hypergrad_norm" in row]
    assert meta_rows == [3, 7, 11]  # micro-batches 4, 8, 12 close optimiser steps 2, 4, 6
    expected = [1e-3 * schedule_factor("linear", i // 2, warmup_steps=2, total_steps=6) for i in range(12)]
    assert [row["lr"] for row in steps] == pytest.approx(expected, rel=1e-12)
    assert expected[:4] == pytest.approx([5e-4, 5e-4, 1e-3, 1e-3]) and expected[-1] == pytest.approx(1e-3 / 4)


def test_a_partial_group_of_micro_batches_at_the_end_of_an_epoch_is_dropped(tmp_path):
    """48 clips in micro-batches of 16 and groups of 2: one optimiser step per epoch, the third micro-batch dropped
    (as drop_last drops a partial batch), so no group spans two epochs or is left out of last.pt."""
    config = FinetuneConfig.load(config_path("tiny"), [*SMALL_WORLD, "accumulate=2", f"out_root={tmp_path}"])
    steps = steps_of(finetune(config, progress=False))
    assert [row["epoch"] for row in steps] == [0, 0, 1, 1]
    state = torch.load(config.run_dir / "last.pt", weights_only=True)
    assert state["learner"]["counters"]["inner_steps"] == 2 and state["scheduler"]["last_epoch"] == 2


def test_mixed_precision_runs_are_deterministic_and_differ_from_float32(tmp_path):
    """bf16 autocast under torch.use_deterministic_algorithms: two runs agree bit for bit, no step is skipped, and
    the losses differ from the float32 run's (the autocast ran) by little."""
    losses = {}
    for name, precision in (("a", "bf16"), ("b", "bf16"), ("c", "32")):
        config = FinetuneConfig.load(
            config_path("tiny"), [*SMALL_WORLD, f"precision={precision}", f"out_root={tmp_path / name}"]
        )
        steps = steps_of(finetune(config, progress=False))
        assert not any(row["skipped"] for row in steps)
        losses[name] = [row["loss/align"] for row in steps]
    assert losses["a"] == losses["b"]
    assert losses["a"] != losses["c"]
    assert max(abs(x - y) / y for x, y in zip(losses["a"], losses["c"], strict=True)) < 0.05


def test_a_run_gives_back_the_thread_count_and_determinism_setting_it_found(tmp_path):
    """`threads` applies to the run only: a process that runs one recipe after another (a test suite, `meltr
    reproduce`) must not inherit it (more threads than cores slow every later small-op model down badly)."""
    before = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    threads = 2 if before[0] != 2 else 3
    overrides = ["epochs=1", "world.n_train=16", "world.n_meta=16", "world.n_test=16", f"threads={threads}"]
    finetune(FinetuneConfig.load(config_path("tiny"), [*overrides, f"out_root={tmp_path}"]), progress=False)
    assert (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()) == before


def test_auto_device_is_cpu_without_cuda(monkeypatch):
    from meltr.recipes.finetune import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(ValueError, match="field 'device' must be cpu or auto: this torch sees no CUDA device"):
        FinetuneConfig.load(config_path("tiny"), ["device=cuda"])


# -- transformers backbones ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("backbone={hf: nowhere}", r"field 'backbone.hf': nowhere is not a backbone directory .* or hf: tiny-random"),
        ("backbone.kind=bert", "field 'backbone.kind' must be one of \\['bert\\+clip'"),
        ("backbone.width=31", "field 'backbone.width' must be an even integer"),
        ("backbone.hf=towers", r"field 'backbone.kind' belongs to hf: tiny-random, .* backbone=\{hf: towers\}"),
        ("backbone.dimm=8", "field 'backbone.dimm': not an option of the transformers backbone .*did you mean 'dim'"),
        ("backbone.mask_prob=2", r"field 'backbone': HFConfig.mask_prob must be in \[0, 1\]"),
        ("backbone.kind=clip;backbone.mlm=true", "field 'backbone.mlm': the CLIP-style text tower is causal"),
        ("checkpoint=none", "field 'checkpoint' does not apply to a transformers backbone"),
        ("backbone_options.dropout=0", "field 'backbone_options' does not apply to a transformers backbone"),
    ],
)
def test_bad_transformers_backbone_specs_name_the_key(override, message):
    pytest.importorskip("transformers")
    with pytest.raises(ValueError, match=message):
        FinetuneConfig.load(config_path("tiny_hf"), override.split(";"))


def tiny_hf_overrides(tmp_path, name):
    return ["epochs=1", "world.n_train=32", "world.n_meta=16", "world.n_test=16", f"out_root={tmp_path / name}"]


def test_the_tiny_hf_recipe_runs_and_equals_a_run_from_its_towers_saved_to_a_directory(tmp_path):
    """hf: tiny-random builds the towers from the seed in memory; the same towers saved with save_hf_backbone and
    given as hf: DIR make the same run, step for step (the towers never draw from the run's random stream)."""
    pytest.importorskip("transformers")
    from meltr.data import make_world
    from meltr.models.hf import HFConfig, HFVideoText, save_hf_backbone, tiny_heads, tiny_random_towers

    config = FinetuneConfig.load(config_path("tiny_hf"), tiny_hf_overrides(tmp_path, "random"))
    spec = {k: v for k, v in config.backbone.items() if k not in ("hf", "kind", "width")}
    world = make_world(config.world_config())
    towers = tiny_random_towers("bert+clip", world.tokenizer.vocab_size, 32, world.config.n_frames, 32, config.seed)
    save_hf_backbone(HFVideoText(**towers, config=HFConfig(**tiny_heads("bert+clip", spec))), tmp_path / "towers")

    random_run = finetune(config, progress=False)
    from_directory = FinetuneConfig.load(
        config_path("tiny_hf"),
        [*tiny_hf_overrides(tmp_path, "directory"), "backbone={hf: " + str(tmp_path / "towers") + "}"],
    )
    directory_run = finetune(from_directory, progress=False)
    steps = steps_of(random_run)
    assert random_run.primary_task == "vtc_t2v" and {"loss/vtc_t2v", "loss/vtm", "loss/mlm"} <= set(steps[0])
    assert len(steps) == 4 and sum("meta/hypergrad_norm" in row for row in steps) == 1  # 2 optimiser steps
    assert steps == steps_of(directory_run)
    assert random_run.test == directory_run.test
    start = json.loads((directory_run.run_dir / "start.json").read_text())
    assert start["checkpoint"] == str(tmp_path / "towers") and len(start["sha256"]) == 64
    assert json.loads((random_run.run_dir / "start.json").read_text()) == {"checkpoint": "tiny-random", "sha256": None}


def test_towers_with_a_smaller_vocabulary_than_the_data_are_refused_and_leave_nothing(tmp_path):
    pytest.importorskip("transformers")
    from meltr.models.hf import save_hf_backbone, tiny_random_backbone

    save_hf_backbone(tiny_random_backbone(vocab_size=20), tmp_path / "small")
    config = FinetuneConfig.load(
        config_path("tiny_hf"), [*tiny_hf_overrides(tmp_path, "runs"), "backbone={hf: " + str(tmp_path / "small") + "}"]
    )
    with pytest.raises(ValueError, match=r"the text tower's vocabulary \(20\) is smaller than the data's tokenizer"):
        finetune(config, progress=False)
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("*.pt"))


def test_val_every_validates_within_epochs_without_changing_the_run(tmp_path):
    """batch 8 over 48 clips: 6 optimiser steps per epoch, so val_every=4 validates after the fourth step of each
    epoch (steps 4 and 10) besides the ends of the epochs (6, 12), with a growing training clock; the steps and epoch
    metrics are those of the run without it (its random state is kept), and the end-of-epoch rows are the epochs'
    validation metrics."""
    runs = {}
    for name, extra in (("plain", []), ("periodic", ["val_every=4"])):
        overrides = [*SMALL_WORLD, "batch_size=8", "meta_every=2", f"out_root={tmp_path / name}", *extra]
        runs[name] = finetune(FinetuneConfig.load(config_path("tiny"), overrides), progress=False)
    assert steps_of(runs["plain"]) == steps_of(runs["periodic"])
    assert runs["plain"].epochs == runs["periodic"].epochs and runs["plain"].test == runs["periodic"].test
    rows = json.loads((runs["periodic"].run_dir / "validation.json").read_text())
    assert [(row["epoch"], row["step"]) for row in rows] == [(0, 4), (0, 6), (1, 10), (1, 12)]
    seconds = [row["train_seconds"] for row in rows]
    assert 0 < seconds[0] < seconds[1] < seconds[2] < seconds[3] <= runs["periodic"].seconds
    for epoch, row in zip(runs["periodic"].epochs, (rows[1], rows[3]), strict=True):
        assert {k: v for k, v in row.items() if k.startswith("val/")} == {
            k: v for k, v in epoch.items() if k.startswith("val/")
        }
    plain = json.loads((runs["plain"].run_dir / "validation.json").read_text())
    assert [(row["epoch"], row["step"]) for row in plain] == [(0, 6), (1, 12)]
