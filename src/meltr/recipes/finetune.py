"""Fine-tuning a pre-trained backbone on a downstream task with any combiner: the recipe behind ``meltr finetune``.

A run directory holds everything a run produced and everything needed to resume it:

- ``config.yaml``: the resolved recipe; ``start.json``: the checkpoint file it started from and its SHA-256;
- ``steps.csv`` / ``steps.json``: one row per step (each task's loss, the combined loss, sensitivities, meta-step
  statistics); ``epochs.csv`` / ``epochs.json``: one row per epoch (mean training losses, validation metrics);
- ``last.pt``: the full training state at the end of the last finished epoch (a rerun resumes from it);
- ``best.pt``: the model and combiner of the epoch with the best validation metric;
- ``results.json``: the test metrics of the best checkpoint (``test``) and of the last epoch (``test_last``), and
  the wall time;
- ``plots/curves.png``, ``plots/sensitivity.png``.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import math
import time
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from tqdm import tqdm

from meltr._yaml import load as yaml_load
from meltr.batches import to_device
from meltr.combine import COMBINERS, build_combiner
from meltr.hypergrad import BACKENDS, ESTIMATORS
from meltr.learner import AuxiliaryLearner
from meltr.models.base import help_field
from meltr.tasks import TASKS, build_task
from meltr.training.checkpoint import atomic_save, load_checkpoint
from meltr.training.schedule import schedule_factor


@dataclass
class FinetuneConfig:
    """A fine-tuning recipe; the shipped YAML configs (:data:`meltr.recipes.CONFIGS`) mirror its fields."""

    name: str = help_field("Run name; the run directory is out_root/name.", "run")
    out_root: str = help_field("Folder that holds run directories.", "runs")
    backbone: str | dict[str, Any] = help_field(
        "Backbone: univl, violet or allinone; or transformers towers {hf: DIR, ...} (a meltr.models.hf backbone "
        "directory; other keys are HFConfig fields) or {hf: tiny-random, kind: bert+clip, ...} (tiny random towers).",
        "univl",
    )
    checkpoint: str = help_field("'pretrained' (the shipped checkpoint), 'none' (random init) or a path.", "pretrained")
    size: str = help_field("Backbone preset when checkpoint is 'none': default or tiny.", "default")
    backbone_options: dict[str, Any] = help_field("Backbone config fields to change.", factory=dict)
    task: str = help_field("Downstream task: retrieval, captioning, qa or sentiment.", "retrieval")
    task_options: dict[str, Any] = help_field("Options of the task (e.g. qa_types, scoring).", factory=dict)
    combiner: str = help_field("Loss combiner (meltr.combine.COMBINERS).", "meltr")
    combiner_options: dict[str, Any] = help_field(
        "Options of the combiner (e.g. d_model, weights, scheme).", factory=dict
    )
    hypergrad: str = help_field("Hypergradient estimator: identity, neumann, cg, unrolled, stocbio.", "identity")
    hypergrad_options: dict[str, Any] = help_field("Options of the estimator.", factory=dict)
    backend: str = help_field("Mixed-term backend (meltr.hypergrad.BACKENDS).", "jvp")
    meta_source: str = help_field(
        "Meta batches: replay (buffer of training batches) or split (the meta split).", "replay"
    )
    meta_every: int = help_field("Inner steps between meta steps.", 3)
    reg_weight: float = help_field(
        "Weight of the regulariser |M(l) - sum_t l_t| in L_pri (the paper's gamma; 'gamma' is accepted as an alias).",
        0.1,
    )
    direct_term: bool = help_field("Include the regulariser's direct d/dphi term (the official code drops it).", True)
    reg_batch: str = help_field(
        "Batch the regulariser is evaluated on: meta (with l_0) or train (the train-side batch, as the official code).",
        "meta",
    )
    lookahead_every: int = help_field(
        "Every this many meta steps, log whether the meta step helped the primary loss on a held-out meta-split "
        "batch (lookahead/* columns; about three training steps each); 0: never.",
        0,
    )
    replay_size: int = help_field("Training batches kept for replayed meta batches (the official code's 10).", 10)
    clip_norm: float | None = help_field("Clip the hypergradient to this norm (official: 50; null: no clipping).", 50.0)
    on_nonfinite: str = help_field(
        "A step with non-finite losses or gradients: skip (with a warning) or raise.", "skip"
    )
    hypergrad_scope: list[str] | None = help_field(
        "Backbone parameter names / fnmatch patterns the hypergradient differentiates through (null: all).", None
    )
    fd_scale: float = help_field("Relative step ||e v|| / ||w|| of the finite_difference backend.", 1e-5)
    track_sensitivity: bool = help_field("Log the mean dM/dl_t of every task at every step (Fig. 4).", True)
    meta_lr: float = help_field("Learning rate of the meta optimiser (Adam).", 1e-3)
    meta_weight_decay: float = help_field("Weight decay of the meta optimiser.", 3e-5)
    lr: float = help_field("Learning rate of the model (AdamW).", 1e-4)
    weight_decay: float = help_field("Weight decay of the model.", 0.01)
    epochs: int = help_field("Training epochs over the train split.", 3)
    batch_size: int = help_field("Training batch size.", 32)
    eval_batch_size: int = help_field("Evaluation batch size.", 64)
    eval_clips: int | None = help_field("Evaluate on at most this many clips / questions (None: all).", None)
    val_clips: int | None = help_field("Validate on at most this many clips of the meta split (None: all).", None)
    seed: int = help_field("Seed of the initialisation of heads and combiner, the batch order and the masks.", 0)
    world: dict[str, Any] = help_field("WorldConfig fields to change (e.g. n_train, seed).", factory=dict)
    data: dict[str, Any] = help_field(
        "A dataset on disk instead of the world: {format: msrvtt, root: DIR, ...} with the fields of "
        "meltr.data.formats.ReadOptions and the format's own (docs/data.md), and tokenizer: wordpiece (BERT's "
        "uncased WordPiece, the default) or world (the world's words, for a world exported with meltr world "
        "export). Empty: the synthetic world.",
        factory=dict,
    )
    threads: int | None = help_field("torch threads (None: torch's default).", None)
    device: str = help_field("Where to train: cpu, cuda or auto (cuda when available).", "cpu")
    precision: str | int = help_field(
        "32, bf16 or fp16: autocast of the inner forward (meta steps in float32; fp16 with a GradScaler).", "32"
    )
    lr_schedule: str = help_field(
        "Learning rate after warmup_steps of linear warm-up: constant, linear (decay to 0, BertAdam's) or cosine.",
        "constant",
    )
    warmup_steps: int = help_field("Optimiser steps of linear learning-rate warm-up.", 0)
    max_grad_norm: float | None = help_field("Clip the model's gradients to this norm (UniVL: 1.0); null: off.", None)
    accumulate: int = help_field("Micro-batches of batch_size per optimiser step (gradient accumulation).", 1)

    def validate(self) -> FinetuneConfig:
        """Raise a ``ValueError`` naming the field of the first bad value."""
        from meltr.models import BACKBONES
        from meltr.training.schedule import LR_SCHEDULES

        hf = isinstance(self.backbone, dict)
        checks = [
            (
                "backbone",
                (hf and isinstance(self.backbone.get("hf"), str)) or (not hf and self.backbone in BACKBONES),
                f"one of {BACKBONES.names()} or {{hf: DIR or tiny-random, ...}}",
            ),
            ("task", self.task in TASKS, f"one of {TASKS.names()}"),
            ("combiner", self.combiner in COMBINERS, f"one of {COMBINERS.names()}"),
            ("hypergrad", self.hypergrad in ESTIMATORS, f"one of {ESTIMATORS.names()}"),
            ("backend", self.backend in BACKENDS, f"one of {BACKENDS.names()}"),
            ("meta_source", self.meta_source in ("replay", "split"), "'replay' or 'split'"),
            ("epochs", self.epochs >= 1, "at least 1"),
            ("batch_size", self.batch_size >= 2, "at least 2"),
            ("meta_every", self.meta_every >= 1, "at least 1"),
            ("lr", self.lr > 0, "positive"),
            ("meta_lr", self.meta_lr > 0, "positive"),
            ("reg_weight", self.reg_weight >= 0, "non-negative"),
            ("replay_size", self.replay_size >= 1, "at least 1"),
            ("clip_norm", self.clip_norm is None or self.clip_norm > 0, "positive or null"),
            ("on_nonfinite", self.on_nonfinite in ("skip", "raise"), "'skip' or 'raise'"),
            ("fd_scale", self.fd_scale > 0, "positive"),
            ("reg_batch", self.reg_batch in ("meta", "train"), "'meta' or 'train'"),
            ("lookahead_every", self.lookahead_every >= 0, "0 (never) or positive"),
            ("device", self.device in ("cpu", "cuda", "auto"), "cpu, cuda or auto"),
            ("device", self.device != "cuda" or torch.cuda.is_available(), "cpu or auto: cuda is not available here"),
            ("precision", str(self.precision) in ("32", "bf16", "fp16"), "32, bf16 or fp16"),
            ("lr_schedule", self.lr_schedule in LR_SCHEDULES, f"one of {list(LR_SCHEDULES)}"),
            ("warmup_steps", self.warmup_steps >= 0, "0 or positive"),
            ("max_grad_norm", self.max_grad_norm is None or self.max_grad_norm > 0, "positive or null"),
            ("accumulate", self.accumulate >= 1, "at least 1"),
        ]
        for name, ok, expected in checks:
            if not ok:
                raise ValueError(f"config field {name!r} must be {expected}, got {getattr(self, name)!r}")
        if self.data:
            from meltr.data.formats import READERS

            if self.world:
                raise ValueError("config fields 'world' and 'data' exclude each other: a run reads one dataset")
            missing = [key for key in ("format", "root") if key not in self.data]
            if missing:
                raise ValueError(f"config field 'data' needs {missing}, e.g. data: {{format: msrvtt, root: DIR}}")
            if self.data["format"] not in READERS:
                raise ValueError(
                    f"config field 'data.format' must be one of {READERS.names()}, got {self.data['format']!r}"
                )
            if self.data.get("tokenizer", "wordpiece") not in ("wordpiece", "world"):
                raise ValueError(
                    f"config field 'data.tokenizer' must be wordpiece or world, got {self.data['tokenizer']!r}"
                )
        return self

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "config") -> FinetuneConfig:
        values = _resolve_aliases(values, source)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"{source}: unknown field(s) {unknown}; known fields: {sorted(known)}")
        hints = typing.get_type_hints(cls)
        values = {name: _coerce(name, value, hints[name], source) for name, value in values.items()}
        return cls(**values).validate()

    @classmethod
    def load(cls, path: str | Path, overrides: list[str] | None = None) -> FinetuneConfig:
        """Read a YAML recipe and apply ``key=value`` overrides (``key.sub=value`` sets a field of a dict)."""
        path = Path(path)
        try:
            values = yaml_load(path.read_text()) or {}
        except FileNotFoundError:
            raise ValueError(f"{path}: no such recipe") from None
        except yaml.YAMLError as error:
            raise ValueError(f"{path}: not valid YAML ({error})") from None
        if not isinstance(values, dict):
            raise ValueError(f"{path}: a recipe is a mapping of field: value")
        apply_overrides(values, overrides or [])
        return cls.from_dict(values, source=str(path))

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def run_dir(self) -> Path:
        return Path(self.out_root) / self.name


LEARNER_FIELDS: tuple[str, ...] = (
    "meta_every",
    "reg_weight",
    "hypergrad",
    "hypergrad_options",
    "backend",
    "meta_source",
    "direct_term",
    "seed",
    "reg_batch",
    "lookahead_every",
    "replay_size",
    "clip_norm",
    "on_nonfinite",
    "hypergrad_scope",
    "fd_scale",
    "track_sensitivity",
    "max_grad_norm",
    "accumulate",
)
"""The config fields that are :class:`~meltr.learner.AuxiliaryLearner` options of the same name."""

ALIASES: dict[str, str] = {"gamma": "reg_weight"}
"""Older names of fields, still read: ``gamma`` is the regulariser weight (the curriculum has a gamma of its own)."""


def _resolve_aliases(values: dict[str, Any], source: str) -> dict[str, Any]:
    """``values`` with every alias renamed to its field; an alias next to its field is an error naming both."""
    values = dict(values)
    for alias, name in ALIASES.items():
        if alias in values:
            if name in values:
                raise ValueError(f"{source}: give {name!r} or its alias {alias!r}, not both")
            values[name] = values.pop(alias)
    return values


def _coerce(name: str, value: Any, hint: Any, source: str) -> Any:
    """Check ``value`` against the field's type (an int is taken for a float field).

    Raises a ``ValueError`` naming the source and the field when the value has the wrong type. (``1e-3`` arrives as
    a float: every recipe and override is read by :mod:`meltr._yaml`.)
    """
    options = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    if value is None and type(None) in options:
        return None
    for option in options:
        base = typing.get_origin(option) or option
        if base is type(None):
            continue
        if base is float:
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return float(value)
        elif base is int:
            if isinstance(value, int) and not isinstance(value, bool):
                return value
        elif base in (str, bool, dict, list):
            if isinstance(value, base):
                return value
        else:  # Any
            return value
    expected = " or ".join("null" if o is type(None) else (typing.get_origin(o) or o).__name__ for o in options)
    raise ValueError(f"{source}: field {name!r} must be {expected}, got {value!r}")


def apply_overrides(values: dict[str, Any], overrides: list[str]) -> None:
    """Apply ``key=value`` / ``key.sub=value`` strings (values read as YAML scalars) to ``values`` in place."""
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ValueError(f"override {item!r}: expected key=value")
        value = yaml_load(raw)
        target = values
        parts = key.strip().split(".")
        parts[0] = ALIASES.get(parts[0], parts[0])
        for part in parts[:-1]:
            target = target.setdefault(part, {})
            if not isinstance(target, dict):
                raise ValueError(f"override {item!r}: {part!r} is not a mapping")
        target[parts[-1]] = value


# -- building the pieces -----------------------------------------------------------------------------------------
def build_world(config: FinetuneConfig):
    """The run's data: the world of ``config.world``, or the dataset on disk of ``config.data``."""
    from meltr.data import WorldConfig, make_world

    if config.data:
        return build_corpus(config.data)

    values = {"n_pretrain": 0, **config.world}
    try:
        return make_world(WorldConfig(**values))
    except TypeError as error:
        raise ValueError(f"config field 'world': {error}") from None


