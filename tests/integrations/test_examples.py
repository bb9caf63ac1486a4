"""The runnable examples of docs/integrations.md run offline (small settings); the 2-process ones in the slow suite."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from torchrun import torchrun

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "integrations"


def run(script: str, *args: str) -> str:
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / script), *args],
        capture_output=True,
        text=True,
        timeout=600,
        env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin", "PYTHONPATH": ":".join(sys.path), "HF_HUB_OFFLINE": "1"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_the_plain_loop_example_runs_meta_steps():
    assert "6 micro-batches, 3 optimiser steps, 1 meta steps, 0 skipped" in run("plain_loop.py", "--steps", "6")


@pytest.mark.slow
def test_the_hf_trainer_example_runs_meta_steps(tmp_path):
    pytest.importorskip("transformers")
    assert "global_step 8, 8 inner steps, 4 meta steps" in run("hf_trainer.py", "--output-dir", str(tmp_path))


@pytest.mark.slow
def test_the_lightning_example_runs_on_two_processes():
    pytest.importorskip("lightning")
    assert "global_step 4, 4 inner steps, 2 meta steps" in run("lightning_ddp.py", "--devices", "2")


@pytest.mark.slow
def test_the_accelerate_example_runs_under_torchrun():
    pytest.importorskip("accelerate")
    result = torchrun(EXAMPLES / "accelerate_ddp.py")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "4 inner steps, 2 meta steps per process" in result.stdout
