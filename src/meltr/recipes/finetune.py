"""Fine-tuning a pre-trained backbone on a downstream task with any combiner: the recipe behind ``meltr finetune``.

The recipe has four parts, each a function: :func:`setup` (data, model, combiner, optimisers, learner; resume from
``last.pt``), :func:`train` (the epochs: steps, validation, checkpoints), :func:`evaluate` (test the best checkpoint
and the last epoch) and :func:`save` (results and plots). :func:`finetune` runs them inside a claimed
:class:`~meltr.training.run_directory.RunDirectory` (a lock; a run that fails before its first saved state leaves
nothing behind).

A run directory holds everything a run produced and everything needed to resume it:

- ``run.json``: the recipe (``finetune``), the primary task, the task list and the validation metric;
- ``config.yaml``: the resolved recipe; ``start.json``: the checkpoint file (or transformers backbone directory) it
  started from and its SHA-256;
- ``steps.csv`` / ``steps.json``: one row per micro-batch (each task's loss, the combined loss, sensitivities, the
  learning rate it ran at, meta-step statistics); ``epochs.csv`` / ``epochs.json``: one row per epoch (mean
  training losses, validation metrics); ``validation.csv`` / ``validation.json``: one row per validation (at
  the end of each epoch, and every ``val_every`` optimiser steps if set) with the optimiser step and
  ``train_seconds``, the cumulative time of the training steps (learner step and schedule; validation, checkpoints
  and logging excluded; timing varies, so it is kept out of the step and epoch rows, which are deterministic);
- ``last.pt``: the full training state at the end of the last finished epoch (a rerun resumes from it);
- ``best.pt``: the model and combiner of the epoch with the best validation metric;
- ``results.json``: the test metrics of the best checkpoint (``test``) and of the last epoch (``test_last``), the
  primary task and the wall time;
- ``plots/curves.png``, ``plots/sensitivity.png``.

The training loop's options: ``device`` (cpu / cuda / auto), ``precision`` (32 / bf16 / fp16: autocast of the
backbone's inner forward passes; the combiner, every meta step and evaluation run in float32, since the learner
computes hypergradients outside autocast), ``lr_schedule`` with ``warmup_steps`` (:func:`meltr.training.schedule.\
schedule_factor`, counted in optimiser steps), ``max_grad_norm`` (inner-gradient clipping after unscaling) and
``accumulate`` (micro-batches of ``batch_size`` per optimiser step). A transformers backbone is
``backbone: {hf: DIR, ...}`` (:mod:`meltr.models.hf`); ``hf: tiny-random`` builds tiny random towers offline (the
shipped ``tiny_hf`` recipe).
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import math
import os
import time
import typing
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from meltr.batches import to_device
from meltr.combine import COMBINERS, build_combiner
from meltr.config import (
    ConfigError,
    apply_overrides,
    check_fields,
    check_options,
    coerce,
    config_from_dict,
    did_you_mean,
    help_field,
    read_recipe,
)
from meltr.hypergrad import BACKENDS, ESTIMATORS
from meltr.hypergrad.scope import scope_entries
from meltr.learner import AuxiliaryLearner
from meltr.tasks import TASKS, build_task
from meltr.training.backbones import (
    backbone_for,
    check_backbone_options,
    check_hf_spec,
    hf_backbone_for,
    hf_starting_point,
)
from meltr.training.backbones import starting_point as backbone_starting_point
from meltr.training.checkpoint import check_checkpoint, checkpoint_label, load_checkpoint
from meltr.training.loggers import CSVLogger, LoggingLogger, MetricLogger, MetricLoggers
from meltr.training.run_directory import RunDirectory
from meltr.training.schedule import LR_SCHEDULES, schedule_factor

logger = logging.getLogger(__name__)

RECIPE = "finetune"


@dataclass
class FinetuneConfig:
    """A fine-tuning recipe; the shipped YAML configs (:data:`meltr.recipes.CONFIGS`) mirror its fields."""

    name: str = help_field("Run name; the run directory is out_root/name.", "run")
    out_root: str = help_field("Folder that holds run directories.", "runs")
    backbone: str | dict[str, Any] = help_field(
        "Backbone: univl, violet or allinone; or transformers towers (meltr.models.hf, extra meltr[hf]): "
        "{hf: DIR, ...} a backbone directory written by meltr.models.hf.save_hf_backbone (text/ + video/, clip/ or "
        "xclip/), or {hf: tiny-random, kind: bert+clip, width: 32, ...} tiny random towers built offline from the "
        "seed; the other keys are HFConfig fields (dim, mlm, caption, ...).",
        "univl",
    )
    checkpoint: str = help_field("'pretrained' (the shipped checkpoint), 'none' (random init) or a path.", "pretrained")
    size: str = help_field(
        "Backbone preset: default or tiny (with checkpoint 'pretrained', the checkpoint shipped at that size).",
        "default",
    )
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
        "Meta batches: replay (buffer of training batches), split (the meta split) or next (the next inner batch, "
        "whose forward the meta step shares).",
        "replay",
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
    replay_storage: str = help_field(
        "What the replay buffer keeps of a batch: device (the batch as trained on) or cpu (a CPU copy, moved back "
        "when replayed: frees GPU memory with device=cuda).",
        "device",
    )
    replay_in_checkpoint: bool = help_field(
        "Keep the replay buffer in last.pt (false: smaller checkpoints, but a resumed run replays only batches seen "
        "after resuming, so it differs from an uninterrupted one).",
        True,
    )
    clip_norm: float | None = help_field("Clip the hypergradient to this norm (official: 50; null: no clipping).", 50.0)
    on_nonfinite: str = help_field(
        "A step with non-finite losses or gradients: skip (with a warning) or raise.", "skip"
    )
    hypergrad_scope: list[str] | str | None = help_field(
        "What the hypergradient differentiates through: last_blocks(N) (last N blocks of every stack + heads), head, "
        "or fnmatch patterns of parameter names; a list mixes them (null: all).",
        None,
    )
    fd_scale: float | None = help_field(
        "Relative step ||e v|| / ||w|| of the finite-difference backends (null: 1e-5 central, 1e-6 one-sided).", None
    )
    track_sensitivity: bool | int = help_field(
        "Log the mean dM/dl_t of every task (Fig. 4): true every step, N every N steps, false never.", True
    )
    meta_train_batch: str = help_field(
        "Train-side batch of a meta step: replay (a replayed batch, the official code) or current (the step's own "
        "batch; the meta step then reuses its forward, before the optimiser step).",
        "replay",
    )
    check_finite_every: int = help_field(
        "Check losses and gradients for NaN/inf (and skip such steps) every N steps; 0: never.", 1
    )
    cache_scope_inputs: bool = help_field(
        "Keep the activations below the hypergradient scope from a meta step's first pass over a batch, so that "
        "its later passes run through the scope only (exact; needs hypergrad_scope).",
        False,
    )
    scope_cosine_every: int = help_field(
        "Every N meta steps also compute the full-scope hypergradient and log its cosine with the scoped one "
        "(meta/scope_cosine, in meltr analyze); 0: never. Needs hypergrad_scope.",
        0,
    )
    meta_lr: float = help_field("Learning rate of the meta optimiser (Adam).", 1e-3)
    meta_weight_decay: float = help_field("Weight decay of the meta optimiser.", 3e-5)
    lr: float = help_field("Learning rate of the model (AdamW).", 1e-4)
    weight_decay: float = help_field("Weight decay of the model.", 0.01)
    epochs: int = help_field("Training epochs over the train split.", 3)
    batch_size: int = help_field("Training batch size.", 32)
    eval_batch_size: int = help_field("Evaluation batch size.", 64)
    eval_clips: int | None = help_field("Evaluate on at most this many clips / questions (None: all).", None)
    val_clips: int | None = help_field("Validate on at most this many clips of the meta split (None: all).", None)
    val_every: int = help_field(
        "Also validate after every N optimiser steps of an epoch (rows in validation.csv with the cumulative training "
        "time, for time-to-quality curves; the random state is kept, so the run is the one without it); 0: only at "
        "the end of each epoch.",
        0,
    )
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
    device: str = help_field("Where to train and evaluate: cpu, cuda or auto (cuda when available).", "cpu")
    precision: str | int = help_field(
        "32, bf16 or fp16: torch.autocast of the backbone's inner forward passes; the combiner, the meta steps and "
        "evaluation stay in float32, and fp16 runs with a GradScaler.",
        "32",
    )
    lr_schedule: str = help_field(
        "Learning rate after warmup_steps of linear warm-up: constant, linear (decay to 0 at the last optimiser "
        "step, UniVL's BertAdam) or cosine (to 0).",
        "constant",
    )
    warmup_steps: int = help_field("Optimiser steps of linear learning-rate warm-up from lr / warmup_steps.", 0)
    max_grad_norm: float | None = help_field(
        "Clip the model's gradients to this norm before each optimiser step (UniVL: 1.0); null: no clipping.", None
    )
    accumulate: int = help_field(
        "Micro-batches of batch_size per optimiser step (gradient accumulation); meta_every, the replay buffer and "
        "the schedule count optimiser steps.",
        1,
    )

    def __post_init__(self) -> None:
        # YAML reads `precision: 32` as an int; the learner and the saved config.yaml take the string
        if isinstance(self.precision, int) and not isinstance(self.precision, bool):
            self.precision = str(self.precision)

    def validate(self, source: str = "config") -> FinetuneConfig:
        """Check every field, every ``*_options`` key and the world's split sizes against the batch size.

        Raises:
            ConfigError: one line naming ``source`` and the first bad field.
        """
        from meltr.models import BACKBONES

        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            coerce(f.name, getattr(self, f.name), hints[f.name], source)  # types, finite floats
        if isinstance(self.backbone, dict):
            self._validate_hf(source)
        elif self.backbone not in BACKBONES:
            raise ConfigError(
                f"{source}: field 'backbone' must be one of {BACKBONES.names()} or {{hf: DIR, ...}}, got "
                f"{self.backbone!r}{did_you_mean(self.backbone, BACKBONES.names())}"
            )
        for name, registry in (
            ("task", TASKS),
            ("combiner", COMBINERS),
            ("hypergrad", ESTIMATORS),
            ("backend", BACKENDS),
        ):
            value = getattr(self, name)
            if value not in registry:
                raise ConfigError(
                    f"{source}: field {name!r} must be one of {registry.names()}, got {value!r}"
                    f"{did_you_mean(value, registry.names())}"
                )
        optional = [(n, getattr(self, n)) for n in ("eval_clips", "val_clips", "threads")]
        check_fields(
            source,
            [
                (
                    "meta_source",
                    self.meta_source,
                    self.meta_source in ("replay", "split", "next"),
                    "'replay', 'split' or 'next'",
                ),
                ("epochs", self.epochs, self.epochs >= 1, "at least 1"),
                ("batch_size", self.batch_size, self.batch_size >= 2, "at least 2"),
                ("eval_batch_size", self.eval_batch_size, self.eval_batch_size >= 1, "at least 1"),
                ("meta_every", self.meta_every, self.meta_every >= 1, "at least 1"),
                ("lr", self.lr, self.lr > 0, "positive"),
                ("meta_lr", self.meta_lr, self.meta_lr > 0, "positive"),
                ("reg_weight", self.reg_weight, self.reg_weight >= 0, "non-negative"),
                ("weight_decay", self.weight_decay, self.weight_decay >= 0, "non-negative"),
                ("meta_weight_decay", self.meta_weight_decay, self.meta_weight_decay >= 0, "non-negative"),
                ("replay_size", self.replay_size, self.replay_size >= 1, "at least 1"),
                (
                    "replay_storage",
                    self.replay_storage,
                    self.replay_storage in ("device", "cpu"),
                    "device or cpu (the learner's 'index' storage needs a loop that re-fetches batches)",
                ),
                ("clip_norm", self.clip_norm, self.clip_norm is None or self.clip_norm > 0, "positive or null"),
                ("on_nonfinite", self.on_nonfinite, self.on_nonfinite in ("skip", "raise"), "'skip' or 'raise'"),
                ("fd_scale", self.fd_scale, self.fd_scale is None or self.fd_scale > 0, "positive or null"),
                ("reg_batch", self.reg_batch, self.reg_batch in ("meta", "train"), "'meta' or 'train'"),
                ("lookahead_every", self.lookahead_every, self.lookahead_every >= 0, "0 (never) or positive"),
                ("val_every", self.val_every, self.val_every >= 0, "0 (every epoch only) or positive"),
                (
                    "meta_train_batch",
                    self.meta_train_batch,
                    self.meta_train_batch in ("replay", "current"),
                    "'replay' or 'current'",
                ),
                ("check_finite_every", self.check_finite_every, self.check_finite_every >= 0, "0 (never) or positive"),
                ("scope_cosine_every", self.scope_cosine_every, self.scope_cosine_every >= 0, "0 (never) or positive"),
                (
                    "scope_cosine_every",
                    self.scope_cosine_every,
                    not self.scope_cosine_every or self.hypergrad_scope is not None,
                    "0 without a hypergrad_scope (there is nothing to compare)",
                ),
                ("track_sensitivity", self.track_sensitivity, self.track_sensitivity >= 0, "a bool or N >= 0"),
                ("name", self.name, bool(self.name) and "/" not in self.name, "a non-empty name without '/'"),
                *[(n, v, v is None or v >= 1, "at least 1 or null") for n, v in optional],
                ("device", self.device, self.device in ("cpu", "cuda", "auto"), "cpu, cuda or auto"),
                (
                    "device",
                    self.device,
                    self.device != "cuda" or torch.cuda.is_available(),
                    "cpu or auto: this torch sees no CUDA device",
                ),
                ("precision", self.precision, self.precision in ("32", "bf16", "fp16"), "32, bf16 or fp16"),
                ("lr_schedule", self.lr_schedule, self.lr_schedule in LR_SCHEDULES, f"one of {list(LR_SCHEDULES)}"),
                ("warmup_steps", self.warmup_steps, self.warmup_steps >= 0, "0 (no warm-up) or positive"),
                (
                    "max_grad_norm",
                    self.max_grad_norm,
                    self.max_grad_norm is None or self.max_grad_norm > 0,
                    "positive or null",
                ),
                ("accumulate", self.accumulate, self.accumulate >= 1, "at least 1"),
            ],
        )
        try:
            scope_entries(self.hypergrad_scope)
        except ValueError as error:
            raise ConfigError(f"{source}: field 'hypergrad_scope': {error}") from None
        estimator = ESTIMATORS.get(self.hypergrad)
        check_options(
            self.hypergrad_options, estimator, "hypergrad_options", source, owner=f"estimator {self.hypergrad!r}"
        )
        try:
            estimator(**self.hypergrad_options)  # the estimator checks its own ranges
        except (TypeError, ValueError) as error:
            raise ConfigError(f"{source}: field 'hypergrad_options': {error}") from None
        for name, factory, owner, reserved in (
            (
                "combiner_options",
                COMBINERS.get(self.combiner),
                f"combiner {self.combiner!r}",
                ("tasks", "primary_task"),
            ),
            ("task_options", TASKS.get(self.task), f"task {self.task!r}", ("backbone", "backbone_name")),
        ):
            check_options(getattr(self, name), factory, name, source, owner=owner, reserved=reserved)
        if not isinstance(self.backbone, dict):
            check_backbone_options(self.backbone, self.backbone_options, source)
        if self.data:
            self._validate_data(source)
            return self
        world = self.world_config(source)
        if world.n_train < self.batch_size * self.accumulate:
            group = self.batch_size * self.accumulate
            what = f"batch_size ({group})" if self.accumulate == 1 else f"batch_size x accumulate ({group})"
            raise ConfigError(
                f"{source}: world.n_train ({world.n_train}) is smaller than {what}, so an epoch would take no "
                "optimiser step; raise world.n_train or lower batch_size"
            )
        if (self.meta_source == "split" or self.lookahead_every) and world.n_meta < self.batch_size:
            raise ConfigError(
                f"{source}: world.n_meta ({world.n_meta}) is smaller than batch_size ({self.batch_size}), and meta "
                "batches come from the meta split; raise world.n_meta or lower batch_size"
            )
        return self

    def _validate_hf(self, source: str) -> None:
        """A transformers backbone spec; the fields of the reference backbones must then keep their defaults."""
        check_hf_spec(self.backbone, source)
        for name, default in (("checkpoint", "pretrained"), ("size", "default"), ("backbone_options", {})):
            if getattr(self, name) != default:
                raise ConfigError(
                    f"{source}: field {name!r} does not apply to a transformers backbone (backbone.hf holds its "
                    "weights, the other backbone keys its options); remove it"
                )

    @property
    def backbone_name(self) -> str:
        """The backbone's name for the task heads and checkpoint labels: the registry name, or ``hf``."""
        return "hf" if isinstance(self.backbone, dict) else self.backbone

    def _validate_data(self, source: str) -> None:
        from meltr.data.formats import READERS

        if self.world:
            raise ConfigError(f"{source}: fields 'world' and 'data' exclude each other: a run reads one dataset")
        missing = [key for key in ("format", "root") if key not in self.data]
        if missing:
            raise ConfigError(f"{source}: field 'data' needs {missing}, e.g. data: {{format: msrvtt, root: DIR}}")
        if self.data["format"] not in READERS:
            raise ConfigError(
                f"{source}: field 'data.format' must be one of {READERS.names()}, got {self.data['format']!r}"
                f"{did_you_mean(self.data['format'], READERS.names())}"
            )
        if self.data.get("tokenizer", "wordpiece") not in ("wordpiece", "world"):
            raise ConfigError(
                f"{source}: field 'data.tokenizer' must be wordpiece or world, got {self.data['tokenizer']!r}"
            )

    def world_config(self, source: str = "config"):
        """The :class:`~meltr.data.WorldConfig` of this recipe (no pretrain split: fine-tuning never reads it)."""
        from meltr.data import WorldConfig

        values = {"n_pretrain": 0, **self.world}
        check_options(values, WorldConfig, "world", source, owner="WorldConfig")
        try:
            return WorldConfig(**values)
        except (TypeError, ValueError) as error:
            raise ConfigError(f"{source}: field 'world': {error}") from None

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "config") -> FinetuneConfig:
        """Build and check a config from plain values (a recipe's mapping; ``gamma`` read as ``reg_weight``)."""
        return config_from_dict(cls, _resolve_aliases(values, source), source)

    @classmethod
    def load(cls, path: str | Path, overrides: list[str] | None = None) -> FinetuneConfig:
        """Read a YAML recipe and apply ``key=value`` overrides (``key.sub=value`` sets a field of a dict)."""
        values = _resolve_aliases(read_recipe(path), str(path))
        apply_overrides(values, [_alias_override(item) for item in overrides or []])
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
    "replay_storage",
    "replay_in_checkpoint",
    "clip_norm",
    "on_nonfinite",
    "hypergrad_scope",
    "fd_scale",
    "track_sensitivity",
    "meta_train_batch",
    "check_finite_every",
    "cache_scope_inputs",
    "scope_cosine_every",
    "precision",
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
                raise ConfigError(f"{source}: give {name!r} or its alias {alias!r}, not both")
            values[name] = values.pop(alias)
    return values


