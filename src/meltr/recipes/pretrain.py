"""Pre-training a reference backbone on the synthetic world with the sum of its pretext losses.

The foundation models MELTR fine-tunes were pre-trained by minimising a plain sum of their pretext losses
(Eq. (1) of MELTR for UniVL; likewise Violet and All-in-one). This recipe does the same for the reference
backbones of :mod:`meltr.models` on the world's ``pretrain`` split, so that fine-tuning starts from a backbone
that has learned something; :func:`meltr.training.checkpoint.save_pretrained` saves the result.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from meltr.config import help_field
from meltr.models import BACKBONES, build_backbone
from meltr.training.backbones import backbone_for, check_backbone_options
from meltr.training.checkpoint import atomic_save, check_checkpoint, checkpoint_label, load_checkpoint
from meltr.training.schedule import learning_rate_factor

logger = logging.getLogger(__name__)


@dataclass
class PretrainConfig:
    """What :func:`pretrain` does."""

    backbone: str = help_field("Registered backbone name (meltr.models.BACKBONES).", "univl")
    size: str = help_field("Backbone preset: default or tiny.", "default")
    steps: int = help_field("Optimiser steps.", 2000)
    batch_size: int = help_field("Clips per batch (the last incomplete batch of an epoch is dropped).", 32)
    lr: float = help_field("Peak learning rate of AdamW.", 3e-4)
    weight_decay: float = help_field("AdamW weight decay.", 0.01)
    warmup_steps: int = help_field("Steps of linear warm-up before the cosine decay to lr / 10.", 100)
    grad_clip: float = help_field("Clip the gradient to this norm (0 = no clipping).", 1.0)
    seed: int = help_field("Seed of the initialisation, the batch order and the masks.", 0)
    log_every: int = help_field("Log the losses every this many steps (0 = never).", 50)
    overrides: dict[str, Any] = dataclasses.field(
        default_factory=dict, metadata={"help": "Backbone config fields to change, e.g. {'dim': 128}."}
    )
    tasks: tuple[str, ...] = help_field(
        "Pretext losses to sum and train on (empty: all of the backbone's, as the papers do). The others are "
        "still computed and logged, which is how an ablation shows what a loss learns alone.",
        factory=tuple,
    )

    def __post_init__(self) -> None:
        if self.backbone not in BACKBONES:
            raise KeyError(f"unknown backbone {self.backbone!r}; choose one of: {', '.join(BACKBONES.names())}")
        for name in ("steps", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"PretrainConfig.{name} must be at least 1, got {getattr(self, name)}")
        if self.lr <= 0 or self.warmup_steps < 0 or self.grad_clip < 0:
            raise ValueError("PretrainConfig: lr must be positive, warmup_steps and grad_clip non-negative")
        check_backbone_options(self.backbone, self.overrides, "PretrainConfig")
        self.tasks = tuple(self.tasks)
        if self.tasks:
            with torch.random.fork_rng(devices=[]):  # building a model draws weights; leave the caller's RNG be
                known = build_backbone(self.backbone, "tiny", vocab_size=64, **self.overrides).tasks
            unknown = [task for task in self.tasks if task not in known]
            if unknown or len(set(self.tasks)) != len(self.tasks):
                raise ValueError(
                    f"PretrainConfig.tasks: {self.tasks} are not distinct pretext losses of {self.backbone}; "
                    f"its losses are: {', '.join(known)}"
                )


@dataclass
class PretrainResult:
    """The pre-trained backbone and its loss curve (one record per logged step)."""

    model: nn.Module
    history: list[dict[str, float]]


def initial_backbone(config: PretrainConfig, world) -> nn.Module:
    """The backbone :func:`pretrain` starts from: ``config``'s backbone for ``world``'s tokenizer and frames,
    initialised under ``torch.manual_seed(config.seed)`` (which reseeds the global generator)."""
    torch.manual_seed(config.seed)
    shape = {"image_size": world.config.image_size, "max_frames": max(64, world.config.n_frames)}
    return backbone_for(
        config.backbone,
        "none",
        vocab_size=world.tokenizer.vocab_size,
        size=config.size,
        options=config.overrides,
        shape=shape,
        source="PretrainConfig",
    )


def pretrain(
    config: PretrainConfig,
    world,
    checkpoint: str | Path | None = None,
    checkpoint_every: int = 100,
    progress: bool = False,
    unsafe: bool = False,
) -> PretrainResult:
    """Minimise the sum of the backbone's pretext losses (batch means; ``config.tasks`` of them if given) on
    ``world``'s pretrain split.

    Args:
        config: the recipe.
        world: a :class:`meltr.data.World`; its tokenizer fixes ``vocab_size``, its config the frame size.
        checkpoint: a file to save the full training state to every ``checkpoint_every`` steps (atomically) and
            to resume from when it exists: a resumed run continues exactly where the saved one was.
        checkpoint_every: steps between checkpoints.
        progress: show a progress bar.
        unsafe: read ``checkpoint`` even if it needs unpickling (see
            :func:`~meltr.training.checkpoint.load_checkpoint`).

    Returns:
        the backbone (in eval mode) and the logged history ``{"step", "lr", "total", <task>...}``.
    """
    if len(world["pretrain"]) < config.batch_size:
        raise ValueError(
            f"the pretrain split has {len(world['pretrain'])} clips, fewer than batch_size={config.batch_size}"
        )
    model = initial_backbone(config, world)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: learning_rate_factor(step, config.warmup_steps, config.steps)
    )
    model.train()
    history: list[dict[str, float]] = []
    step, epoch, position, started = 0, 0, 0, time.perf_counter()
    if checkpoint is not None and Path(checkpoint).exists():
        state = load_checkpoint(checkpoint, unsafe=unsafe)
        check_checkpoint(state, checkpoint, "pretrain-state", backbone=config.backbone, size=config.size)
        if state["config"] != dataclasses.asdict(config):
            raise ValueError(f"{checkpoint}: saved by a different pre-training config; remove it or change --out")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        torch.set_rng_state(state["rng"])
        history, step, epoch, position = state["history"], state["step"], state["epoch"], state["position"]
        logger.info("resumed from %s at step %d", checkpoint, step)

    def save_state() -> None:
        atomic_save(
            {
                "meltr": checkpoint_label("pretrain-state", config.backbone, config.size),
                "config": dataclasses.asdict(config),
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "schedule": schedule.state_dict(),
                "rng": torch.get_rng_state(),
                "history": history,
                "step": step,
                "epoch": epoch,
                "position": position,
            },
            checkpoint,
        )

    bar = tqdm(total=config.steps, initial=step, desc=f"pretrain {config.backbone}", disable=not progress)
    while step < config.steps:
        loader = world.loader("pretrain", config.batch_size, seed=config.seed, epoch=epoch, drop_last=True)
        for index, batch in enumerate(loader):
            if index < position:
                continue  # resuming inside an epoch: these batches were seen before the checkpoint
            losses = {task: loss.mean() for task, loss in model(batch).items()}
            total = sum(losses[task] for task in config.tasks or losses)
            if not torch.isfinite(total):
                bad = [t for t, loss in losses.items() if not torch.isfinite(loss)]
                raise FloatingPointError(f"step {step}: non-finite pretext loss(es) {bad}")
            optimizer.zero_grad(set_to_none=True)
            total.backward()
            if config.grad_clip > 0:
                nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            optimizer.step()
            schedule.step()
            step += 1
            position = index + 1
            bar.update(1)
            bar.set_postfix(total=f"{total.item():.3f}")
            if config.log_every and (step % config.log_every == 0 or step == config.steps):
                record = {"step": step, "lr": schedule.get_last_lr()[0], "total": total.item()}
                record.update({task: loss.item() for task, loss in losses.items()})
                history.append(record)
                parts = f"lr={record['lr']:.2e} " + " ".join(
                    f"{task}={value:.3f}" for task, value in record.items() if task not in ("step", "lr")
                )
                logger.info("step %d/%d (%.0fs) %s", step, config.steps, time.perf_counter() - started, parts)
            if checkpoint is not None and (step % checkpoint_every == 0 or step == config.steps):
                save_state()
            if step == config.steps:
                break
        else:
            epoch, position = epoch + 1, 0
    bar.close()
    return PretrainResult(model.eval(), history)


@torch.no_grad()
def held_out_losses(model: nn.Module, world, split: str = "test", batch_size: int = 32) -> dict[str, float]:
    """Mean pretext losses of ``model`` (put in eval mode) over the whole batches of ``world``'s ``split``.

    The masks and negatives come from a generator seeded 0, so two models (before and after pre-training, or
    two recipes) are measured on the same masks and the same negatives.
    """
    model.eval()
    generator = torch.Generator().manual_seed(0)
    batches = list(world.loader(split, batch_size, shuffle=False, drop_last=True))
    if not batches:
        raise ValueError(f"the {split} split has {len(world[split])} clips, fewer than batch_size={batch_size}")
    totals: dict[str, float] = {}
    for batch in batches:
        for task, loss in model(batch, generator=generator).items():
            totals[task] = totals.get(task, 0.0) + loss.mean().item() / len(batches)
    return totals


__all__ = [
    "PretrainConfig",
    "PretrainResult",
    "held_out_losses",
    "initial_backbone",
    "pretrain",
]
