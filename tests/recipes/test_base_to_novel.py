"""The base-to-novel experiment (``meltr.recipes.base_to_novel``, ``meltr adapt``): prompt classification against hand
computations, the frozen backbone under every parameter-efficient method, and the whole run on tiny settings."""

from __future__ import annotations

import copy
import csv
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from meltr.adapters import backbone_state_dict, class_descriptions, consistency_loss, lora_parameter_names
from meltr.cli.main import main
from meltr.data import EVENT_CLASSES, make_world, world_tokenizer
from meltr.models import UNK_ID, pretrained_path
from meltr.recipes.base_to_novel import (
    METHODS,
    REPORT_BEGIN,
    REPORT_END,
    BaseToNovelConfig,
    adapt,
    harmonic_mean,
    load_backbone,
    run_base_to_novel,
    sample_shots,
    training_batches,
    write_markdown,
)
from meltr.tasks.prompts import PromptClassification, prompt_accuracy
from meltr.training.backbones import load_pretrained

TINY = {
    "train_clips": 96,
    "test_clips": 48,
    "shots": 2,
    "steps": 2,
    "batch_size": 8,
    "base_classes": ("move_left", "move_up", "turn", "shrink"),
}
"""Settings of a run that takes seconds."""


@pytest.fixture(scope="module")
def world():
    return make_world(n_pretrain=0, n_train=TINY["train_clips"], n_meta=0, n_test=TINY["test_clips"], seed=0)


@pytest.fixture(scope="module")
def pretrained(world):
    model = load_backbone(BaseToNovelConfig(), world.tokenizer.vocab_size)
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def test_harmonic_mean_against_a_hand_computation():
    assert harmonic_mean(60.0, 40.0) == pytest.approx(48.0)
    assert harmonic_mean(50.0, 50.0) == pytest.approx(50.0)
    assert harmonic_mean(0.0, 0.0) == 0.0
    assert harmonic_mean(100.0, 0.0) == 0.0


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("shots", 0),
        ("steps", -1),
        ("seeds", ()),
        ("seeds", (0, 0)),
        ("methods", ("msta", "bogus")),
        ("base_classes", ("fly", "turn")),
        ("base_classes", ("turn",)),
        ("class_words", "poetic"),
        ("template", "no slot"),
        ("lr", 0.0),
        ("alpha", -1.0),
    ],
)
def test_a_bad_config_is_a_value_error_naming_the_field(field, value):
    with pytest.raises(ValueError, match=f"BaseToNovelConfig.{field}"):
        BaseToNovelConfig(**{field: value})


def test_prompts_and_the_novel_classes():
    config = BaseToNovelConfig()
    assert set(config.base_classes) | set(config.novel_classes) == set(EVENT_CLASSES)
    assert not set(config.base_classes) & set(config.novel_classes)
    assert config.prompts(["move_left", "shrink"]) == ["a clip of moves left", "a clip of shrinks"]
    label = BaseToNovelConfig(class_words="label")
    assert label.prompts(["move_left"]) == ["a clip of move left"]
    tokenizer = world_tokenizer()
    for prompt in config.prompts(EVENT_CLASSES):
        assert UNK_ID not in tokenizer.encode(prompt), prompt


def test_sample_shots_draws_per_class_and_per_seed():
    labels = torch.tensor([0, 1, 0, 1, 0, 1, 0, 2])
    chosen = sample_shots(labels, ["move_left", "move_right"], 2, seed=0)
    assert len(chosen) == 4 and [int(labels[i]) for i in chosen].count(0) == 2
    draws = {tuple(sample_shots(labels, ["move_left", "move_right"], 2, seed=s)) for s in range(8)}
    assert len(draws) > 1
    with pytest.raises(ValueError, match="shots=3"):
        sample_shots(labels, ["move_up"], 3, seed=0)


def test_training_batches_are_deterministic_and_cover_the_shots(world):
    indices = sample_shots(world["train"].labels, TINY["base_classes"], 2, seed=0)
    first = [b["clip_id"].tolist() for b, _ in zip(training_batches(world, indices, 4, seed=0), range(4), strict=False)]
    again = [b["clip_id"].tolist() for b, _ in zip(training_batches(world, indices, 4, seed=0), range(4), strict=False)]
    assert first == again
    assert sorted(first[0] + first[1]) == indices  # one epoch is every shot once


