"""Every CLI subcommand with bad inputs: exit code 2 (usage) or 1 (runtime), one line on stderr, nothing written.

Each case runs the real console entry point in a subprocess, in a fresh folder that also holds a finished tiny
run directory; afterwards that folder must be exactly as before (same files, same bytes).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "src" / "meltr" / "recipes" / "configs" / "tiny.yaml"
PRETRAIN_TINY = ["pretrain", "--size", "tiny", "--steps", "1", "--batch-size", "2", "--world", "n_pretrain=4"]
SMALL = ["epochs=1", "world.n_train=32", "world.n_meta=16", "world.n_test=16", "combiner_options.d_model=16",
         "combiner_options.num_heads=2"]  # fmt: skip


class Crafted:
    """A pickle that, when unpickled, creates a marker file (stands for any code)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def meltr(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src")}
    return subprocess.run(
        [sys.executable, "-m", "meltr.cli.main", *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=300
    )


def snapshot(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
        for p in sorted(folder.rglob("*"))
    }


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    """A folder with bad files of every kind and a finished tiny run (``runs/tiny``)."""
    folder = tmp_path_factory.mktemp("bad")
    (folder / "empty.yaml").write_text("")
    (folder / "comments.yaml").write_text("# nothing but a comment\n")
    (folder / "duplicate.yaml").write_text(TINY.read_text() + "lr: 1.0e-2\n")
    (folder / "truncated.yaml").write_text(TINY.read_text().rstrip()[:-3])
    (folder / "a_dir.yaml").mkdir()
    (folder / "garbage.pt").write_bytes(b"not a checkpoint at all")
    torch.save(Crafted(folder / "PWNED"), folder / "crafted.pt")
    result = meltr("finetune", "--config", str(TINY), "--quiet", "out_root=runs", *SMALL, cwd=folder)
    assert result.returncode == 0, result.stderr
    return folder


FT = ["finetune", "--config", str(TINY)]
CASES = {
    # name: (argv, expected exit code, a fragment of the one stderr line)
    "directory as config": (["finetune", "--config", "a_dir.yaml"], 2, "is a directory"),
    "missing config": (["finetune", "--config", "nope.yaml"], 2, "no such file and no shipped config"),
    "empty config": (["finetune", "--config", "empty.yaml"], 2, "is empty"),
    "comment-only config": (["finetune", "--config", "comments.yaml"], 2, "is empty"),
    "duplicate keys": (["finetune", "--config", "duplicate.yaml"], 2, "duplicate key 'lr'"),
    "truncated config": (["finetune", "--config", "truncated.yaml"], 2, "cut short"),
    "n_train below batch_size": (
        [*FT, "world.n_train=8", "out_root=runs"],
        2,
        "n_train (8) is smaller than batch_size",
    ),
    "negative terms": (
        [*FT, "hypergrad=neumann", "hypergrad_options.terms=-3"],
        2,
        "terms",
    ),
    "typo in options": (
        [*FT, "combiner_options.d_modle=32"],
        2,
        "did you mean 'd_model'",
    ),
    "typo in hypergrad options": (
        [*FT, "hypergrad=cg", "hypergrad_options.iter=3"],
        2,
        "did you mean 'iters'",
    ),
    "d_model=abc": ([*FT, "combiner_options.d_model=abc"], 2, "combiner_options.d_model"),
    "lr inf": ([*FT, "lr=.inf"], 2, "must be a finite number"),
    "lr nan": ([*FT, "lr=.nan"], 2, "must be a finite number"),
    "unknown field": ([*FT, "learning_rate=1"], 2, "unknown field 'learning_rate'"),
    "bad override": ([*FT, "epochs"], 2, "expected key=value"),
    "another recipe in the run dir": (
        [*FT, "out_root=runs", "seed=1", *SMALL],
        2,
        "holds a run of another recipe",
    ),
    "crafted checkpoint": ([*FT, "checkpoint=crafted.pt", "name=x"], 2, "--unsafe-load"),
    "garbage checkpoint": (
        [*FT, "checkpoint=garbage.pt", "name=y"],
        2,
        "not a readable meltr checkpoint",
    ),
    "best.pt as a backbone": (
        [*FT, "checkpoint=runs/tiny/best.pt", "name=z"],
        2,
        "not a backbone checkpoint",
    ),
    "evaluate clips 0": (["evaluate", "--clips", "0"], 2, "'clips' must be at least 2"),
    "evaluate clips abc": (["evaluate", "--clips", "abc"], 2, "invalid int value"),
    "evaluate crafted": (["evaluate", "--checkpoint", "crafted.pt"], 2, "--unsafe-load"),
    "evaluate wrong backbone": (
        ["evaluate", "--backbone", "violet", "--checkpoint", str(ROOT / "src/meltr/assets/checkpoints/allinone.pt")],
        2,
        "use --backbone allinone",
    ),
    "evaluate fine-tuned checkpoint": (
        ["evaluate", "--checkpoint", "runs/tiny/best.pt"],
        2,
        "not a backbone checkpoint",
    ),
    "evaluate directory": (["evaluate", "--checkpoint", "runs"], 2, "is a directory"),
    "pretrain bad world": (["pretrain", "--world", "n_pretrain=abc"], 2, "n_pretrain"),
    "pretrain batch too large": (
        ["pretrain", "--size", "tiny", "--world", "n_pretrain=4", "--out", "p"],
        2,
        "smaller than --batch-size",
    ),
    "pretrain bad set": (["pretrain", "--set", "dimm=3", "--out", "p"], 2, "dimm"),
    "pretrain unknown task": (["pretrain", "--tasks", "nope", "--out", "p"], 2, "nope"),
    "world preview n 0": (["world", "preview", "--n", "0"], 2, "--n must be at least 1"),
    "world preview bad size": (["world", "preview", "--image-size", "3", "--out", "w"], 2, "image_size"),
    "demo toy steps 0": (["demo", "--toy", "--steps", "0"], 2, "--steps must be at least 1"),
    "demo bad override": (["demo", "epochs=0"], 2, "'epochs' must be at least 1"),
    "analyze not a run": (["analyze", "a_dir.yaml"], 2, "not a finished meltr finetune run directory"),
    "reproduce bad table": (["reproduce", "9", "--runs", "r"], 2, "table"),
    "reproduce bad setting": (["reproduce", "1", "--set", "learning_rate=1", "--runs", "r"], 2, "learning_rate"),
    "pretrain into a finetune run": (
        [*PRETRAIN_TINY, "--out", "runs/tiny"],
        2,
        "holds a finetune run",
    ),
    "adapt into a finetune run": (
        ["adapt", "--seeds", "0", "--methods", "zero_shot", "--runs", "runs/tiny"],
        2,
        "holds a finetune run",
    ),
    "harmonize into a finetune run": (["harmonize", "--runs", "runs/tiny", "--out", "h.md"], 2, "holds a finetune run"),
    "world preview bad override": (["world", "preview", "colour=1", "--out", "w"], 2, "unknown field 'colour'"),
    "unknown subcommand": (["fly"], 2, "invalid choice"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_one_line_with_its_exit_code_and_changes_nothing(name, workspace):
    argv, code, fragment = CASES[name]
    before = snapshot(workspace)
    result = meltr(*argv, cwd=workspace)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == code, result.stderr
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("meltr"), lines[0]
    assert fragment in lines[0], lines[0]
    assert "Traceback" not in result.stderr
    assert snapshot(workspace) == before
    assert not (workspace / "PWNED").exists()


def test_debug_shows_the_traceback(workspace):
    result = meltr("--debug", "finetune", "--config", "empty.yaml", cwd=workspace)
    assert result.returncode == 2
    assert "Traceback" in result.stderr and result.stderr.strip().splitlines()[-1].startswith("meltr finetune:")


def test_print_config_shows_the_resolved_config_and_writes_nothing(workspace):
    before = snapshot(workspace)
    result = meltr("finetune", "--config", str(TINY), "seed=7", "--print-config", cwd=workspace)
    assert result.returncode == 0, result.stderr
    assert "seed: 7\n" in result.stdout and "name: tiny\n" in result.stdout and "meta_every: 2\n" in result.stdout
    assert snapshot(workspace) == before


def test_a_read_only_output_folder_is_one_line_exit_1(workspace, tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root writes into read-only folders")
    locked = tmp_path / "ro"
    locked.mkdir()
    locked.chmod(0o500)
    result = meltr("finetune", "--config", str(TINY), f"out_root={locked}", *SMALL, cwd=workspace)
    assert result.returncode == 1 and len(result.stderr.strip().splitlines()) == 1, result.stderr


PRINT_CONFIG = {
    "finetune": ["finetune", "--config", str(TINY), "seed=7"],
    "evaluate": ["evaluate", "--clips", "10"],
    "pretrain": ["pretrain", "--steps", "5", "overrides.dim=32"],
    "adapt": ["adapt", "--steps", "7", "msta.bottleneck_dim=4"],
    "harmonize": ["harmonize", "--world", "audio_noise=0.5", "--steps", "9", "model.dim=32"],
    "reproduce": ["reproduce", "7", "epochs=2"],
    "demo": ["demo", "epochs=1"],
    "world preview": ["world", "preview", "--n", "2", "pixel_noise=0.1"],
    "world export": ["world", "export", "--format", "msrvtt", "--out", "e", "--n-train", "5"],
}
ROUND_TRIP = {  # the command that reads the printed config back (--n sets the preview's split size itself)
    "finetune": ["finetune"],
    "pretrain": ["pretrain"],
    "adapt": ["adapt"],
    "harmonize": ["harmonize"],
    "world preview": ["world", "preview", "--n", "2"],
    "world export": ["world", "export", "--format", "msrvtt", "--out", "e"],
}


@pytest.mark.parametrize("name", list(PRINT_CONFIG))
def test_every_subcommand_prints_its_resolved_config_and_reads_it_back(name, workspace, tmp_path, monkeypatch, capsys):
    import yaml

    from meltr.cli.main import main

    monkeypatch.chdir(workspace)
    before = snapshot(workspace)
    assert main([*PRINT_CONFIG[name], "--print-config"]) == 0
    printed = capsys.readouterr().out
    documents = [d for d in yaml.safe_load_all(printed) if d is not None]
    assert documents and all(isinstance(d, dict) for d in documents)
    override = PRINT_CONFIG[name][-1]
    key, _, value = override.partition("=")
    if "=" in override:  # the last KEY=VALUE shows in every resolved config
        for document in documents:
            for part in key.split(".")[:-1]:
                document = document[part]
            assert document[key.split(".")[-1]] == yaml.safe_load(value)
    if name in ROUND_TRIP:
        recipe = tmp_path / "resolved.yaml"
        recipe.write_text(printed)
        assert main([*ROUND_TRIP[name], "--config", str(recipe), "--print-config"]) == 0
        assert capsys.readouterr().out == printed
    assert snapshot(workspace) == before