def _alias_override(item: str) -> str:
    """``gamma=0.2`` -> ``reg_weight=0.2`` (an override by an older name sets the field)."""
    key, sep, raw = item.partition("=")
    head, dot, rest = key.strip().partition(".")
    return f"{ALIASES.get(head, head)}{dot}{rest}{sep}{raw}" if sep else item


# -- building the pieces -----------------------------------------------------------------------------------------
def build_world(config: FinetuneConfig, progress: bool = False):
    """The run's data: the world of ``config.world`` (``progress``: a bar while it is generated), or the dataset on
    disk of ``config.data``."""
    from meltr.data import make_world

    if config.data:
        return build_corpus(config.data)

    return make_world(config.world_config(), progress=progress)


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


def starting_point(config: FinetuneConfig) -> dict[str, Any]:
    """What a run of ``config`` starts from beyond its recipe (:func:`meltr.training.backbones.starting_point`; for
    transformers towers, :func:`meltr.training.backbones.hf_starting_point`)."""
    if isinstance(config.backbone, dict):
        return hf_starting_point(config.backbone)
    return backbone_starting_point(config.checkpoint, config.backbone, config.size)


def build_backbone_for(config: FinetuneConfig, world, unsafe: bool = False) -> torch.nn.Module:
    """The backbone ``config`` starts from, for ``world``'s vocabulary and frames."""
    special = getattr(world.tokenizer, "special_ids", None)
    if isinstance(config.backbone, dict):
        return hf_backbone_for(
            config.backbone,
            vocab_size=world.tokenizer.vocab_size,
            image_size=world.config.image_size,
            frames=world.config.n_frames,
            special_tokens=special,
            seed=config.seed,
        )
    shape: dict[str, Any] = {"image_size": world.config.image_size}
    if special is not None and "special_tokens" not in config.backbone_options:
        shape["special_tokens"] = special  # a real-text tokenizer's [CLS], [SEP], [MASK] ids
    return backbone_for(
        config.backbone,
        config.checkpoint,
        vocab_size=world.tokenizer.vocab_size,
        size=config.size,
        options=config.backbone_options,
        shape=shape,
        unsafe=unsafe,
    )


