"""A non-editable install works from any directory: the shipped configs and checkpoints are package data."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow  # builds and installs the package (about a minute), then runs two real commands
def test_an_installed_meltr_runs_the_toy_demo_and_a_shipped_recipe_from_another_directory(tmp_path):
    project = tmp_path / "project"  # a copy, so that the build leaves nothing in the source tree
    shutil.copytree(ROOT / "src", project / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, project / name)
    site = tmp_path / "site"
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--target",
         str(site), str(project)],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert install.returncode == 0, install.stderr[-2000:]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    # Only the installed copy is importable (not src/): the dependencies come from this environment.
    env = {**os.environ, "PYTHONPATH": str(site), "OMP_NUM_THREADS": "1"}
    where = subprocess.run(
        [sys.executable, "-c", "import meltr; print(meltr.__file__)"], capture_output=True, text=True, cwd=elsewhere,
        env=env,
    )  # fmt: skip
    assert where.stdout.strip() == str(site / "meltr" / "__init__.py"), where.stdout + where.stderr

    def meltr(*args: str) -> subprocess.CompletedProcess:
        command = [sys.executable, "-m", "meltr.cli.main", *args]
        return subprocess.run(command, capture_output=True, text=True, cwd=elsewhere, env=env, timeout=900)

    toy = meltr("demo", "--toy", "--steps", "20")
    assert toy.returncode == 0, toy.stderr[-2000:]
    assert "single_task" in toy.stdout and "meltr" in toy.stdout
    run = meltr("finetune", "--config", "tiny", "--quiet", "epochs=1", "out_root=runs")
    assert run.returncode == 0, run.stderr[-2000:]
    result = json.loads(run.stdout)
    assert result["run_dir"] == "runs/tiny" and (elsewhere / "runs" / "tiny" / "results.json").exists()
    shown = meltr("finetune", "--config", "reproduce/miniature", "--print-config")
    assert shown.returncode == 0 and "checkpoint: pretrained" in shown.stdout, shown.stderr[-2000:]
