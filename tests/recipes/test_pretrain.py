"""Pre-training a reference backbone on a tiny world: the recipe, the checkpoint and the CLI."""

from __future__ import annotations

import json
import re

import pytest
import torch

data = pytest.importorskip("meltr.data")

from meltr.cli.main import main  # noqa: E402
from meltr.recipes.pretrain import (  # noqa: E402
    PretrainConfig,
    held_out_losses,
    initial_backbone,
    pretrain,
)
from meltr.training.backbones import load_pretrained, save_pretrained  # noqa: E402


@pytest.fixture(scope="module")
def world():
    return data.make_world(n_pretrain=16, n_train=0, n_meta=0, n_test=0)


def test_pretraining_lowers_the_summed_pretext_losses_and_round_trips(world, tmp_path):
    config = PretrainConfig(
        backbone="violet", size="tiny", steps=12, batch_size=8, lr=3e-3, warmup_steps=2, log_every=1
    )
    result = pretrain(config, world)
    totals = [record["total"] for record in result.history]
    assert len(totals) == 12 and all(map(torch.isfinite, torch.tensor(totals)))
    assert sum(totals[-3:]) < sum(totals[:3])
    assert set(result.history[0]) == {"step", "lr", "total", *result.model.tasks}

    path = save_pretrained(tmp_path / "ckpt" / "backbone.pt", result.model, "violet", recipe={"steps": 12})
    loaded = load_pretrained(path)
    batch = next(iter(world.loader("pretrain", batch_size=4)))
    torch.manual_seed(0)
    expected = result.model(batch)
    torch.manual_seed(0)
    got = loaded(batch)
    assert all(torch.equal(expected[t], got[t]) for t in loaded.tasks)


def test_bad_recipes_fail_with_the_fix(world):
    with pytest.raises(KeyError, match="allinone, univl, vatt, violet"):
        PretrainConfig(backbone="bert")
    with pytest.raises(ValueError, match="batch_size"):
        pretrain(PretrainConfig(size="tiny", batch_size=64), world)


def test_the_cli_writes_a_checkpoint_and_the_history(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(
        ["pretrain", "--backbone", "allinone", "--size", "tiny", "--steps", "2", "--batch-size", "4",
         "--log-every", "1", "--out", str(out), "--world", "n_pretrain=8", "--set", "dim=16"]
    )  # fmt: skip
    assert code == 0
    assert load_pretrained(out / "backbone.pt").config.dim == 16
    assert [record["step"] for record in json.loads((out / "history.json").read_text())] == [1, 2]
    printed = capsys.readouterr()
    assert "step 2/2" in printed.err  # logs on stderr, the result as JSON on stdout
    assert json.loads(printed.out) == {"backbone": str(out / "backbone.pt"), "history": str(out / "history.json")}


class Interrupt(Exception):
    pass


def test_an_interrupted_run_resumes_exactly_where_its_checkpoint_was(world, tmp_path, monkeypatch, caplog):
    import meltr.recipes.pretrain as recipe

    config = PretrainConfig(backbone="univl", size="tiny", steps=5, batch_size=4, lr=1e-3, warmup_steps=1, log_every=1)
    reference = pretrain(config, world).model
    info = recipe.logger.info

    def stop_after_step_three(message, *args):
        if message.startswith("step") and args[0] == 3:
            raise Interrupt
        info(message, *args)

    checkpoint = tmp_path / "checkpoint.pt"
    monkeypatch.setattr(recipe.logger, "info", stop_after_step_three)
    with pytest.raises(Interrupt):
        pretrain(config, world, checkpoint=checkpoint, checkpoint_every=2)
    monkeypatch.undo()
    assert torch.load(checkpoint, weights_only=True)["step"] == 2
    caplog.clear()
    with caplog.at_level("INFO", logger="meltr"):
        resumed = pretrain(config, world, checkpoint=checkpoint, checkpoint_every=2).model
    assert caplog.messages[0].startswith(f"resumed from {checkpoint} at step 2")
    for name, value in reference.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[name]), name


def test_a_checkpoint_of_another_recipe_is_refused(world, tmp_path):
    config = PretrainConfig(backbone="univl", size="tiny", steps=2, batch_size=4, warmup_steps=1, log_every=0)
    checkpoint = tmp_path / "checkpoint.pt"
    pretrain(config, world, checkpoint=checkpoint, checkpoint_every=1)
    other = PretrainConfig(backbone="univl", size="tiny", steps=3, batch_size=4, warmup_steps=1, log_every=0)
    with pytest.raises(ValueError, match="different pre-training config"):
        pretrain(other, world, checkpoint=checkpoint)