def zero_shot(config: FinetuneConfig, world=None, unsafe: bool = False, progress: bool = False) -> dict[str, float]:
    """The recipe's model on its test split without any fine-tuning: the row every fine-tuned run must beat
    (``progress``: a bar while scoring)."""
    config.validate()
    world = world if world is not None else build_world(config)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        backbone = build_backbone_for(config, world, unsafe=unsafe)
        model = build_task(config.task, backbone, config.backbone_name, **config.task_options)
    return model.evaluate(world, "test", config.eval_batch_size, max_clips=config.eval_clips, progress=progress)


@dataclass
class FinetuneResult:
    run_dir: Path
    test: dict[str, float]
    best_epoch: int
    seconds: float
    epochs: list[dict[str, Any]]
    test_last: dict[str, float] | None = None
    primary_task: str = ""


@dataclass
class FinetuneRun:
    """Everything :func:`setup` builds and :func:`train` / :func:`evaluate` / :func:`save` use."""

    config: FinetuneConfig
    directory: RunDirectory
    world: Any
    model: Any
    combiner: Any
    optimizer: torch.optim.Optimizer
    learner: AuxiliaryLearner
    metrics: MetricLogger
    label: dict[str, Any]
    scheduler: torch.optim.lr_scheduler.LambdaLR
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    steps: list[dict[str, Any]] = field(default_factory=list)
    epochs: list[dict[str, Any]] = field(default_factory=list)
    validations: list[dict[str, Any]] = field(default_factory=list)
    start_epoch: int = 0
    best_score: float = -math.inf
    best_epoch: int = -1
    elapsed_before: float = 0.0
    started: float = field(default_factory=time.perf_counter)

    @property
    def data(self) -> Any:
        """The world as evaluation reads it: its batches on the run's device."""
        return self.world if self.device.type == "cpu" else _OnDevice(self.world, self.device)

    @property
    def seconds(self) -> float:
        if self.start_epoch >= self.config.epochs:  # nothing was trained by this process
            return self.elapsed_before
        return self.elapsed_before + time.perf_counter() - self.started


