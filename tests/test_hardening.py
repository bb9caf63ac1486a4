"""Issue "Hardening": one test per numbered case (safe loading, one run per directory, no silent wrong runs,
a failed run leaves no claim, one-line errors, rough edges, API sharp edges). The CLI battery is test_bad_inputs.py.
"""

from __future__ import annotations

import errno
import inspect
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from meltr.config import ConfigError, read_recipe
from meltr.models import build_backbone
from meltr.recipes.finetune import FinetuneConfig, finetune
from meltr.training.backbones import load_pretrained, save_pretrained
from meltr.training.checkpoint import load_checkpoint
from meltr.training.run_directory import LOCK, RunDirectory, RunDirectoryError

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "src" / "meltr" / "recipes" / "configs" / "tiny.yaml"
SMALL = ["checkpoint=none", "size=tiny", "world.n_train=32", "world.n_meta=16", "world.n_test=16", "epochs=1",
         "combiner_options.d_model=16", "combiner_options.num_heads=2"]  # fmt: skip


def tiny_config(tmp_path: Path, *extra: str) -> FinetuneConfig:
    return FinetuneConfig.load(TINY, [*SMALL, f"out_root={tmp_path}", *extra])


class Crafted:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


# -- 1. arbitrary code from a checkpoint ---------------------------------------------------------------------------
def test_a_crafted_pickle_runs_no_code_wherever_meltr_reads_a_checkpoint(tmp_path):
    marker = tmp_path / "PWNED"
    crafted = tmp_path / "crafted.pt"
    torch.save({"model": Crafted(marker)}, crafted)
    with pytest.raises(ValueError, match="--unsafe-load"):
        load_checkpoint(crafted)
    with pytest.raises(ValueError, match="--unsafe-load"):
        load_pretrained(crafted)
    config = tiny_config(tmp_path)  # as a run's last.pt
    config.run_dir.mkdir(parents=True)
    shutil.copy(crafted, config.run_dir / "last.pt")
    with pytest.raises(ValueError, match="--unsafe-load"):
        finetune(config, progress=False)
    from meltr.data import make_world
    from meltr.recipes.pretrain import PretrainConfig, pretrain  # as pre-training's checkpoint

    world = make_world(n_pretrain=8, n_train=0, n_meta=0, n_test=0)
    with pytest.raises(ValueError, match="--unsafe-load"):
        pretrain(PretrainConfig(size="tiny", steps=1, batch_size=4), world, checkpoint=crafted)
    assert not marker.exists()
    # The control: the same file does run its code when the caller explicitly asks to trust it.
    load_checkpoint(crafted, unsafe=True)
    assert marker.exists()


def test_every_checkpoint_meltr_writes_loads_with_weights_only(tmp_path):
    config = tiny_config(tmp_path)
    finetune(config, progress=False)
    for name in ("best.pt", "last.pt"):
        torch.load(config.run_dir / name, weights_only=True)
    for shipped in (ROOT / "src/meltr/assets/checkpoints").glob("*.pt"):
        torch.load(shipped, weights_only=True)


def test_backbones_round_trip_through_safetensors_and_refuse_another_backbone(tmp_path):
    torch.manual_seed(0)
    model = build_backbone("univl", "tiny", vocab_size=80)
    path = save_pretrained(tmp_path / "univl.safetensors", model, "univl", size="tiny", recipe={"steps": 3})
    loaded = load_pretrained(path, backbone="univl")
    for name, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], value)
    with pytest.raises(ValueError, match=r"univl.safetensors: holds a checkpoint for backbone 'univl', not 'violet'"):
        load_pretrained(path, backbone="violet")
    with pytest.raises(ValueError, match=r"for size 'tiny', not 'default'"):
        load_pretrained(save_pretrained(tmp_path / "univl.pt", model, "univl", size="tiny"), size="default")


def test_adapters_round_trip_through_safetensors(tmp_path):
    from meltr.adapters import ADAPTERS, adapter_state_dict, load_adapter, save_adapter

    torch.manual_seed(0)
    model = ADAPTERS.build("msta", build_backbone("univl", "tiny", vocab_size=80))
    with torch.no_grad():
        for value in adapter_state_dict(model).values():
            value.normal_()
    save_adapter(model, tmp_path / "msta.safetensors")
    torch.manual_seed(1)
    fresh = load_adapter(build_backbone("univl", "tiny", vocab_size=80), tmp_path / "msta.safetensors")
    for name, value in adapter_state_dict(model).items():
        assert torch.equal(adapter_state_dict(fresh)[name], value)


