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


DOCS = Path(__file__).resolve().parents[2] / "docs" / "integrations.md"


@pytest.mark.slow
def test_the_documented_tiny_hf_finetune_command_runs_offline(tmp_path):
    """`meltr finetune --config tiny_hf --out runs/tiny_hf` as docs/integrations.md gives it, with the hub offline."""
    pytest.importorskip("transformers")
    import json

    assert "meltr finetune --config tiny_hf --out runs/tiny_hf " in DOCS.read_text()
    result = subprocess.run(
        [sys.executable, "-m", "meltr.cli.main", "finetune", "--config", "tiny_hf", "--out", "runs/tiny_hf", "--quiet"],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=tmp_path,
        env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin", "PYTHONPATH": ":".join(sys.path), "HF_HUB_OFFLINE": "1"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    steps = json.loads((tmp_path / "runs" / "tiny_hf" / "steps.json").read_text())
    assert len(steps) == 16 and sum("meta/hypergrad_norm" in row for row in steps) == 4  # as the docs say
    assert not any(row["skipped"] for row in steps)
    assert json.loads(result.stdout)["primary_task"] == "vtc_t2v"


def test_the_documented_recipe_for_your_own_towers_validates(tmp_path, monkeypatch):
    """The `mine.yaml` of docs/integrations.md, against towers saved as its Python snippet saves them."""
    pytest.importorskip("transformers")
    from meltr.models.hf import save_hf_backbone, tiny_random_backbone
    from meltr.recipes.finetune import FinetuneConfig

    text = DOCS.read_text()
    recipe = text[text.index("# mine.yaml") : text.index("```", text.index("# mine.yaml"))]
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mine.yaml").write_text(recipe)
    save_hf_backbone(tiny_random_backbone(vocab_size=64), tmp_path / "my_towers")
    config = FinetuneConfig.load(tmp_path / "mine.yaml")
    assert config.backbone == {"hf": "my_towers"} and config.precision == "bf16" and config.accumulate == 4