def build_corpus(data: dict[str, Any]):
    """Read the dataset of a recipe's ``data`` block (:func:`meltr.data.formats.read_dataset`)."""
    from meltr.data import world_tokenizer
    from meltr.data.formats import read_dataset

    options = dict(data)
    fmt, root, tokenizer = options.pop("format"), options.pop("root"), options.pop("tokenizer", "wordpiece")
    try:
        return read_dataset(fmt, root, tokenizer=world_tokenizer() if tokenizer == "world" else None, **options)
    except (TypeError, ValueError) as error:
        raise ValueError(f"config field 'data': {error}") from None


def checkpoint_file(config: FinetuneConfig) -> Path | None:
    """The file the backbone starts from (None for a random initialisation)."""
    from meltr.models import pretrained_path

    if config.checkpoint == "none" or isinstance(config.backbone, dict):
        return None  # transformers towers start from their own directory
    return Path(pretrained_path(config.backbone) if config.checkpoint == "pretrained" else config.checkpoint)


def starting_point(config: FinetuneConfig) -> dict[str, Any]:
    """What a run starts from beyond its recipe: the checkpoint file and its SHA-256 (``start.json``).

    Two runs of one recipe are the same run only if they start from the same weights: a re-made
    ``pretrained`` checkpoint changes the digest, not the recipe.
    """
    path = checkpoint_file(config)
    if path is None or not path.exists():
        return {"checkpoint": None if path is None else str(path), "sha256": None}
    return {"checkpoint": str(path), "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` when available, else ``cpu``; other names as they are."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def backbone_name(config: FinetuneConfig) -> str:
    """The backbone's name for the task heads: the registry name, or ``hf`` for transformers towers."""
    return "hf" if isinstance(config.backbone, dict) else config.backbone


def build_hf_backbone_for(config: FinetuneConfig, world) -> torch.nn.Module:
    """Transformers towers (``backbone: {hf: DIR | tiny-random, ...}``) for the world's clips and vocabulary."""
    from meltr.models.hf import build_hf_backbone, tiny_random_backbone

    spec = dict(config.backbone)
    source = spec.pop("hf")
    try:
        if source == "tiny-random":
            shape = {"image_size": world.config.image_size, "frames": world.config.n_frames}
            return tiny_random_backbone(world.tokenizer.vocab_size, **shape, **spec)
        return build_hf_backbone(source, **spec)
    except (FileNotFoundError, TypeError, ValueError) as error:
        raise ValueError(f"config field 'backbone': {error}") from None


def build_backbone_for(config: FinetuneConfig, world) -> torch.nn.Module:
    from meltr.models import build_backbone
    from meltr.training.checkpoint import load_pretrained

    if isinstance(config.backbone, dict):
        return build_hf_backbone_for(config, world)
    if config.checkpoint == "none":
        shape = {"image_size": world.config.image_size}
        special = getattr(world.tokenizer, "special_ids", None)
        if special is not None and "special_tokens" not in config.backbone_options:
            shape["special_tokens"] = special  # a real-text tokenizer's [CLS], [SEP], [MASK] ids
        return build_backbone(
            config.backbone, config.size, vocab_size=world.tokenizer.vocab_size, **shape, **config.backbone_options
        )
    path = checkpoint_file(config)
    if not path.exists():
        raise ValueError(f"config field 'checkpoint': {path} does not exist")
    backbone = load_pretrained(path)
    for key, value in config.backbone_options.items():
        if not hasattr(backbone.config, key):
            raise ValueError(f"config field 'backbone_options': {config.backbone} has no option {key!r}")
        setattr(backbone.config, key, value)
    if backbone.config.vocab_size != world.tokenizer.vocab_size:
        raise ValueError(
            f"{path}: the checkpoint's vocabulary ({backbone.config.vocab_size}) is not the world's "
            f"({world.tokenizer.vocab_size})"
        )
    return backbone


def zero_shot(config: FinetuneConfig, world=None) -> dict[str, float]:
    """The recipe's model on its test split without any fine-tuning: the row every fine-tuned run must beat."""
    config.validate()
    world = world if world is not None else build_world(config)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        backbone = build_backbone_for(config, world)
        model = build_task(config.task, backbone, backbone_name(config), **config.task_options)
    return model.evaluate(world, "test", config.eval_batch_size, max_clips=config.eval_clips)


@dataclass
class FinetuneResult:
    run_dir: Path
    test: dict[str, float]
    best_epoch: int
    seconds: float
    epochs: list[dict[str, Any]]
    test_last: dict[str, float] | None = None


def finetune(
    config: FinetuneConfig,
    world=None,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> FinetuneResult:
    """Fine-tune, validate every epoch, keep the best checkpoint, test it; resume if the run directory has a state.

    The run uses PyTorch's deterministic algorithms (restored afterwards): with more than one CPU thread some
    kernels otherwise sum in a varying order, and the rounding differences grow over the run (two runs of one
    MELTR recipe then differed by up to 2.5 R@1 on the demo).

    Raises:
        ValueError: the run directory holds a run of another recipe (nothing in it is touched).
    """
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        return _finetune(config, world, progress, log)
    finally:
        torch.use_deterministic_algorithms(previous)


def _finetune(
    config: FinetuneConfig,
    world,
    progress: bool,
    log: Callable[[str], None] | None,
) -> FinetuneResult:
    config.validate()
    run_dir = config.run_dir
    saved_config = run_dir / "config.yaml"
    if saved_config.exists():
        previous = yaml_load(saved_config.read_text())
        if previous != config.as_dict():
            raise ValueError(
                f"{saved_config}: the run directory holds a run of another recipe; choose another name or out_root"
            )
    start = starting_point(config)
    saved_start = run_dir / "start.json"
    if saved_start.exists() and json.loads(saved_start.read_text())["sha256"] != start["sha256"]:
        raise ValueError(
            f"{saved_start}: the run directory holds a run that started from other weights than {start['checkpoint']} "
            "(the checkpoint was re-made); choose another name or out_root"
        )
    if config.threads:
        torch.set_num_threads(config.threads)
    started = time.perf_counter()
    world = world if world is not None else build_world(config)
    torch.manual_seed(config.seed)
    backbone = build_backbone_for(config, world)
    task_options = dict(config.task_options)
    if config.task == "qa" and getattr(world, "answers", ()):
        task_options.setdefault("num_answers", len(world.answers))  # the dataset's answer vocabulary
    model = build_task(config.task, backbone, backbone_name(config), **task_options)
    device = torch.device(resolve_device(config.device))
    model.to(device)
    combiner = build_combiner(config.combiner, model.tasks, model.primary_task, **config.combiner_options).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    per_epoch = len(world.splits["train"]) // config.batch_size
    total_steps = max(1, per_epoch * config.epochs // config.accumulate)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: schedule_factor(config.lr_schedule, step, config.warmup_steps, total_steps)
    )
    precision = str(config.precision)
    meta_optimizer = None
    if combiner.meta_parameters():
        meta_optimizer = torch.optim.Adam(
            combiner.meta_parameters(), lr=config.meta_lr, weight_decay=config.meta_weight_decay
        )
    meta_data = None
    if config.meta_source == "split":
        meta_data = _Cycle(world, "meta", config.batch_size, config.seed, model.loader_options("train"))
    lookahead_data = None
    if config.lookahead_every:
        lookahead_data = _Cycle(world, "meta", config.batch_size, config.seed + 1, model.loader_options("train"))
    learner = AuxiliaryLearner(
        model,
        combiner,
        optimizer,
        meta_optimizer=meta_optimizer,
        meta_data=meta_data,
        lookahead_data=lookahead_data,
        **{name: getattr(config, name) for name in LEARNER_FIELDS},
        precision=precision,
        grad_scaler=torch.amp.GradScaler(device.type) if precision == "fp16" else None,
    )
    steps: list[dict[str, Any]] = []
    epochs: list[dict[str, Any]] = []
    start_epoch, best_score, best_epoch, elapsed_before = 0, -math.inf, -1, 0.0
    last = run_dir / "last.pt"
    if last.exists():
        state = load_checkpoint(last)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        learner.load_state_dict(state["learner"])
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"])
        steps, epochs = state["steps"], state["epochs"]
        start_epoch, best_score, best_epoch = state["epoch"] + 1, state["best_score"], state["best_epoch"]
        elapsed_before = state["seconds"]
        if log:
            log(f"resumed {run_dir} after epoch {state['epoch']}")
    run_dir.mkdir(parents=True, exist_ok=True)
    saved_config.write_text(yaml.safe_dump(config.as_dict(), sort_keys=False))
    saved_start.write_text(json.dumps(start, indent=1))
    if getattr(world, "provenance", None):
        # real data has no meta split: where it came from (e.g. a seeded share of train, its ids) is recorded
        (run_dir / "data.json").write_text(json.dumps(world.provenance, indent=1))

    evaluated = world if device.type == "cpu" else _OnDevice(world, device)
    bar = tqdm(
        total=per_epoch * config.epochs,
        initial=per_epoch * start_epoch,
        desc=f"{config.name}",
        disable=not progress,
        leave=False,
    )
    for epoch in range(start_epoch, config.epochs):
        loader = world.loader(
            "train", config.batch_size, seed=config.seed, epoch=epoch, drop_last=True, **model.loader_options("train")
        )
        epoch_rows = []
        for batch in loader:
            optimiser_steps = learner.inner_steps
            stats = learner.step(batch if device.type == "cpu" else to_device(batch, device))
            if learner.inner_steps > optimiser_steps:
                scheduler.step()
            row = {"epoch": epoch, **stats.as_dict()}
            steps.append(row)
            epoch_rows.append(row)
            bar.update(1)
            if not stats.skipped:
                bar.set_postfix(loss=f"{stats.losses[model.primary_task]:.3f}")
        validation = model.evaluate(evaluated, "meta", config.eval_batch_size, max_clips=config.val_clips)
        summary = {"epoch": epoch, **_means(epoch_rows), **{f"val/{k}": v for k, v in validation.items()}}
        epochs.append(summary)
        score = validation[model.metric]
        if score > best_score or best_epoch < 0:
            best_score, best_epoch = score, epoch
            atomic_save(
                {"model": model.state_dict(), "combiner": combiner.state_dict(), "epoch": epoch}, run_dir / "best.pt"
            )
        seconds = elapsed_before + time.perf_counter() - started
        atomic_save(
            {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "learner": learner.state_dict(),
                "scheduler": scheduler.state_dict(),
                "rng": torch.get_rng_state(),
                "steps": steps,
                "epochs": epochs,
                "epoch": epoch,
                "best_score": best_score,
                "best_epoch": best_epoch,
                "seconds": seconds,
            },
            last,
        )
        write_rows(run_dir / "steps", steps)
        write_rows(run_dir / "epochs", epochs)
        if log:
            log(f"epoch {epoch}: val {model.metric} = {score:.2f} (best {best_score:.2f} at epoch {best_epoch})")
    bar.close()

    # The last epoch's test metrics are reported beside the selected epoch's, so that a noisy selection shows.
    last_epoch = config.epochs - 1
    test_last = None
    if best_epoch != last_epoch:
        test_last = model.evaluate(evaluated, "test", config.eval_batch_size, max_clips=config.eval_clips)
    best = load_checkpoint(run_dir / "best.pt")
    model.load_state_dict(best["model"])
    combiner.load_state_dict(best["combiner"])
    test = model.evaluate(evaluated, "test", config.eval_batch_size, max_clips=config.eval_clips)
    seconds = elapsed_before + time.perf_counter() - started if start_epoch < config.epochs else elapsed_before
    results = {
        "test": test,
        "best_epoch": best_epoch,
        "test_last": test if test_last is None else test_last,
        "last_epoch": last_epoch,
        "seconds": seconds,
        "metric": model.metric,
    }
    (run_dir / "results.json").write_text(json.dumps(results, indent=1))
    from meltr.analysis.plots import plot_run

    plot_run(run_dir, steps, model.tasks)
    return FinetuneResult(run_dir, test, best_epoch, seconds, epochs, results["test_last"])


class _OnDevice:
    """The world as evaluation reads it, with every batch moved to ``device``."""

    def __init__(self, world, device: torch.device) -> None:
        self.world, self.device = world, device

    def loader(self, *args: Any, **kwargs: Any):
        return [to_device(batch, self.device) for batch in self.world.loader(*args, **kwargs)]

    def __getattr__(self, name: str) -> Any:
        return getattr(self.world, name)


class _Cycle:
    """Meta batches from the meta split, a fresh shuffle each pass."""

    def __init__(self, world, split: str, batch_size: int, seed: int, options: dict[str, Any]) -> None:
        self.world, self.split, self.batch_size, self.seed, self.options = world, split, batch_size, seed, options
        self.passes = 0

    def __iter__(self):
        self.passes += 1
        return iter(
            self.world.loader(
                self.split,
                self.batch_size,
                shuffle=True,
                seed=self.seed + 7919,
                epoch=self.passes,
                drop_last=True,
                **self.options,
            )
        )


def _means(rows: list[dict[str, Any]]) -> dict[str, float]:
    keys = [k for k in rows[0] if k.startswith("loss/") or k == "combined"] if rows else []
    out = {}
    for key in keys:
        values = [r[key] for r in rows if isinstance(r.get(key), float) and math.isfinite(r[key])]
        out[f"train/{key}"] = sum(values) / len(values) if values else math.nan
    out["train/skipped"] = sum(bool(r.get("skipped")) for r in rows)
    return out


def write_rows(stem: Path, rows: list[dict[str, Any]]) -> None:
    """Write ``rows`` as ``stem.csv`` and ``stem.json`` (the union of keys as CSV columns)."""
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    temporary = stem.with_suffix(".csv.tmp")
    with temporary.open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    temporary.replace(stem.with_suffix(".csv"))
    temporary = stem.with_suffix(".json.tmp")
    temporary.write_text(json.dumps(rows))
    temporary.replace(stem.with_suffix(".json"))