# -- 2. two runs in one directory -----------------------------------------------------------------------------------
def test_a_second_run_is_refused_with_the_first_ones_identity_and_a_stale_lock_is_taken_over(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        config = tiny_config(tmp_path)
        config.run_dir.mkdir(parents=True)
        import socket

        lock = {"pid": holder.pid, "host": socket.gethostname(), "recipe": "finetune", "since": time.time()}
        (config.run_dir / LOCK).write_text(json.dumps(lock))
        with pytest.raises(RunDirectoryError, match=rf"in use by another run \(finetune, pid {holder.pid} on"):
            finetune(tiny_config(tmp_path, "seed=1"), progress=False)
        assert sorted(p.name for p in config.run_dir.iterdir()) == [LOCK]  # nothing written
    finally:
        holder.kill()
        holder.wait()
    finetune(config, progress=False)  # the holder is gone: its lock is stale
    assert not (config.run_dir / LOCK).exists()
    assert json.loads((config.run_dir / "run.json").read_text())["recipe"] == "finetune"


def test_a_directory_of_another_recipe_kind_is_refused(tmp_path):
    with RunDirectory(tmp_path / "run", "pretrain", {"steps": 1}) as directory:
        directory.save("state.pt", {"x": torch.zeros(1)}, resumable=True)
    with pytest.raises(RunDirectoryError, match="holds a pretrain run, not a finetune run"):
        RunDirectory(tmp_path / "run", "finetune", {"steps": 1}).claim()


# -- 3. silent wrong runs ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "is empty"),
        ("# only a comment\n", "is empty"),
        ("name: a\nlr: 1.0e-3\nlr: 1.0e-2\n", "duplicate key 'lr'"),
        ("name: a\nepochs: 1", "cut short"),
        ("- a list\n", "a recipe is a mapping"),
    ],
)
def test_recipes_that_would_run_something_else_are_refused(tmp_path, text, message):
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        read_recipe(path)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("world.n_train=8", r"world.n_train \(8\) is smaller than batch_size \(16\)"),
        ("lr=.inf", "'lr' must be a finite number"),
        ("gamma=.nan", "'reg_weight' must be a finite number"),
        ("hypergrad_options.terms=-3", "'terms' is out of range"),
        ("combiner_options.d_modle=8", r"'combiner_options.d_modle': not an option .*did you mean 'd_model'"),
        ("combiner_options.d_model=abc", "'combiner_options.d_model' must be an integer"),
        ("backbone_options.dimm=8", "did you mean 'dim'"),
        ("task_options.scorin=dual", "did you mean 'scoring'"),
        ("world.n_trian=64", "did you mean 'n_train'"),
    ],
)
def test_values_that_would_train_wrongly_are_refused_before_any_work(tmp_path, override, message):
    extra = ["hypergrad=neumann"] if "terms" in override else []
    with pytest.raises(ConfigError, match=message):
        tiny_config(tmp_path, *extra, override)
    assert not tmp_path.joinpath("tiny").exists()


def test_a_checkpoint_of_another_backbone_is_refused():
    shipped = ROOT / "src/meltr/assets/checkpoints/allinone.pt"
    with pytest.raises(ValueError, match="holds a checkpoint for backbone 'allinone', not 'violet'"):
        load_pretrained(shipped, backbone="violet")


def test_losses_that_do_not_require_grad_are_refused_at_the_first_step():
    from meltr.combine import build_combiner
    from meltr.learner import AuxiliaryLearner
    from meltr.recipes.toy import TASKS, SharedLinear, ToyProblem

    problem = ToyProblem(dim=4, primary_examples=8, aux_examples=8, meta_examples=8, seed=0)
    model = SharedLinear(problem.dim).requires_grad_(False)
    combiner = build_combiner("meltr", TASKS, d_model=8, mlp_hidden=4, ff_dim=8, num_heads=2)
    learner = AuxiliaryLearner(model, combiner, torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1))
    with pytest.raises(ValueError, match="do not require grad"):
        learner.step(next(iter(problem.batches(batch_size=4, seed=0))))


# -- 4. a failed run blocks the corrected rerun --------------------------------------------------------------------
def test_a_run_that_fails_before_its_first_state_leaves_no_claim(tmp_path, monkeypatch):
    from meltr.learner import AuxiliaryLearner

    config = tiny_config(tmp_path, "task_options.scoring=nonsense")  # fails while the model is built
    with pytest.raises(ValueError, match="scoring"):
        finetune(config, progress=False)
    assert not config.run_dir.exists()

    def diverged(self, batch):  # what on_nonfinite=raise does when lr is far too high
        raise FloatingPointError("step 0: non-finite losses")

    step = AuxiliaryLearner.step
    monkeypatch.setattr(AuxiliaryLearner, "step", diverged)
    with pytest.raises(FloatingPointError):  # dies at its first step
        finetune(tiny_config(tmp_path, "lr=10.0", "on_nonfinite=raise"), progress=False)
    assert not config.run_dir.exists()
    monkeypatch.setattr(AuxiliaryLearner, "step", step)
    finetune(tiny_config(tmp_path), progress=False)  # the corrected rerun (another lr) uses the same directory