def setup(
    config: FinetuneConfig,
    directory: RunDirectory,
    world=None,
    unsafe: bool = False,
    loggers: tuple[MetricLogger, ...] = (),
) -> FinetuneRun:
    """Build the data, the task model, the combiner, the optimisers and the learner; resume from ``last.pt``.

    Args:
        config: the recipe (validated).
        directory: the claimed run directory.
        world: prebuilt data (None: build the recipe's world or read its dataset).
        unsafe: read checkpoints that need unpickling (see :func:`meltr.training.checkpoint.load_checkpoint`).
        loggers: metric loggers besides the run directory's CSV files.

    Raises:
        ValueError: a piece cannot be built from the config, or ``last.pt`` does not fit the model.
    """
    started = time.perf_counter()
    if config.threads:
        torch.set_num_threads(config.threads)
    world = world if world is not None else build_world(config)
    torch.manual_seed(config.seed)
    backbone = build_backbone_for(config, world, unsafe=unsafe)
    task_options = dict(config.task_options)
    if config.task == "qa" and getattr(world, "answers", ()):
        task_options.setdefault("num_answers", len(world.answers))  # the dataset's answer vocabulary
    try:
        model = build_task(config.task, backbone, config.backbone_name, **task_options)
        combiner = build_combiner(config.combiner, model.tasks, model.primary_task, **config.combiner_options)
    except (TypeError, ValueError, KeyError) as error:
        raise ConfigError(f"config: {' '.join(str(error).split())}") from None
    directory.update_info(primary_task=model.primary_task, tasks=list(model.tasks), metric=model.metric)
    device = resolve_device(config.device)
    model.to(device)
    combiner.to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    total_steps = optimizer_steps_per_epoch(config, world) * config.epochs
    factor = partial(schedule_factor, config.lr_schedule, warmup_steps=config.warmup_steps, total_steps=total_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
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
        grad_scaler=torch.amp.GradScaler(device.type) if config.precision == "fp16" else None,
        **{name: getattr(config, name) for name in LEARNER_FIELDS},
    )
    label = checkpoint_label("finetune-state", config.backbone_name, config.size, config.task)
    run = FinetuneRun(
        config,
        directory,
        world,
        model,
        combiner,
        optimizer,
        learner,
        None,
        label,
        scheduler,
        device,
        started=started,  # type: ignore[arg-type]
    )
    last = directory.file("last.pt")
    if last.exists():
        state = load_checkpoint(last, unsafe=unsafe)
        check_checkpoint(state, last, "finetune-state", backbone=config.backbone_name, task=config.task)
        try:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            learner.load_state_dict(state["learner"])
            if "scheduler" in state:  # states written before the schedule existed ran at a constant lr
                scheduler.load_state_dict(state["scheduler"])
            if learner.grad_scaler is not None and state.get("grad_scaler"):
                learner.grad_scaler.load_state_dict(state["grad_scaler"])
        except (RuntimeError, ValueError, KeyError) as error:
            raise ValueError(
                f"{last}: does not fit this run's model ({str(error).splitlines()[0]}); remove it to start over"
            ) from None
        torch.set_rng_state(state["rng"])
        if device.type == "cuda" and state.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(state["cuda_rng"], device)
        run.steps, run.epochs = state["steps"], state["epochs"]
        run.validations = state.get("validations", [])  # states written before val_every existed had none
        run.start_epoch, run.best_score, run.best_epoch = state["epoch"] + 1, state["best_score"], state["best_epoch"]
        run.elapsed_before = state["seconds"]
        logger.info("resumed %s after epoch %d", directory.path, state["epoch"])
    if getattr(world, "provenance", None):
        # real data has no meta split: where it came from (e.g. a seeded share of train, its ids) is recorded
        directory.write_json("data.json", world.provenance)
    run.metrics = MetricLoggers(
        CSVLogger(directory.path, {"steps": run.steps, "epochs": run.epochs, "validation": run.validations}),
        LoggingLogger(),
        *loggers,
    )
    return run