class OneHotBackbone(nn.Module):
    """A stand-in backbone: prompt ``c`` embeds as the one-hot ``e_c``, a clip as ``e_k`` with ``k`` its first pixel."""

    def encode_text(self, batch):
        count = batch["text"].shape[0]
        return torch.eye(count, 8)

    def encode_video(self, batch):
        return F.one_hot(batch["video"][:, 0, 0, 0, 0].long(), 8).float()


def test_accuracy_against_a_hand_computation():
    classes = ["turn", "grow", "jump"]
    labels = torch.tensor([EVENT_CLASSES.index(c) for c in ["turn", "grow", "jump", "jump", "move_left"]])
    predicted_prompt = torch.tensor([0, 2, 2, 1, 0])  # right, wrong, right, wrong; the last clip is not scored
    videos = torch.zeros(5, 2, 3, 4, 4)
    videos[:, 0, 0, 0, 0] = predicted_prompt.float()
    score = prompt_accuracy(OneHotBackbone(), world_tokenizer(), videos, labels, classes, ["a", "b", "c"])
    assert score == pytest.approx(50.0)


def test_prompt_classification_losses_against_hand_computations(world, pretrained):
    config = BaseToNovelConfig(**TINY)
    backbone = copy.deepcopy(pretrained)
    base = config.base_classes
    prompts = config.prompts(base)
    task = PromptClassification(
        backbone, world.tokenizer, base, prompts, ("classification", "consistency", "align"), 0.05, frozen=pretrained
    )
    indices = sample_shots(world["train"].labels, base, 2, seed=0)
    batch = next(training_batches(world, indices, 8, seed=0))
    losses = task(batch)

    def embed(texts):
        tokens = torch.as_tensor(world.tokenizer.encode_batch(texts, 16))
        return pretrained.encode_text({"text": tokens, "text_mask": tokens != 0})

    video, text = pretrained.encode_video(batch), embed(prompts)
    targets = torch.tensor([base.index(EVENT_CLASSES[label]) for label in batch["label"].tolist()])
    logits = torch.stack([torch.stack([torch.dot(v, w) / 0.05 for w in text]) for v in video])
    torch.testing.assert_close(losses["classification"], F.cross_entropy(logits, targets, reduction="none"))
    descriptions = class_descriptions(base)
    expected_cc = consistency_loss(
        text, embed([d.spatial for d in descriptions]), embed([d.temporal for d in descriptions])
    )
    torch.testing.assert_close(losses["consistency"], expected_cc)
    assert losses["align"].shape == (8,)
    assert list(losses) == ["classification", "consistency", "align"]
    novel_batch = {**batch, "label": torch.full_like(batch["label"], EVENT_CLASSES.index("grow"))}
    with pytest.raises(ValueError, match="does not score"):
        task(novel_batch)


@pytest.mark.parametrize("method", ["lora", "adaptformer", "msta", "msta_no_shared", "full"])
def test_a_few_training_steps_move_only_the_adapter(method, world, pretrained):
    """After a few AdamW steps (weight decay on, over EVERY parameter), the backbone equals the checkpoint exactly for
    every parameter-efficient method, and every adapter parameter moved; full fine-tuning moves the backbone."""
    if method == "lora":
        pytest.importorskip("peft")
    config = BaseToNovelConfig(**TINY)
    torch.manual_seed(0)
    backbone = adapt(copy.deepcopy(pretrained), METHODS[method], config)
    task = PromptClassification(backbone, world.tokenizer, config.base_classes, config.prompts(config.base_classes))
    optimizer = torch.optim.AdamW(backbone.parameters(), lr=1e-2, weight_decay=0.1)
    before = {n: p.detach().clone() for n, p in backbone.named_parameters()}
    batches = training_batches(world, sample_shots(world["train"].labels, config.base_classes, 2, 0), 8, seed=0)
    for _ in range(3):
        optimizer.zero_grad()
        task(next(batches))["classification"].mean().backward()
        optimizer.step()
    checkpoint = pretrained.state_dict()
    trainable = {n for n, p in backbone.named_parameters() if p.requires_grad}
    if method == "full":
        assert any(not torch.equal(p, checkpoint[n]) for n, p in backbone.named_parameters())
        return
    if method == "lora":
        state = {n.replace(".base_layer.", "."): v for n, v in backbone.state_dict().items() if n not in trainable}
        assert trainable == set(lora_parameter_names(backbone))
    else:
        state = backbone_state_dict(backbone)
    assert state.keys() == checkpoint.keys()
    for key, value in checkpoint.items():
        assert torch.equal(state[key], value), key
    named = dict(backbone.named_parameters())
    assert trainable and all(not torch.equal(named[n], before[n]) for n in trainable)