def test_an_interrupted_first_epoch_leaves_no_claim_and_a_later_one_resumes(tmp_path, monkeypatch):
    from meltr.learner import AuxiliaryLearner

    step = AuxiliaryLearner.step
    calls = {"n": 0, "stop": 2}  # two steps per epoch

    def interrupted(self, batch):
        calls["n"] += 1
        if calls["n"] == calls["stop"]:
            raise KeyboardInterrupt
        return step(self, batch)

    monkeypatch.setattr(AuxiliaryLearner, "step", interrupted)
    with pytest.raises(KeyboardInterrupt):  # inside the first epoch: nothing to resume
        finetune(tiny_config(tmp_path, "epochs=2"), progress=False)
    assert not (tmp_path / "tiny").exists()
    calls.update(n=0, stop=3)
    with pytest.raises(KeyboardInterrupt):  # inside the second epoch: last.pt holds the first
        finetune(tiny_config(tmp_path, "epochs=2"), progress=False)
    assert (tmp_path / "tiny" / "last.pt").exists() and not (tmp_path / "tiny" / LOCK).exists()
    monkeypatch.setattr(AuxiliaryLearner, "step", step)
    assert finetune(tiny_config(tmp_path, "epochs=2"), progress=False).best_epoch in (0, 1)


# -- 5. tracebacks instead of one line -----------------------------------------------------------------------------
def test_a_last_pt_of_another_size_is_a_one_line_error(tmp_path):
    other = tiny_config(tmp_path / "other", "combiner_options.d_model=8")
    finetune(other, progress=False)
    config = tiny_config(tmp_path)
    config.run_dir.mkdir(parents=True)
    shutil.copy(other.run_dir / "last.pt", config.run_dir / "last.pt")
    with pytest.raises(ValueError, match=r"last.pt: does not fit this run's model .*remove it to start over"):
        finetune(config, progress=False)


def test_disk_full_and_read_only_are_one_line_runtime_errors():
    from meltr.cli.main import describe

    line, code = describe(OSError(errno.ENOSPC, "No space left on device", "runs/x/last.pt"))
    assert code == 1 and "runs/x/last.pt" in line and "rerun the same command to resume" in line
    line, code = describe(OSError(errno.EROFS, "Read-only file system", "runs/x"))
    assert code == 1 and "choose another --out" in line
    assert describe(ConfigError("x.yaml: field 'lr' must be positive"))[1] == 2