def train(run: FinetuneRun, progress: bool = True) -> None:
    """The remaining epochs: steps, validation on the meta split, ``best.pt`` and ``last.pt`` after each epoch."""
    config, model, learner, directory = run.config, run.model, run.learner, run.directory
    # micro-batches of each epoch: a partial group of `accumulate` at its end is dropped, as drop_last drops a partial
    # batch, so that every optimiser step sees accumulate x batch_size samples and no group spans two epochs
    per_epoch = optimizer_steps_per_epoch(config, run.world) * config.accumulate
    bar = tqdm(
        total=per_epoch * config.epochs,
        initial=per_epoch * run.start_epoch,
        desc=config.name,
        disable=None if progress else True,  # None: only on a terminal
        leave=False,
    )
    # a resumed run continues the clock from its last validation (every saved epoch ends with one)
    train_seconds = run.validations[-1]["train_seconds"] if run.validations else 0.0
    try:
        for epoch in range(run.start_epoch, config.epochs):
            options = model.loader_options("train")
            loader = run.world.loader(
                "train", config.batch_size, seed=config.seed, epoch=epoch, drop_last=True, **options
            )
            epoch_rows = []
            taken_in_epoch = 0  # optimiser steps of this epoch: periodic validation restarts with every epoch
            for index, batch in enumerate(itertools.islice(loader, per_epoch)):
                taken = learner.inner_steps
                lr = run.scheduler.get_last_lr()[0]
                tick = time.perf_counter()
                stats = learner.step(to_device(batch, run.device) if run.device.type != "cpu" else batch)
                if learner.inner_steps > taken:  # the schedule counts optimiser steps taken
                    run.scheduler.step()
                train_seconds += time.perf_counter() - tick
                row = {"epoch": epoch, **stats.as_dict(), "lr": lr}
                run.metrics.log("steps", row)
                run.steps.append(row)
                epoch_rows.append(row)
                bar.update(1)
                if not stats.skipped:
                    bar.set_postfix(loss=f"{stats.losses[model.primary_task]:.3f}")
                taken_in_epoch += learner.inner_steps - taken
                periodic = config.val_every and learner.inner_steps > taken and taken_in_epoch % config.val_every == 0
                if periodic and index < per_epoch - 1:  # the epoch's last step is validated below anyway
                    # evaluation draws no random numbers today; forking keeps the run the one without val_every
                    # even if an evaluation ever does
                    with torch.random.fork_rng(devices=[]):
                        validation = model.evaluate(
                            run.data, "meta", config.eval_batch_size, max_clips=config.val_clips
                        )
                    _log_validation(run, epoch, learner.inner_steps, train_seconds, validation)
            validation = model.evaluate(run.data, "meta", config.eval_batch_size, max_clips=config.val_clips)
            _log_validation(run, epoch, learner.inner_steps, train_seconds, validation)
            summary = {"epoch": epoch, **_means(epoch_rows), **{f"val/{k}": v for k, v in validation.items()}}
            run.metrics.log("epochs", summary)
            run.epochs.append(summary)
            score = validation[model.metric]
            if score > run.best_score or run.best_epoch < 0:
                run.best_score, run.best_epoch = score, epoch
                best = {"model": model.state_dict(), "combiner": run.combiner.state_dict(), "epoch": epoch}
                directory.save("best.pt", {"meltr": {**run.label, "kind": "finetune"}, **best})
            directory.save(
                "last.pt",
                {
                    "meltr": run.label,
                    "model": model.state_dict(),
                    "optimizer": run.optimizer.state_dict(),
                    "learner": learner.state_dict(),
                    "scheduler": run.scheduler.state_dict(),
                    "grad_scaler": None if learner.grad_scaler is None else learner.grad_scaler.state_dict(),
                    "rng": torch.get_rng_state(),
                    "cuda_rng": torch.cuda.get_rng_state(run.device) if run.device.type == "cuda" else None,
                    "steps": run.steps,
                    "epochs": run.epochs,
                    "validations": run.validations,
                    "epoch": epoch,
                    "best_score": run.best_score,
                    "best_epoch": run.best_epoch,
                    "seconds": run.seconds,
                },
                resumable=True,
            )
            run.metrics.flush()
            logger.info(
                "epoch %d: val %s = %.2f (best %.2f at epoch %d)",
                epoch,
                model.metric,
                score,
                run.best_score,
                run.best_epoch,
            )
    finally:
        bar.close()