def test_the_experiment_on_tiny_settings(tmp_path):
    methods = ("zero_shot", "full", "adaptformer", "msta_cc", "msta_meltr")
    config = BaseToNovelConfig(seeds=(0,), methods=methods, **TINY)
    result = run_base_to_novel(config)
    assert [row.method for row in result.methods] == list(methods)
    total = result.methods[0].runs[0].total
    for row in result.methods:
        assert [run.seed for run in row.runs] == [0]
        run = row.runs[0]
        assert 0.0 <= run.base_accuracy <= 100.0 and 0.0 <= run.novel_accuracy <= 100.0
        b, n = run.base_accuracy, run.novel_accuracy
        assert run.harmonic_mean == pytest.approx(2 * b * n / (b + n) if b + n else 0.0)
        assert row.summary("harmonic_mean") == (run.harmonic_mean, 0.0)
        assert math.isnan(run.final_loss) == (row.method == "zero_shot")
    counts = {row.method: row.runs[0] for row in result.methods}
    assert counts["zero_shot"].trainable == 0
    assert counts["full"].trainable == counts["full"].total == total
    assert 0 < counts["adaptformer"].trainable < counts["msta_cc"].trainable < total
    assert counts["msta_cc"].trainable == counts["msta_meltr"].trainable

    table = result.markdown_table().splitlines()
    assert len(table) == 2 + len(methods)
    shipped = sum(p.numel() for p in load_pretrained(pretrained_path("univl")).parameters())  # counted apart
    assert table[3].startswith(f"| full fine-tuning | {shipped:,} | 100.00 |")
    result.write_csv(tmp_path / "adapters.csv")
    with (tmp_path / "adapters.csv").open() as file:
        rows = list(csv.DictReader(file))
    assert [r["method"] for r in rows] == list(methods)
    assert float(rows[1]["hm"]) == pytest.approx(counts["full"].harmonic_mean, abs=0.01)

    report = tmp_path / "adapters.md"
    report.write_text(f"# notes\n\nbefore\n\n{REPORT_BEGIN}\nold table\n{REPORT_END}\n\nafter\n")
    write_markdown(result, report, "meltr adapt --seeds 0")
    text = report.read_text()
    assert "old table" not in text and "before" in text and "after" in text
    assert "| MSTA + L_CC |" in text and "meltr adapt --seeds 0" in text


def test_the_experiment_is_deterministic_under_a_seed():
    config = BaseToNovelConfig(seeds=(1,), methods=("msta",), **TINY)
    first, second = run_base_to_novel(config), run_base_to_novel(config)
    a, b = first.methods[0].runs[0], second.methods[0].runs[0]
    assert (a.base_accuracy, a.novel_accuracy, a.final_loss) == (b.base_accuracy, b.novel_accuracy, b.final_loss)


def test_the_cli_reports_a_bad_setting_by_its_field(capsys):
    assert main(["adapt", "--shots", "0", "--no-progress"]) == 2
    assert "BaseToNovelConfig.shots" in capsys.readouterr().err


@pytest.mark.slow
def test_the_cli_end_to_end(tmp_path, capsys):
    pytest.importorskip("peft")
    markdown, table = tmp_path / "adapters.md", tmp_path / "adapters.csv"
    arguments = ["--train-clips", "96", "--test-clips", "48", "--shots", "2", "--steps", "3", "--batch-size", "8"]
    runs = tmp_path / "runs"
    code = main(
        [
            "adapt",
            "--seeds",
            "0",
            "1",
            *arguments,
            "--markdown",
            str(markdown),
            "--csv",
            str(table),
            "--runs",
            str(runs),
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    for method in METHODS.values():
        assert f"| {method.label} |" in out
    assert "trainable params:" in out
    with table.open() as file:
        rows = list(csv.DictReader(file))
    assert len(rows) == 2 * len(METHODS)
    text = markdown.read_text()
    # The report's command lists every option from the resolved config, so that it re-runs this exact table.
    assert REPORT_BEGIN in text and "OMP_NUM_THREADS=1 meltr adapt " in text and "--seeds 0 1 " in text
    assert "--steps 3" in text and f"--csv {table}" in text and f"--runs {runs}" in text