@pytest.mark.slow  # a real SIGINT to a real run: seconds on an idle machine, minutes on a loaded one
def test_ctrl_c_in_finetune_is_one_line_and_the_rerun_resumes(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src")}
    command = [sys.executable, "-m", "meltr.cli.main", "finetune", "--config", str(TINY), "--quiet",
               f"out_root={tmp_path}", *SMALL[:-3], "epochs=30"]  # fmt: skip
    # A shell without job control starts background jobs with SIGINT ignored, and children inherit that: give
    # the run the default disposition, so the test does not depend on how pytest itself was launched.
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    deadline = time.time() + 240
    while not (tmp_path / "tiny" / "last.pt").exists() and time.time() < deadline:
        time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    lines = [line for line in stderr.splitlines() if line.startswith("meltr finetune:")]
    assert process.returncode == 130, stderr
    assert lines == ["meltr finetune: interrupted; rerun the same command to resume"], stderr
    assert "Traceback" not in stderr and not (tmp_path / "tiny" / LOCK).exists()
    state = torch.load(tmp_path / "tiny" / "last.pt", weights_only=True)
    assert state["epoch"] < 29


# -- 6. rough edges ------------------------------------------------------------------------------------------------
def test_finetune_prints_only_json_on_stdout_and_takes_out(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src")}
    out = tmp_path / "somewhere" / "my-run"
    result = subprocess.run(
        [sys.executable, "-m", "meltr.cli.main", "finetune", "--config", str(TINY), "--out", str(out), *SMALL],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    printed = json.loads(result.stdout)
    assert printed["run_dir"] == str(out) and printed["primary_task"] == "align"
    assert "epoch 0: val" in result.stderr
    assert json.loads((out / "run.json").read_text())["primary_task"] == "align"


def test_world_preview_out_folder_writes_inside_it(tmp_path):
    from meltr.cli.main import main

    assert main(["world", "preview", "--n", "1", "--out", str(tmp_path / "previews")]) == 0
    assert (tmp_path / "previews" / "world_preview.png").exists()
    assert not (tmp_path / "previews.png").exists()


def test_demo_help_is_plain_text(capsys):
    from meltr.cli.main import main

    with pytest.raises(SystemExit):
        main(["demo", "--help"])
    text = capsys.readouterr().out
    assert "``" not in text and ":mod:" not in text and "single-task" in text


def test_world_generation_reports_its_progress():
    from meltr.data import WorldConfig
    from meltr.data.world import generate_split

    counts = []
    split = generate_split(WorldConfig(n_pretrain=0, n_train=0, n_meta=0, n_test=70), "test", advance=counts.append)
    assert sum(counts) == len(split.clips) == 70 and len(counts) >= 1


# -- 7. API sharp edges --------------------------------------------------------------------------------------------
def _toy_learner(meta_every: int, seed: int = 0):
    from meltr.combine import build_combiner
    from meltr.learner import AuxiliaryLearner
    from meltr.recipes.toy import TASKS, SharedLinear, ToyProblem

    class Noisy(SharedLinear):
        """Draws from the global generator in every forward, as dropout and random masks do."""

        def forward(self, batch):
            losses = super().forward(batch)
            noise = 1 + 0.01 * torch.rand(())
            return {task: loss * noise for task, loss in losses.items()}

    torch.manual_seed(seed)
    problem = ToyProblem(dim=4, primary_examples=16, aux_examples=16, meta_examples=16, seed=seed)
    model = Noisy(problem.dim)
    combiner = build_combiner("meltr", TASKS, d_model=8, mlp_hidden=4, ff_dim=8, num_heads=2)
    learner = AuxiliaryLearner(model, combiner, torch.optim.SGD(model.parameters(), lr=0.05), meta_every=meta_every)
    return learner, list(itertools.islice(problem.batches(batch_size=4, seed=seed), 6))  # batches() is endless


def test_meta_steps_leave_the_models_random_stream_alone():
    states = []
    for meta_every in (1, 10**6):
        learner, batches = _toy_learner(meta_every)
        for batch in batches:
            learner.step(batch)
        assert learner.meta_steps == (len(batches) if meta_every == 1 else 0)
        states.append(torch.get_rng_state())
    assert torch.equal(states[0], states[1])


def test_hypergradient_is_the_meta_steps_and_changes_nothing():
    learner, batches = _toy_learner(10**6)
    for batch in batches[:2]:
        learner.step(batch)
    before = {k: v.clone() for k, v in learner.combiner.state_dict().items()}
    model_before = {k: v.clone() for k, v in learner.model.state_dict().items()}
    rng = torch.get_rng_state()
    generator = learner.meta_generator.get_state()
    grads, stats = learner.hypergradient(batches[0], batches[1])
    assert len(grads) == len(learner.combiner.meta_parameters()) and stats.hypergrad_norm > 0
    assert all(torch.equal(v, learner.combiner.state_dict()[k]) for k, v in before.items())
    assert all(torch.equal(v, learner.model.state_dict()[k]) for k, v in model_before.items())
    assert torch.equal(rng, torch.get_rng_state()) and learner.meta_steps == 0
    learner.meta_generator.set_state(generator)
    again, _ = learner.hypergradient(batches[0], batches[1])
    assert all(torch.equal(a, b) for a, b in zip(grads, again, strict=True))


def test_meta_problem_and_learner_share_their_defaults():
    from meltr.hypergrad import MetaProblem
    from meltr.learner import AuxiliaryLearner

    learner = inspect.signature(AuxiliaryLearner).parameters
    problem = {f.name: f.default for f in __import__("dataclasses").fields(MetaProblem)}
    for name in ("reg_weight", "backend", "fd_scale"):
        assert learner[name].default == problem[name], name


def test_f1_is_weighted_by_label_support_and_mults_by_prediction_support():
    from meltr.metrics.sentiment import weighted_f1

    truth = [True] * 6 + [False] * 2
    preds = [True] * 4 + [False] * 4
    # per-class F1: positive 2*4/(2*4+0+2) = 0.8, negative 2*2/(2*2+2+0) = 2/3
    assert weighted_f1(preds, truth) == pytest.approx((6 * 0.8 + 2 * 2 / 3) / 8)  # label support
    assert weighted_f1(truth, preds) == pytest.approx((4 * 0.8 + 4 * 2 / 3) / 8)  # MulT's argument order