def test_tasks_trains_on_the_chosen_losses_only_and_logs_them_all(world):
    """With ``tasks=("vtm",)`` the total is VTM alone and the heads of MLM and MVM never move (they get no
    gradient, so AdamW leaves them, weight decay included); every loss is still logged."""
    config = PretrainConfig(
        backbone="violet", size="tiny", steps=4, batch_size=4, lr=1e-2, warmup_steps=1, log_every=1, tasks=("vtm",)
    )
    initial = initial_backbone(config, world)
    result = pretrain(config, world)
    for record in result.history:
        assert set(record) == {"step", "lr", "total", "vtm", "mlm", "mvm"}
        assert record["total"] == pytest.approx(record["vtm"])
    trained, before = result.model.state_dict(), initial.state_dict()
    for name, value in trained.items():
        if name.startswith("mvm_head."):
            assert torch.equal(value, before[name]), name
    assert not torch.allclose(trained["vtm_head.2.weight"], before["vtm_head.2.weight"])


def test_violet_with_its_contrastive_head_trains_and_logs_vtc_and_round_trips(world, tmp_path):
    """``--set contrastive=true``: the tasks a config may name are those of the backbone with its options, and the
    saved checkpoint rebuilds with the head (its losses included)."""
    config = PretrainConfig(
        backbone="violet",
        size="tiny",
        steps=2,
        batch_size=4,
        warmup_steps=1,
        log_every=1,
        overrides={"contrastive": True},
        tasks=("vtc",),
    )
    result = pretrain(config, world)
    assert all(record["total"] == pytest.approx(record["vtc"]) for record in result.history)
    path = save_pretrained(tmp_path / "backbone.pt", result.model, "violet", recipe={"steps": 2})
    loaded = load_pretrained(path)
    assert loaded.tasks == ("vtm", "mlm", "mvm", "vtc")
    batch = next(iter(world.loader("pretrain", batch_size=4)))
    with torch.no_grad():
        expected = result.model(batch, torch.Generator().manual_seed(0))
        got = loaded.eval()(batch, torch.Generator().manual_seed(0))
    for task in expected:
        torch.testing.assert_close(got[task], expected[task])


def test_choosing_tasks_leaves_the_global_random_state_alone():
    torch.manual_seed(3)
    expected = torch.rand(4)
    torch.manual_seed(3)
    PretrainConfig(backbone="univl", tasks=("align",))
    assert torch.equal(torch.rand(4), expected)


def test_tasks_naming_a_loss_the_backbone_lacks_is_refused_before_any_work(tmp_path, capsys):
    with pytest.raises(ValueError, match="its losses are: vtm, mlm, mvm"):
        PretrainConfig(backbone="violet", tasks=("vtc",))
    with pytest.raises(ValueError, match="not distinct"):
        PretrainConfig(backbone="violet", tasks=("vtm", "vtm"))
    out = tmp_path / "run"
    assert main(["pretrain", "--backbone", "allinone", "--size", "tiny", "--tasks", "mvm", "--out", str(out)]) == 2
    assert re.fullmatch(r"meltr pretrain: .*its losses are: vtm, mlm, vtc\n", capsys.readouterr().err)
    assert not out.exists()


def test_held_out_losses_are_the_mean_over_whole_batches_with_masks_seeded_zero(world):
    config = PretrainConfig(backbone="violet", size="tiny", steps=1, batch_size=4, log_every=0)
    model = pretrain(config, world).model
    losses = held_out_losses(model, world, split="pretrain", batch_size=8)
    generator = torch.Generator().manual_seed(0)
    expected = {}
    with torch.no_grad():
        for batch in world.loader("pretrain", 8, shuffle=False, drop_last=True):
            for task, loss in model(batch, generator=generator).items():
                expected.setdefault(task, []).append(loss.mean().item())
    assert losses == pytest.approx({task: sum(values) / len(values) for task, values in expected.items()})
    assert held_out_losses(model, world, split="pretrain", batch_size=8) == losses  # same masks every call
    with pytest.raises(ValueError, match="the test split has 0 clips, fewer than batch_size=32"):
        held_out_losses(model, world)