def _log_validation(
    run: FinetuneRun, epoch: int, step: int, train_seconds: float, validation: dict[str, float]
) -> None:
    """One row of ``validation.csv``: where in training (epoch, optimiser step, training seconds) and the metrics."""
    row = {
        "epoch": epoch,
        "step": step,
        "train_seconds": train_seconds,
        **{f"val/{k}": v for k, v in validation.items()},
    }
    run.metrics.log("validation", row)
    run.validations.append(row)


def evaluate(run: FinetuneRun, unsafe: bool = False) -> tuple[dict[str, float], dict[str, float]]:
    """Test metrics of the best checkpoint (loaded into the run's model and combiner) and of the last epoch.

    The last epoch's are reported beside the selected epoch's, so that a noisy selection shows.
    """
    config = run.config
    last_epoch = config.epochs - 1
    test_last = None
    if run.best_epoch != last_epoch:
        test_last = run.model.evaluate(run.data, "test", config.eval_batch_size, max_clips=config.eval_clips)
    path = run.directory.file("best.pt")
    best = load_checkpoint(path, unsafe=unsafe)
    check_checkpoint(best, path, "finetune", backbone=config.backbone_name, task=config.task)
    run.model.load_state_dict(best["model"])
    run.combiner.load_state_dict(best["combiner"])
    test = run.model.evaluate(run.data, "test", config.eval_batch_size, max_clips=config.eval_clips)
    return test, test if test_last is None else test_last


