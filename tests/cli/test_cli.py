import subprocess
import sys

from meltr.cli.main import main


def test_help_lists_the_subcommands(capsys):
    assert main([]) == 0
    out = capsys.readouterr().out
    assert "demo" in out and "COMMAND" in out


def test_console_script_runs_the_demo_end_to_end():
    result = subprocess.run(
        [sys.executable, "-m", "meltr.cli.main", "demo", "--toy", "--steps", "40"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    lines = {line.split()[0]: line.split() for line in result.stdout.splitlines() if line[:1].isalpha()}
    for method in ("single_task", "equal_weight", "learned_linear", "meltr"):
        assert method in lines
        assert float(lines[method][2]) > 0.25  # the primary test loss is at least the noise floor
    assert float(lines["single_task"][3:6][1]) == 0.0  # single-task gives the helpful task no weight


def test_evaluate_takes_a_recipe_and_its_overrides(capsys):
    import json

    from meltr.recipes import config_path
    from meltr.recipes.finetune import FinetuneConfig, zero_shot

    recipe = config_path("tiny")
    overrides = ["world.n_train=16", "world.n_meta=4", "world.n_test=24", "world.downstream.channel_order=bgr"]
    assert main(["evaluate", "--config", "tiny", *overrides]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["clips"] == 24 and printed["task"] == "retrieval"
    expected = zero_shot(FinetuneConfig.load(recipe, overrides))
    assert printed["zero_shot"] == expected
    unshifted = zero_shot(FinetuneConfig.load(recipe, overrides[:-1]))
    assert unshifted != expected  # the recipe's downstream shift reaches the evaluated test split


def test_evaluate_refuses_overrides_without_a_recipe(capsys):
    assert main(["evaluate", "world.n_test=4"]) == 2
    assert "--config" in capsys.readouterr().err
