"""Base-to-novel generalisation on the synthetic world (the protocol of Table 1 / Sec. 4.2 of MSTA, arXiv:2411.11223).

Video classification CLIP-style: a clip's class is the prompt ("a clip of {class}") whose text embedding is most
similar to the clip's video embedding (``encode_text`` / ``encode_video`` of the backbone, unit-norm), so the logits
are ``cos(v, w_c) / temperature`` and classes never seen in training can be scored. The 12 event classes of the world
(:data:`~meltr.data.EVENT_CLASSES`) are split into *base* and *novel* halves; every method fine-tunes the pre-trained
backbone on ``shots`` clips of each base class with the cross-entropy over the base prompts, then is tested on the
test clips of the base classes (scored among the base prompts) and of the novel classes (among the novel prompts).
The summary is the harmonic mean ``HM = 2 B N / (B + N)`` of the base and novel accuracies.

The rows (:data:`METHODS`): no training (zero-shot), full fine-tuning, LoRA (peft), AdaptFormer, MSTA, MSTA +
``L_CC`` (``L_CE + alpha L_CC``), MSTA + MELTR (a :class:`~meltr.MetaLossTransformer` combines ``L_CE``, ``L_CC``
and the pretext loss Align on the clips' captions, identity hypergradient), and MSTA's ablations: language adapter
only, vision adapter only, no shared bottleneck. Every row trains through :class:`~meltr.AuxiliaryLearner` (a fixed
combiner makes it plain training), on the same batches for a given seed.

Class wording: the world's class identifiers are verb stems ("move_left", "shrink"), which never occur in the
captions the backbones were pre-trained on (captions say "moves left", "shrinks"): their word embeddings are
untrained, so a prompt built from them carries no pre-trained meaning. ``class_words="caption"`` (default) words the
prompts as the captions do (:data:`CAPTION_CLASS_WORDS`), the analogue of CLIP reading an action's usual name;
``"label"`` uses :func:`~meltr.adapters.class_name` ("move left"). ``L_CC`` is computed over the base classes only
(novel classes are unseen during training, descriptions included).
"""

from __future__ import annotations

import copy
import csv
import dataclasses
import logging
import math
import statistics
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn
from tqdm import tqdm

from meltr.adapters.adaptformer import AdaptFormerConfig, inject_adaptformer
from meltr.adapters.base import TrainableParameters, trainable_parameters
from meltr.adapters.consistency import PROMPT_TEMPLATE, class_name
from meltr.adapters.lora import LoRAConfig, inject_lora
from meltr.adapters.msta import MSTAConfig, inject_msta
from meltr.config import help_field
from meltr.data.lexicon import EVENT_CLASSES
from meltr.tasks.prompts import PromptClassification, prompt_accuracy
from meltr.training.run_directory import RunDirectory

logger = logging.getLogger(__name__)

CAPTION_CLASS_WORDS: dict[str, str] = {
    "move_left": "moves left",
    "move_right": "moves right",
    "move_up": "moves up",
    "move_down": "moves down",
    "turn": "turns",
    "grow": "grows",
    "shrink": "shrinks",
    "appear": "appears",
    "vanish": "vanishes",
    "jump": "jumps",
    "blink": "blinks",
    "shake": "shakes",
}
"""Each event class in the words the world's captions use for it (every word is in the pre-training captions)."""

DEFAULT_BASE_CLASSES: tuple[str, ...] = EVENT_CLASSES[0::2]
"""move_left, move_up, turn, shrink, vanish, blink: every other class, so each novel class (move_right, move_down,
grow, appear, jump, shake) has a related base class and both halves mix motion, change and repeated actions."""


@dataclass(frozen=True)
class Method:
    """One row of the table: which parameters train and which losses they train on.

    Args:
        label: the row's name in the table.
        adapter: ``"none"`` (no training), ``"full"`` (every parameter), ``"lora"``, ``"adaptformer"`` or ``"msta"``.
        losses: ``"ce"`` (``L_CE``), ``"ce+cc"`` (``L_CE + alpha L_CC``) or ``"meltr"`` (MELTR over ``L_CE``,
            ``L_CC`` and Align, primary ``L_CE``).
        msta: :class:`~meltr.adapters.MSTAConfig` fields that differ from the experiment's MSTA (ablations).
    """

    label: str
    adapter: str
    losses: str = "ce"
    msta: Mapping[str, Any] = field(default_factory=dict)