def save(run: FinetuneRun, test: dict[str, float], test_last: dict[str, float]) -> FinetuneResult:
    """``results.json`` (test metrics, best and last epoch, primary task, wall time) and the plots."""
    seconds = run.seconds
    results = {
        "test": test,
        "best_epoch": run.best_epoch,
        "test_last": test_last,
        "last_epoch": run.config.epochs - 1,
        "seconds": seconds,
        "metric": run.model.metric,
        "primary_task": run.model.primary_task,
    }
    run.directory.write_json("results.json", results)
    run.metrics.close()
    from meltr.analysis.plots import plot_run

    plot_run(run.directory.path, run.steps, run.model.tasks)
    return FinetuneResult(
        run.directory.path, test, run.best_epoch, seconds, run.epochs, test_last, run.model.primary_task
    )


def finetune(
    config: FinetuneConfig,
    world=None,
    progress: bool = True,
    unsafe: bool = False,
    loggers: tuple[MetricLogger, ...] = (),
) -> FinetuneResult:
    """Fine-tune, validate every epoch, keep the best checkpoint, test it; resume if the run directory has a state.

    Args:
        config: the recipe.
        world: prebuilt data (None: build the recipe's).
        progress: show a progress bar (on stderr, if it is a terminal).
        unsafe: read checkpoints that need unpickling (only files you trust; see
            :func:`meltr.training.checkpoint.load_checkpoint`).
        loggers: metric loggers besides the run directory's CSV files.

    Raises:
        ConfigError: a bad recipe (nothing is written).
        RunDirectoryError: the run directory is in use by another process or holds another run (nothing in it is
            touched).

    The run uses PyTorch's deterministic algorithms (the setting is restored afterwards, as is torch's thread count,
    which the ``threads`` field sets): with more than one CPU
    thread some kernels otherwise sum in a varying order, and the rounding differences grow over the run (two runs
    of one MELTR recipe differed by up to 2.5 R@1 on the demo). This holds for ``precision`` bf16 / fp16 too: autocast
    only changes which dtype each kernel runs in, so two runs of one recipe still agree bit for bit (on CUDA,
    ``CUBLAS_WORKSPACE_CONFIG`` is set to ``:4096:8`` unless given, as deterministic cuBLAS needs).
    """
    config.validate()
    directory = RunDirectory(config.run_dir, RECIPE, config.as_dict(), starting_point(config))
    if resolve_device(config.device).type == "cuda":
        # cuBLAS is deterministic only with a fixed workspace; torch raises under deterministic algorithms otherwise
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    deterministic, threads = torch.are_deterministic_algorithms_enabled(), torch.get_num_threads()
    torch.use_deterministic_algorithms(True)
    try:
        with directory:
            run = setup(config, directory, world, unsafe=unsafe, loggers=loggers)
            train(run, progress)
            test, test_last = evaluate(run, unsafe=unsafe)
            return save(run, test, test_last)
    finally:
        # the caller's settings come back: a `threads` field must not slow down whatever runs next in the process
        torch.use_deterministic_algorithms(deterministic)
        torch.set_num_threads(threads)


def resolve_device(device: str) -> torch.device:
    """``auto`` is ``cuda`` when torch sees a CUDA device, else ``cpu``; ``cpu`` and ``cuda`` are themselves."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(device)


def optimizer_steps_per_epoch(config: FinetuneConfig, world) -> int:
    """Optimiser steps of one epoch: ``len(train) // batch_size`` micro-batches in groups of ``accumulate``."""
    return len(world.splits["train"]) // config.batch_size // config.accumulate


class _OnDevice:
    """The world as evaluation reads it, with every batch moved to ``device``."""

    def __init__(self, world, device: torch.device) -> None:
        self.world, self.device = world, device

    def loader(self, *args: Any, **kwargs: Any):
        return (to_device(batch, self.device) for batch in self.world.loader(*args, **kwargs))

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