METHODS: dict[str, Method] = {
    "zero_shot": Method("zero-shot (no training)", "none"),
    "full": Method("full fine-tuning", "full"),
    "lora": Method("LoRA (peft)", "lora"),
    "adaptformer": Method("AdaptFormer", "adaptformer"),
    "msta": Method("MSTA", "msta"),
    "msta_cc": Method("MSTA + L_CC", "msta", "ce+cc"),
    "msta_meltr": Method("MSTA + MELTR (L_CE, L_CC, Align)", "msta", "meltr"),
    "msta_text_only": Method("ablation: language adapter only", "msta", msta={"modalities": ("text",)}),
    "msta_video_only": Method("ablation: vision adapter only", "msta", msta={"modalities": ("video",)}),
    "msta_no_shared": Method("ablation: no shared layer", "msta", msta={"shared_bottleneck": False}),
}
"""The rows of the experiment, by the name ``--methods`` takes."""


@dataclass
class BaseToNovelConfig:
    """Everything :func:`run_base_to_novel` does (every field has help text)."""

    backbone: str = help_field(
        "Backbone whose shipped pre-trained checkpoint is adapted (univl, violet, allinone).", "univl"
    )
    checkpoint: str = help_field("'pretrained' (the shipped checkpoint of backbone) or the path of one.", "pretrained")
    seeds: tuple[int, ...] = help_field(
        "Seeds; each draws its own shots, adapter initialisation and batch order.", (0, 1, 2)
    )
    methods: tuple[str, ...] = help_field("Rows to run, names of METHODS, in table order.", tuple(METHODS))
    base_classes: tuple[str, ...] = help_field(
        "Event classes trained on; the other classes of EVENT_CLASSES are the novel ones.", DEFAULT_BASE_CLASSES
    )
    class_words: Literal["caption", "label"] = help_field(
        "How a class is worded in its prompt: 'caption' (the captions' words, 'moves left') or 'label' (the "
        "identifier, 'move left'; its verb stems are not in the pre-training text).",
        "caption",
    )
    template: str = help_field("The prompt template, '{}' is the class (the paper's 'a video of {}').", PROMPT_TEMPLATE)
    shots: int = help_field("Training clips per base class, drawn per seed from the train split (K-shot).", 64)
    steps: int = help_field("Optimiser steps of each trained row.", 400)
    batch_size: int = help_field("Clips per training batch.", 32)
    lr: float = help_field("AdamW learning rate of MSTA (and its ablations) and AdaptFormer.", 1e-2)
    lora_lr: float = help_field("AdamW learning rate of LoRA.", 3e-3)
    full_lr: float = help_field("AdamW learning rate of full fine-tuning (every parameter moves).", 3e-4)
    weight_decay: float = help_field("AdamW weight decay (the paper's 0.001).", 1e-3)
    temperature: float = help_field("Logits are cos(video, prompt) / temperature (UniVL's Align uses 0.05).", 0.05)
    alpha: float = help_field("Weight of L_CC in L_CE + alpha * L_CC (the paper's best: 1).", 1.0)
    meta_every: int = help_field("MSTA + MELTR: inner steps between meta steps of the learner.", 3)
    world_seed: int = help_field("Seed of the synthetic world (the checkpoints were pre-trained on seed 0).", 0)
    train_clips: int = help_field("Clips of the world's train split the shots are drawn from.", 1500)
    test_clips: int = help_field("Clips of the world's test split (base and novel test clips together).", 600)
    msta: MSTAConfig = field(
        default_factory=MSTAConfig, metadata={"help": "MSTA's configuration (the ablations change one field)."}
    )
    lora: LoRAConfig = field(default_factory=LoRAConfig, metadata={"help": "LoRA's configuration (peft)."})
    adaptformer: AdaptFormerConfig = field(
        default_factory=AdaptFormerConfig, metadata={"help": "AdaptFormer's configuration."}
    )

    def __post_init__(self) -> None:
        self.seeds = tuple(self.seeds)
        self.methods = tuple(self.methods)
        self.base_classes = tuple(self.base_classes)

        def fail(name: str, requirement: str) -> None:
            raise ValueError(f"BaseToNovelConfig.{name} {requirement}, got {getattr(self, name)!r}")

        def is_int(value: object) -> bool:
            return isinstance(value, int) and not isinstance(value, bool)

        if not self.seeds or not all(is_int(s) and s >= 0 for s in self.seeds):
            fail("seeds", "must be one or more non-negative ints")
        if len(set(self.seeds)) != len(self.seeds):
            fail("seeds", "must not repeat a seed")
        unknown = [m for m in self.methods if m not in METHODS]
        if not self.methods or unknown or len(set(self.methods)) != len(self.methods):
            fail("methods", f"must be distinct names among {', '.join(METHODS)}")
        unknown = [c for c in self.base_classes if c not in EVENT_CLASSES]
        if unknown or len(set(self.base_classes)) != len(self.base_classes):
            fail("base_classes", f"must be distinct classes among {', '.join(EVENT_CLASSES)}")
        if not 2 <= len(self.base_classes) <= len(EVENT_CLASSES) - 2:
            fail("base_classes", f"must leave at least 2 base and 2 novel classes of the {len(EVENT_CLASSES)}")
        if self.class_words not in ("caption", "label"):
            fail("class_words", "must be 'caption' or 'label'")
        if self.template.count("{}") != 1:
            fail("template", "must hold exactly one '{}' (where the class goes)")
        for name in ("shots", "steps", "batch_size", "meta_every", "train_clips", "test_clips"):
            if not is_int(getattr(self, name)) or getattr(self, name) < 1:
                fail(name, "must be a positive int")
        if not is_int(self.world_seed) or self.world_seed < 0:
            fail("world_seed", "must be a non-negative int")
        for name in ("lr", "lora_lr", "full_lr", "temperature"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                fail(name, "must be a positive number")
        for name in ("weight_decay", "alpha"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                fail(name, "must be a non-negative number")

    @property
    def novel_classes(self) -> tuple[str, ...]:
        return tuple(c for c in EVENT_CLASSES if c not in self.base_classes)

    def prompts(self, classes: Sequence[str]) -> list[str]:
        """The prompt of every class of ``classes``."""
        words = CAPTION_CLASS_WORDS if self.class_words == "caption" else {c: class_name(c) for c in classes}
        return [self.template.format(words[c]) for c in classes]

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# -- results ---------------------------------------------------------------------------------------------------------


def harmonic_mean(base: float, novel: float) -> float:
    """``2 B N / (B + N)``, the summary of base-to-novel generalisation (0 when both are 0)."""
    return 2.0 * base * novel / (base + novel) if base + novel > 0 else 0.0


@dataclass(frozen=True)
class SeedResult:
    """One trained row under one seed (accuracies in percent)."""

    method: str
    seed: int
    base_accuracy: float
    novel_accuracy: float
    harmonic_mean: float
    trainable: int
    total: int
    final_loss: float  # mean training loss (the combined one) over the last 10% of the steps; nan if not trained
    seconds: float  # training and evaluation wall time

    @property
    def percent(self) -> float:
        return 100.0 * self.trainable / self.total if self.total else 0.0


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    """The mean and the sample standard deviation (n - 1; 0 for one value)."""
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


@dataclass
class MethodResult:
    """Every seed of one row."""

    method: str
    label: str
    runs: list[SeedResult]

    def summary(self, metric: str) -> tuple[float, float]:
        """``(mean, std)`` over seeds of ``base_accuracy``, ``novel_accuracy`` or ``harmonic_mean``."""
        return _mean_std([getattr(r, metric) for r in self.runs])

    @property
    def trainable(self) -> TrainableParameters:
        return TrainableParameters(self.runs[0].trainable, self.runs[0].total)


@dataclass
class BaseToNovelResult:
    """The table: one :class:`MethodResult` per row, in the config's order, and the total wall time."""

    config: BaseToNovelConfig
    methods: list[MethodResult]
    seconds: float

    def markdown_table(self) -> str:
        """Rows ``method | trainable params | % | base | novel | HM``, mean ± std over the seeds."""
        lines = [
            "| method | trainable params | trainable % | base acc | novel acc | HM |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for row in self.methods:
            cells = [
                f"{m:.1f} ± {s:.1f}" for m, s in map(row.summary, ("base_accuracy", "novel_accuracy", "harmonic_mean"))
            ]
            count = row.trainable
            lines.append(f"| {row.label} | {count.trainable:,} | {count.percent:.2f} | " + " | ".join(cells) + " |")
        return "\n".join(lines)

    def csv_rows(self) -> list[dict[str, Any]]:
        """One row per (method, seed)."""
        return [
            {
                "method": run.method,
                "label": row.label,
                "seed": run.seed,
                "trainable_params": run.trainable,
                "total_params": run.total,
                "trainable_percent": round(run.percent, 4),
                "base_acc": round(run.base_accuracy, 2),
                "novel_acc": round(run.novel_accuracy, 2),
                "hm": round(run.harmonic_mean, 2),
                "final_train_loss": round(run.final_loss, 4),
                "seconds": round(run.seconds, 1),
            }
            for row in self.methods
            for run in row.runs
        ]

    def write_csv(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        rows = self.csv_rows()
        with path.open("w", newline="") as file:
            writer = csv.DictWriter(file, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        return path


REPORT_BEGIN = "<!-- meltr adapt: generated results (rewritten by every run with --markdown) -->"
REPORT_END = "<!-- meltr adapt: end of generated results -->"


def markdown_report(result: BaseToNovelResult, command: str) -> str:
    """The generated part of docs/adapters.md: the settings, the table, the parameter counts and how to re-run."""
    c = result.config
    seeds = ", ".join(map(str, c.seeds))
    lines = [
        REPORT_BEGIN,
        "",
        f"Backbone `{c.backbone}` ({c.checkpoint} checkpoint); base classes {', '.join(c.base_classes)}; novel "
        f"classes {', '.join(c.novel_classes)}; prompts `{c.template}` with {c.class_words} wording "
        f'(e.g. "{c.prompts(c.base_classes[:1])[0]}"); {c.shots} shots per base class from {c.train_clips} train '
        f"clips; {c.steps} AdamW steps of {c.batch_size} clips (lr {c.lr:g} MSTA / AdaptFormer, {c.lora_lr:g} LoRA, "
        f"{c.full_lr:g} full fine-tuning; weight decay {c.weight_decay:g}); temperature {c.temperature:g}; alpha "
        f"{c.alpha:g}; {c.test_clips} test clips (world seed {c.world_seed}). Seeds {seeds}: mean ± sample std "
        "(n - 1) over seeds; accuracies in percent, HM averaged over seeds of each seed's HM. Chance is "
        f"{100 / len(c.base_classes):.1f} (base) and {100 / len(c.novel_classes):.1f} (novel).",
        "",
        result.markdown_table(),
        "",
        f"Total wall time {result.seconds / 60:.1f} min. Per-seed numbers: `docs/adapters.csv`. Re-run:",
        "",
        "```bash",
        command,
        "```",
        "",
        REPORT_END,
    ]
    return "\n".join(lines)


def write_markdown(result: BaseToNovelResult, path: str | Path, command: str) -> Path:
    """Write :func:`markdown_report` into ``path``: between the report markers if the file has them (the text around
    them is kept), else as a new file with a title."""
    path = Path(path)
    report = markdown_report(result, command)
    text = path.read_text() if path.exists() else ""
    if REPORT_BEGIN in text and REPORT_END in text:
        head, _, rest = text.partition(REPORT_BEGIN)
        _, _, tail = rest.partition(REPORT_END)
        text = head + report + tail
    else:
        text = "# Base-to-novel generalisation with adapters\n\n" + report + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


# -- data ------------------------------------------------------------------------------------------------------------


def sample_shots(labels: Sequence[int] | Tensor, classes: Sequence[str], shots: int, seed: int) -> list[int]:
    """``shots`` clip indices of each class of ``classes``, drawn without replacement under ``seed``, sorted.

    Raises:
        ValueError: a class has fewer than ``shots`` clips (names ``shots``).
    """
    labels = torch.as_tensor(labels)
    generator = torch.Generator().manual_seed(seed)
    chosen = []
    for name in classes:
        pool = torch.nonzero(labels == EVENT_CLASSES.index(name)).flatten()
        if len(pool) < shots:
            raise ValueError(
                f"BaseToNovelConfig.shots={shots} but class {name!r} has {len(pool)} clips in the train split; "
                "lower shots or raise train_clips"
            )
        chosen += pool[torch.randperm(len(pool), generator=generator)[:shots]].tolist()
    return sorted(chosen)


TRAIN_KEYS = ("video", "text", "text_mask", "label", "clip_id")


def training_batches(world, indices: Sequence[int], batch_size: int, seed: int) -> Iterator[dict[str, Tensor]]:
    """Endless shuffled batches of the train clips ``indices``: a fresh order and fresh random captions every epoch,
    both drawn from ``(seed, epoch)`` only. Batches have ``min(batch_size, len(indices))`` clips (an epoch's
    incomplete last batch is dropped)."""
    from meltr.data.dataset import collate

    size = min(batch_size, len(indices))
    generator = torch.Generator().manual_seed(seed)
    epoch = 0
    while True:
        dataset = world.dataset("train", caption="random", seed=seed, epoch=epoch)
        samples = collate([{k: v for k, v in dataset[i].items() if k in TRAIN_KEYS} for i in indices])
        order = torch.randperm(len(indices), generator=generator)
        for start in range(0, len(indices) - size + 1, size):
            chosen = order[start : start + size]
            yield {key: value[chosen] for key, value in samples.items()}
        epoch += 1


# -- methods ---------------------------------------------------------------------------------------------------------


def adapt(backbone: nn.Module, method: Method, config: BaseToNovelConfig) -> nn.Module:
    """Make ``backbone`` (in place) what ``method`` trains: every parameter, or an adapter over a frozen backbone."""
    if method.adapter == "full":
        for p in backbone.parameters():
            p.requires_grad_(True)
    elif method.adapter == "none":
        for p in backbone.parameters():
            p.requires_grad_(False)
    elif method.adapter == "lora":
        inject_lora(backbone, config.lora)
    elif method.adapter == "adaptformer":
        inject_adaptformer(backbone, config.adaptformer)
    elif method.adapter == "msta":
        inject_msta(backbone, dataclasses.replace(config.msta, **method.msta))
    else:
        raise ValueError(f"Method.adapter must be none, full, lora, adaptformer or msta, got {method.adapter!r}")
    return backbone


LOSS_TASKS: dict[str, tuple[str, ...]] = {
    "ce": ("classification",),
    "ce+cc": ("classification", "consistency"),
    "meltr": ("classification", "consistency", "align"),
}


def _combiner(method: Method, config: BaseToNovelConfig):
    from meltr.combine import build_combiner

    tasks = LOSS_TASKS[method.losses]
    if method.losses == "ce":
        return build_combiner("single_task", tasks, primary_task="classification")
    if method.losses == "ce+cc":
        weights = {"classification": 1.0, "consistency": config.alpha}
        return build_combiner("manual", tasks, primary_task="classification", weights=weights)
    return build_combiner("meltr", tasks, primary_task="classification")


def load_backbone(config: BaseToNovelConfig, vocab_size: int) -> nn.Module:
    """The pre-trained backbone the experiment starts from (in eval mode; dropout is 0 in every shipped one)."""
    from meltr.models import pretrained_path
    from meltr.training.backbones import load_pretrained

    path = pretrained_path(config.backbone) if config.checkpoint == "pretrained" else Path(config.checkpoint)
    if not Path(path).exists():
        raise ValueError(f"BaseToNovelConfig.checkpoint: {path} does not exist")
    backbone = load_pretrained(path)
    if backbone.config.vocab_size != vocab_size:
        raise ValueError(
            f"BaseToNovelConfig.checkpoint: {path} has vocabulary {backbone.config.vocab_size}, the world {vocab_size}"
        )
    return backbone


def run_method(
    method_name: str,
    seed: int,
    config: BaseToNovelConfig,
    world,
    pretrained: nn.Module,
    test: tuple[Tensor, Tensor],
    advance: Callable[[int], None] = lambda steps: None,
) -> SeedResult:
    """Train one row under one seed and test it on the base and the novel classes."""
    from meltr.learner import AuxiliaryLearner

    start = time.perf_counter()
    method = METHODS[method_name]
    base, novel = config.base_classes, config.novel_classes
    torch.manual_seed(seed)  # the adapter's and the combiner's initialisation
    backbone = adapt(copy.deepcopy(pretrained), method, config)
    count = trainable_parameters(backbone)
    final_loss = math.nan
    if method.adapter != "none":
        tasks = LOSS_TASKS[method.losses]
        model = PromptClassification(
            backbone, world.tokenizer, base, config.prompts(base), tasks, config.temperature, frozen=pretrained
        )
        lr = {"full": config.full_lr, "lora": config.lora_lr}.get(method.adapter, config.lr)
        trainable = [p for p in backbone.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(trainable, lr=lr, weight_decay=config.weight_decay)
        learner = AuxiliaryLearner(
            model,
            _combiner(method, config),
            optimizer,
            meta_every=config.meta_every,
            hypergrad="identity",
            track_sensitivity=False,
            seed=seed,
        )
        indices = sample_shots(world["train"].labels, base, config.shots, seed)
        batches = training_batches(world, indices, config.batch_size, seed)
        tail = []
        for step in range(config.steps):
            stats = learner.step(next(batches))
            if step >= config.steps - max(1, config.steps // 10):
                tail.append(stats.combined)
            advance(1)
        final_loss = statistics.fmean(tail)
    videos, labels = test
    base_accuracy = prompt_accuracy(backbone, world.tokenizer, videos, labels, base, config.prompts(base))
    novel_accuracy = prompt_accuracy(backbone, world.tokenizer, videos, labels, novel, config.prompts(novel))
    return SeedResult(
        method=method_name,
        seed=seed,
        base_accuracy=base_accuracy,
        novel_accuracy=novel_accuracy,
        harmonic_mean=harmonic_mean(base_accuracy, novel_accuracy),
        trainable=count.trainable,
        total=count.total,
        final_loss=final_loss,
        seconds=time.perf_counter() - start,
    )


def run_base_to_novel(
    config: BaseToNovelConfig | None = None,
    *,
    progress: bool = False,
    directory: RunDirectory | None = None,
) -> BaseToNovelResult:
    """Run every method of ``config`` under every seed (see the module docstring) and gather the table.

    Args:
        config: the experiment (default :class:`BaseToNovelConfig`).
        progress: show a tqdm bar over all training steps.
        directory: a claimed run directory: each finished (method, seed) is recorded in it as it ends, and a rerun
            reads the recorded ones back instead of training them again (each draws only from its own seed, so the
            table is the same).
    """
    from meltr.data import make_world

    config = config or BaseToNovelConfig()
    start = time.perf_counter()
    world = make_world(
        n_pretrain=0, n_train=config.train_clips, n_meta=0, n_test=config.test_clips, seed=config.world_seed
    )
    pretrained = load_backbone(config, world.tokenizer.vocab_size)
    for p in pretrained.parameters():
        p.requires_grad_(False)
    test_split = world["test"]
    test = (torch.from_numpy(test_split.video).float().div_(255.0), torch.from_numpy(test_split.labels))
    trained = sum(METHODS[m].adapter != "none" for m in config.methods)
    bar = tqdm(total=trained * len(config.seeds) * config.steps, disable=not progress, unit="step", leave=False)
    results = []
    try:
        for name in config.methods:
            runs = []
            for seed in config.seeds:
                bar.set_description(f"{name} seed {seed}")
                recorded = directory.recorded(f"{name}-s{seed}") if directory is not None else None
                if recorded is not None:
                    run = SeedResult(**recorded)
                    bar.update(config.steps if METHODS[name].adapter != "none" else 0)
                else:
                    run = run_method(name, seed, config, world, pretrained, test, bar.update)
                    if directory is not None:
                        directory.record(f"{name}-s{seed}", dataclasses.asdict(run))
                runs.append(run)
                logger.info(
                    f"{METHODS[name].label:<34} seed {seed}: base {run.base_accuracy:5.1f}  novel "
                    f"{run.novel_accuracy:5.1f}  HM {run.harmonic_mean:5.1f}  trainable {run.trainable:,} "
                    f"({run.percent:.2f}%)  {run.seconds:.0f} s"
                )
            results.append(MethodResult(name, METHODS[name].label, runs))
    finally:
        bar.close()
    return BaseToNovelResult(config, results, time.perf_counter() - start)


__all__ = [
    "CAPTION_CLASS_WORDS",
    "DEFAULT_BASE_CLASSES",
    "METHODS",
    "REPORT_BEGIN",
    "REPORT_END",
    "BaseToNovelConfig",
    "BaseToNovelResult",
    "Method",
    "MethodResult",
    "SeedResult",
    "adapt",
    "harmonic_mean",
    "load_backbone",
    "markdown_report",
    "run_base_to_novel",
    "run_method",
    "sample_shots",
    "training_batches",
    "write_markdown",
]
