"""The experiment of "Scaling Multimodal Pre-Training via Cross-Modality Gradient Harmonization" (Wu et al.,
NeurIPS 2022) on the synthetic world.

The VATT-style backbone (:mod:`meltr.models.vatt`) is pre-trained on the world's pretrain split, a known fraction of
whose video-text pairs is misaligned (``WorldConfig.misaligned_fraction``; the world records which), once per row of
the paper's table and seed. The rows differ only in the update direction built from the per-task gradients
``g_va = grad CMA_va`` and ``g_vt = grad CMA_vt`` of each batch:

========  =======================================================================================================
row       update direction
========  =======================================================================================================
baseline  ``g_va + g_vt`` (VATT)
rw_va     ``r g_va + g_vt``: the re-weighting control of the paper's table, CMA_va up-weighted by ``reweight``
rw_vt     ``g_va + r g_vt``
gr        GR, Algorithm 1 (:class:`~meltr.surgery.Realign`): ``g_va, g_vt`` projected on each other's normal plane
          when they conflict, then summed
cl        CL, Algorithm 2 per sample (:class:`~meltr.surgery.Curriculum`): samples whose alignment
          ``cos(g_va,i, g_vt,i)`` is at most ``gamma(step)`` are left out; ``gamma`` rises over training
both      CL then GR on what CL kept (:class:`~meltr.surgery.RealignCurriculum`)
========  =======================================================================================================

The re-weighting rows are the paper's control for "is it just a different balance of the two losses?": the same
losses with one of them weighted up, directions untouched. The paper does not print its factor; ``reweight`` (2 by
default) is ours.

Each pre-trained backbone is evaluated as in the paper's table, on clean splits: video classification and audio
classification by a linear probe (multinomial logistic regression on the frozen pooled features of the shared
transformer, fit on the train split's event labels, scored on the test split; Top-1 / Top-5), and zero-shot
text-to-video retrieval on the test split (caption 0 of each clip queries every clip; R@1/5/10 and the median rank,
:func:`meltr.metrics.retrieval_metrics`). The curriculum's dropped samples are scored against the world's record of
misaligned pairs (:func:`meltr.metrics.drops.drop_precision_recall`), and ``cos(g_va, g_vt)`` is recorded at every step.

Cost. The per-sample curriculum needs per-sample gradients; with in-batch negatives each sample's loss depends on
the whole batch, so the exact per-sample gradient over every parameter costs one backward pass through the whole
batch per sample and task (``2B`` passes a step, about 15-25x a plain step at ``B = 32`` on a CPU). The experiment
therefore takes the per-sample gradients that CL *reads* over a parameter scope (``alignment_scope``, by default the
projection heads, where the two losses meet on the video's embedding), while the batch gradients, GR and every
*update* use all parameters. ``alignment_scope=()`` gives the exact, every-parameter per-sample gradients.

Choices made for the tiny scale (:data:`DEFAULT_WORLD`, :data:`DEFAULT_MODEL`) and CL's threshold: in a pilot run
with nothing dropped, ``cos(g_va,i, g_vt,i)`` over the heads had its 5% quantile near -0.15 to -0.2 and its 25%
quantile near -0.05 in the second half of training, so ``gamma`` rises linearly from -0.15 to -0.05: next to nothing
dropped at first, about a quarter of the samples by the end by the pilot's distribution. The curriculum changes the
distribution it thresholds, so the share it really drops is measured and reported (``drop_rate``).
"""

from __future__ import annotations

import csv
import dataclasses
import fnmatch
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from tqdm import tqdm

from meltr.analysis.probe import fit_linear_probe, topk_accuracy
from meltr.combine import FixedWeights
from meltr.config import help_field
from meltr.data import EVENT_CLASSES, World, WorldConfig, WorldSplit, make_world
from meltr.metrics import retrieval_metrics
from meltr.metrics.drops import alignment_auc, clip_drop_scores, drop_precision_recall
from meltr.models import SIZES, build_backbone
from meltr.models.vatt import VATT_TASKS, VattConfig
from meltr.surgery.base import GradientSurgery, PlainSum, TaskGradients, cosine_matrix
from meltr.surgery.curriculum import MEASURES, SCHEDULES, Curriculum, GammaSchedule, RealignCurriculum
from meltr.surgery.driver import ParameterLayout, task_gradients, write_gradients
from meltr.surgery.realign import Realign
from meltr.training.run_directory import RunDirectory
from meltr.training.schedule import learning_rate_factor

logger = logging.getLogger(__name__)

ROWS: dict[str, str] = {
    "baseline": "VATT",
    "rw_va": "+ RW (VA)",
    "rw_vt": "+ RW (VT)",
    "gr": "+ GR",
    "cl": "+ CL",
    "both": "+ Both",
}
"""Row name -> its label in the paper's table, in the table's order."""

INIT_ROW = "init"
"""The control row (not in the paper): the same backbones evaluated at their initialisation, without pre-training."""
LABELS: dict[str, str] = {INIT_ROW: "no pre-training (init)", **ROWS}

METRICS: dict[str, str] = {
    "video_top1": "Video cls Top1 ↑",
    "video_top5": "Video cls Top5 ↑",
    "t2v_mdr": "T2V MdR ↓",
    "t2v_r1": "T2V R@1 ↑",
    "t2v_r5": "T2V R@5 ↑",
    "t2v_r10": "T2V R@10 ↑",
    "audio_top1": "Audio cls Top1 ↑",
    "audio_top5": "Audio cls Top5 ↑",
}
"""The columns of the table, in the paper's order (video classification, retrieval, audio classification)."""

DROP_METRICS: tuple[str, ...] = (
    "drop_rate",
    "drop_precision",
    "drop_recall",
    "clip_precision",
    "clip_recall",
    "indicator_auc",
)

HEADS_SCOPE: tuple[str, ...] = ("video_to_va.*", "audio_to_va.*", "va_to_vt.*", "text_to_vt.*")

DEFAULT_MODEL: dict[str, Any] = {
    "patch_size": 8,
    "tubelet_frames": 4,
    "audio_patch": 64,
    "drop_token": 0.0,
    "temperature": 0.1,
}
"""Backbone overrides of the experiment (on the ``tiny`` preset): 8x8x4 tubelets of the 16x16 frames (8 video tokens a
clip), 64-sample audio windows, no DropToken, and a temperature at which the tiny model does not collapse (0.07 and
lr 3e-3 collapsed every embedding to one vector in pilot runs)."""

DEFAULT_WORLD: dict[str, Any] = {
    "image_size": 16,
    "max_objects": 1,
    "background_texture": 0.0,
    "pixel_noise": 0.02,
    "audio_noise": 0.2,
}
"""World overrides of the experiment: small frames with the subject alone and little noise, so that the tiny backbone
learns both alignments in a few hundred steps (on the default world CMA_va stayed at ``log B`` for 800 steps)."""


@dataclass
class HarmonizeConfig:
    """What :func:`run_harmonize` does (every field is checked; a bad value is a ``ValueError`` naming it)."""

    seeds: tuple[int, ...] = help_field(
        "Seeds of the runs (initialisation, batch order, caption bags, DropToken); one run per row and seed.", (0, 1, 2)
    )
    rows: tuple[str, ...] = help_field(f"Rows of the table to run, among {', '.join(ROWS)}.", tuple(ROWS))
    steps: int = help_field("Optimiser steps of each pre-training run.", 300)
    batch_size: int = help_field("Clips per batch (in-batch negatives of both NCE losses).", 32)
    lr: float = help_field("Peak learning rate of AdamW (linear warm-up, cosine decay to lr / 10).", 1e-3)
    weight_decay: float = help_field("AdamW weight decay.", 0.01)
    warmup_steps: int = help_field("Steps of linear warm-up.", 30)
    grad_clip: float = help_field("Clip the update direction to this norm before the optimiser step (0 = off).", 1.0)
    size: str = help_field("Preset of the VATT backbone: tiny or default.", "tiny")
    model: dict[str, Any] = help_field(
        "VattConfig fields to change on the preset (image_size follows the world).", factory=lambda: dict(DEFAULT_MODEL)
    )
    bag_size: int = help_field("Captions in MIL-NCE's positive bag, drawn from the clip's served captions.", 3)
    reweight: float = help_field("Weight of the up-weighted loss in the rows rw_va and rw_vt (the other has 1).", 2.0)
    gamma_schedule: str = help_field(f"Kind of CL's threshold schedule: {', '.join(SCHEDULES)}.", "linear")
    gamma_start: float = help_field("CL's threshold gamma at step 0 (on the scale of `measure`).", -0.15)
    gamma_end: float = help_field("CL's threshold gamma at the last step.", -0.05)
    measure: str = help_field("What CL compares with gamma: 'cosine' or 'dot' of the per-sample gradients.", "cosine")
    alignment_scope: tuple[str, ...] = help_field(
        "Parameter-name patterns over which CL's per-sample gradients are taken (() = every parameter, exact "
        "but ~B times the cost of a step); updates always use every parameter.",
        HEADS_SCOPE,
    )
    world_seed: int = help_field("Seed of the world (the same world for every run).", 0)
    misaligned_fraction: float = help_field("Fraction of the pretrain clips whose text is another clip's.", 0.3)
    n_pretrain: int = help_field("Clips of the pretrain split (the misaligned one, pre-training).", 2000)
    n_probe: int = help_field("Clips of the train split, on which the linear probes are fit (clean).", 600)
    n_test: int = help_field("Clips of the test split: probe accuracy and retrieval (clean).", 500)
    world: dict[str, Any] = help_field(
        "Other WorldConfig fields of the experiment's world.", factory=lambda: dict(DEFAULT_WORLD)
    )
    probe_l2: float = help_field("L2 penalty of the linear probes (on standardised features).", 1e-3)
    probe_iterations: int = help_field("L-BFGS iterations of a linear probe fit.", 100)
    evaluate_init: bool = help_field(
        "Also evaluate each seed's backbone at its initialisation (the row 'no pre-training'): what the probes get "
        "from the architecture and its fixed audio front-end alone.",
        True,
    )

    def __post_init__(self) -> None:
        def fail(name: str, requirement: str) -> None:
            raise ValueError(f"HarmonizeConfig.{name} {requirement}, got {getattr(self, name)!r}")

        def is_int(value: Any) -> bool:
            return isinstance(value, int) and not isinstance(value, bool)

        self.seeds = tuple(self.seeds)
        self.rows = tuple(self.rows)
        self.alignment_scope = tuple(self.alignment_scope)
        if (
            not self.seeds
            or not all(is_int(s) and s >= 0 for s in self.seeds)
            or len(set(self.seeds)) != len(self.seeds)
        ):
            fail("seeds", "must be distinct non-negative ints (at least one)")
        if not self.rows or any(r not in ROWS for r in self.rows) or len(set(self.rows)) != len(self.rows):
            fail("rows", f"must be distinct rows among {list(ROWS)} (at least one)")
        for name in ("steps", "batch_size", "bag_size", "n_pretrain", "n_probe", "n_test", "probe_iterations"):
            if not is_int(getattr(self, name)) or getattr(self, name) < 1:
                fail(name, "must be a positive int")
        if self.batch_size < 2:
            fail("batch_size", "must be at least 2 (the NCE losses need in-batch negatives)")
        for name in ("warmup_steps", "world_seed"):
            if not is_int(getattr(self, name)) or getattr(self, name) < 0:
                fail(name, "must be a non-negative int")
        for name in ("lr", "reweight"):
            if not (isinstance(getattr(self, name), int | float) and getattr(self, name) > 0):
                fail(name, "must be a positive number")
        for name in ("weight_decay", "grad_clip", "probe_l2"):
            if not (isinstance(getattr(self, name), int | float) and getattr(self, name) >= 0):
                fail(name, "must be a non-negative number")
        for name in ("gamma_start", "gamma_end"):
            if not (isinstance(getattr(self, name), int | float) and math.isfinite(getattr(self, name))):
                fail(name, "must be a finite number")
        if not 0.0 <= self.misaligned_fraction <= 1.0:
            fail("misaligned_fraction", "must be in [0, 1]")
        if self.size not in SIZES:
            fail("size", f"must be one of {list(SIZES)}")
        if self.gamma_schedule not in SCHEDULES:
            fail("gamma_schedule", f"must be one of {list(SCHEDULES)}")
        if self.gamma_schedule == "constant" and self.gamma_end != self.gamma_start:
            fail("gamma_end", "must equal gamma_start with a constant schedule")
        if self.measure not in MEASURES:
            fail("measure", f"must be one of {list(MEASURES)}")
        if not isinstance(self.evaluate_init, bool):
            fail("evaluate_init", "must be a bool")
        if not all(isinstance(p, str) and p for p in self.alignment_scope):
            fail("alignment_scope", "must be non-empty parameter-name patterns")
        model_fields = {f.name for f in dataclasses.fields(VattConfig)} - {"vocab_size"}
        if not isinstance(self.model, Mapping) or set(self.model) - model_fields:
            fail("model", f"must map VattConfig fields ({', '.join(sorted(model_fields))}) to values")
        world_fields = {f.name for f in dataclasses.fields(WorldConfig)} - {
            "seed", "n_pretrain", "n_train", "n_meta", "n_test", "misaligned_fraction", "misaligned_splits"
        }  # fmt: skip
        if not isinstance(self.world, Mapping) or set(self.world) - world_fields:
            fail("world", f"must map WorldConfig fields ({', '.join(sorted(world_fields))}) to values")

    def world_config(self) -> WorldConfig:
        """The world of the experiment: misaligned pairs in the pretrain split only; probe and test splits clean."""
        return WorldConfig(
            seed=self.world_seed,
            n_pretrain=self.n_pretrain,
            n_train=self.n_probe,
            n_meta=0,
            n_test=self.n_test,
            misaligned_fraction=self.misaligned_fraction,
            misaligned_splits=("pretrain",),
            **self.world,
        )

    def gamma(self) -> GammaSchedule:
        """CL's threshold schedule, from ``gamma_start`` at step 0 to ``gamma_end`` at the last step."""
        end = None if self.gamma_schedule == "constant" else self.gamma_end
        return GammaSchedule(self.gamma_schedule, self.gamma_start, end, steps=max(1, self.steps - 1))


def row_method(row: str, config: HarmonizeConfig) -> tuple[GradientSurgery, FixedWeights | None]:
    """The surgery method and the combiner (re-weighting) of a row of the table."""
    if row not in ROWS:
        raise ValueError(f"unknown row {row!r}; choose one of: {', '.join(ROWS)}")
    if row in ("rw_va", "rw_vt"):
        weights = [config.reweight, 1.0] if row == "rw_va" else [1.0, config.reweight]
        return PlainSum(), FixedWeights(VATT_TASKS, weights)
    if row == "gr":
        return Realign(), None
    if row in ("cl", "both"):
        method = Curriculum if row == "cl" else RealignCurriculum
        return method(config.gamma(), measure=config.measure, per_sample=True), None
    return PlainSum(), None


def scope_parameters(model: nn.Module, patterns: Sequence[str]) -> list[Tensor] | None:
    """The trainable parameters whose names match any of ``patterns`` (``None`` for no patterns: every parameter)."""
    if not patterns:
        return None
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    chosen = [p for n, p in named if any(fnmatch.fnmatchcase(n, pattern) for pattern in patterns)]
    if not chosen:
        raise ValueError(f"alignment_scope {list(patterns)} matches no parameter; names look like {named[0][0]!r}")
    return chosen


def scoped_task_gradients(
    task_losses: Mapping[str, Tensor],
    params: Sequence[Tensor],
    scope: Sequence[Tensor] | None = None,
    combiner: FixedWeights | None = None,
) -> TaskGradients:
    """The per-task gradients over ``params``, whose per-sample gradients are taken over ``scope`` only.

    Batch gradients (what GR projects and every update sums) and the restriction to kept samples (what CL updates
    with) are over ``params``; the per-sample chunks (what CL's per-sample alignments are computed from) are over
    ``scope`` (``None``: ``params``). Both come from :func:`~meltr.surgery.task_gradients`.
    """
    grads = task_gradients(task_losses, params, combiner, vectorize=False)
    if scope is None:
        return grads
    scoped = task_gradients(task_losses, scope, combiner)  # batched backward passes: cheap over a small scope
    return TaskGradients(
        grads.flat,
        grads.tasks,
        sample_chunks=scoped.sample_chunks,
        restrict=grads.restrict,
        batch_size=grads.batch_size,
        any_process=grads.any_process,
    )


def caption_bags(
    split: WorldSplit, clip_ids: Tensor, bag_size: int, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """MIL-NCE's positive bags: ``bag_size`` distinct served captions of each clip, drawn at random (cycled when a clip
    has fewer), tokenised.

    The world's captions of a clip are paraphrases of one description, the stand-in for the temporally neighbouring
    narrations of HowTo100M; a misaligned clip's bag holds the other clip's captions, as its text does.

    Returns:
        ``(ids [B, K, L], mask [B, K, L])``.
    """
    index = clip_ids.cpu().numpy()
    counts = torch.from_numpy(split.caption_count[index])
    slots = split.caption_ids.shape[1]
    scores = torch.rand(len(index), slots, generator=generator)
    scores = scores.masked_fill(torch.arange(slots) >= counts[:, None], 2.0)  # past a clip's count: never drawn
    order = scores.argsort(dim=1)
    picks = order.gather(1, torch.arange(bag_size)[None, :] % counts[:, None])
    ids = torch.from_numpy(split.caption_ids[index[:, None], picks.numpy()])
    return ids, ids != 0


@dataclass
class RunRecord:
    """One pre-training run and its evaluation.

    Attributes:
        row: the row of the table.
        seed: the run's seed.
        steps: one record per step: ``step``, ``loss_va``, ``loss_vt`` (batch means), ``cosine`` (``cos(g_va,
            g_vt)`` before surgery), ``projected``, ``updated``, ``gamma``, ``dropped_fraction``.
        samples: for the per-sample curriculum, one entry per (step, sample): ``step``, ``clip_id``, ``misaligned``
            (the world's record), ``alignment``, ``dropped``; ``None`` for the other rows.
        metrics: the evaluation (keys of :data:`METRICS`) and, for the curriculum, :data:`DROP_METRICS`.
        seconds: wall time of pre-training and evaluation.
    """

    row: str
    seed: int
    steps: list[dict[str, float]]
    samples: dict[str, np.ndarray] | None
    metrics: dict[str, float]
    seconds: float


def record_as_plain(run: RunRecord) -> dict[str, Any]:
    """``run`` as JSON-ready data (the per-sample arrays as lists with their dtype), for a run directory."""
    samples = None
    if run.samples is not None:
        samples = {k: {"dtype": str(v.dtype), "values": v.tolist()} for k, v in run.samples.items()}
    return {**dataclasses.asdict(dataclasses.replace(run, samples=None)), "samples": samples}


def record_from_plain(value: Mapping[str, Any]) -> RunRecord:
    """The :class:`RunRecord` that :func:`record_as_plain` gave (arrays rebuilt with their dtype, bit for bit)."""
    samples = value["samples"]
    if samples is not None:
        samples = {k: np.asarray(v["values"], dtype=v["dtype"]) for k, v in samples.items()}
    return RunRecord(value["row"], value["seed"], value["steps"], samples, value["metrics"], value["seconds"])


def initial_backbone(world: World, config: HarmonizeConfig, seed: int) -> nn.Module:
    """The VATT backbone every run of ``seed`` starts from (its shapes follow the world's)."""
    torch.manual_seed(seed)
    shape = {
        "image_size": world.config.image_size,
        "max_frames": max(64, world.config.n_frames),
        "max_audio_samples": max(4096, world.config.audio_samples),
    }
    return build_backbone("vatt", config.size, vocab_size=world.tokenizer.vocab_size, **{**shape, **config.model})


def pretrain_row(
    world: World,
    config: HarmonizeConfig,
    row: str,
    seed: int,
    progress: Callable[[int], None] | None = None,
) -> tuple[nn.Module, list[dict[str, float]], dict[str, np.ndarray] | None]:
    """Pre-train a VATT backbone on ``world``'s pretrain split with the update rule of ``row``.

    Deterministic under ``seed``: it seeds the initialisation, the batch order, the caption bags and DropToken.

    Returns:
        the backbone (eval mode), the per-step records and the per-sample records (see :class:`RunRecord`).
    """
    split = world["pretrain"]
    if len(split) < config.batch_size:
        raise ValueError(f"the pretrain split has {len(split)} clips, fewer than batch_size={config.batch_size}")
    model = initial_backbone(world, config, seed)
    method, combiner = row_method(row, config)
    per_sample = isinstance(method, Curriculum | RealignCurriculum)
    params = [p for p in model.parameters() if p.requires_grad]
    layout = ParameterLayout(params)
    scope = scope_parameters(model, config.alignment_scope) if per_sample else None
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: learning_rate_factor(step, config.warmup_steps, config.steps)
    )
    generator = torch.Generator().manual_seed(seed)
    misaligned = split.misaligned
    steps: list[dict[str, float]] = []
    samples: dict[str, list[np.ndarray]] = {k: [] for k in ("step", "clip_id", "misaligned", "alignment", "dropped")}
    step, epoch = 0, 0
    model.train()
    while step < config.steps:
        for batch in world.loader("pretrain", config.batch_size, seed=seed, epoch=epoch, drop_last=True):
            batch["text_bag"], batch["text_bag_mask"] = caption_bags(
                split, batch["clip_id"], config.bag_size, generator
            )
            losses = model(batch, generator=generator)
            optimizer.zero_grad(set_to_none=True)
            grads = scoped_task_gradients(losses, params, scope, combiner)
            result = method(grads, step)
            write_gradients(layout, result.direction)
            if result.updated:
                if config.grad_clip > 0:
                    nn.utils.clip_grad_norm_(params, config.grad_clip)
                optimizer.step()
            schedule.step()
            dropped = np.zeros(len(batch["clip_id"]), dtype=bool)
            if result.dropped is not None:
                dropped[result.dropped.numpy()] = True
            steps.append(
                {
                    "step": step,
                    "loss_va": float(losses["cma_va"].detach().mean()),
                    "loss_vt": float(losses["cma_vt"].detach().mean()),
                    "cosine": float(cosine_matrix(grads.gram())[0, 1]),
                    "projected": float(result.projected),
                    "updated": float(result.updated),
                    "gamma": math.nan if result.gamma is None else float(result.gamma),
                    "dropped_fraction": float(dropped.mean()),
                }
            )
            if result.sample_alignment is not None:
                clip_ids = batch["clip_id"].numpy()
                samples["step"].append(np.full(len(clip_ids), step))
                samples["clip_id"].append(clip_ids)
                samples["misaligned"].append(misaligned[clip_ids])
                samples["alignment"].append(result.sample_alignment.detach().double().numpy())
                samples["dropped"].append(dropped)
            step += 1
            if progress is not None:
                progress(1)
            if step == config.steps:
                break
        epoch += 1
    per_sample_records = {k: np.concatenate(v) for k, v in samples.items()} if samples["step"] else None
    return model.eval(), steps, per_sample_records


# ------------------------------------------------------------------------------------------------ evaluation


@torch.no_grad()
def embed(model: nn.Module, world: World, split: str, batch_size: int = 250) -> dict[str, Tensor]:
    """Frozen embeddings of every clip of ``split``: pooled video and audio features (probes), ``S_vt`` video and
    caption-0 text embeddings (retrieval), and the labels."""
    model.eval()
    parts: dict[str, list[Tensor]] = {"video": [], "audio": [], "video_vt": [], "text_vt": [], "label": []}
    for batch in world.loader(split, batch_size, shuffle=False, caption="first"):
        parts["video"].append(model.encode_video(batch, space="pooled"))
        parts["audio"].append(model.encode_audio(batch, space="pooled"))
        parts["video_vt"].append(model.encode_video(batch))
        parts["text_vt"].append(model.encode_text(batch))
        parts["label"].append(batch["label"])
    return {k: torch.cat(v) for k, v in parts.items()}


def evaluate_backbone(model: nn.Module, world: World, config: HarmonizeConfig) -> dict[str, float]:
    """The columns of the table (:data:`METRICS`) for one pre-trained backbone."""
    train, test = embed(model, world, "train"), embed(model, world, "test")
    metrics: dict[str, float] = {}
    for modality in ("video", "audio"):
        probe = fit_linear_probe(
            train[modality], train["label"], len(EVENT_CLASSES), config.probe_l2, config.probe_iterations
        )
        logits = probe.logits(test[modality])
        metrics[f"{modality}_top1"] = topk_accuracy(logits, test["label"], 1)
        metrics[f"{modality}_top5"] = topk_accuracy(logits, test["label"], 5)
    scores = retrieval_metrics(test["text_vt"] @ test["video_vt"].T).t2v
    metrics.update(t2v_r1=scores.r1, t2v_r5=scores.r5, t2v_r10=scores.r10, t2v_mdr=scores.median_rank)
    return metrics


# ---------------------------------------------------------------------------------- the curriculum vs the truth


def drop_metrics(samples: dict[str, np.ndarray], misaligned_record: np.ndarray) -> dict[str, float]:
    """:data:`DROP_METRICS` of one curriculum run: event level (every (step, sample) the run saw), clip level, and the
    AUC of the per-sample alignment as a detector of the misaligned samples (:func:`alignment_auc`)."""
    events = drop_precision_recall(samples["dropped"], samples["misaligned"])
    clips = clip_drop_scores(samples["clip_id"], samples["dropped"], misaligned_record)
    return {
        "drop_rate": events.dropped / events.total,
        "drop_precision": events.precision,
        "drop_recall": events.recall,
        "clip_precision": clips.precision,
        "clip_recall": clips.recall,
        "indicator_auc": alignment_auc(samples["alignment"], samples["misaligned"]),
    }


# ---------------------------------------------------------------------------------------------- the experiment


@dataclass
class HarmonizeResult:
    """Every run of :func:`run_harmonize`.

    Attributes:
        config: the experiment's config.
        world_config: the world it ran on.
        runs: one record per (row, seed), rows in table order.
        seconds: wall time of the whole experiment (world generation included).
        cpu_seconds: CPU time of the process over the same span (less than ``seconds`` when the cores are shared).
    """

    config: HarmonizeConfig
    world_config: WorldConfig
    runs: list[RunRecord]
    seconds: float
    cpu_seconds: float = math.nan

    def rows(self) -> list[str]:
        """The rows present, the control row first, then the paper's order."""
        return [row for row in LABELS if any(run.row == row for run in self.runs)]

    def summary(self) -> dict[str, dict[str, tuple[float, float]]]:
        """``row -> metric -> (mean, std)`` over seeds (sample std, ``ddof=1``; NaN for one seed)."""
        table: dict[str, dict[str, tuple[float, float]]] = {}
        for row in self.rows():
            runs = [run for run in self.runs if run.row == row]
            table[row] = {}
            for metric in runs[0].metrics:
                values = np.array([run.metrics[metric] for run in runs], dtype=np.float64)
                std = float(values.std(ddof=1)) if len(values) > 1 else math.nan
                table[row][metric] = (float(values.mean()), std)
        return table


def run_harmonize(
    config: HarmonizeConfig,
    world: World | None = None,
    progress: bool = False,
    directory: RunDirectory | None = None,
) -> HarmonizeResult:
    """Pre-train and evaluate every row of ``config`` for every seed (see the module docstring).

    Args:
        config: the experiment.
        world: the world to run on (default: generated from ``config.world_config()``).
        progress: show one progress bar over every step of every run.
        directory: a claimed run directory: each finished (row, seed) is recorded in it as it ends, and a rerun reads
            the recorded ones back instead of running them again (a run draws only from its own seed, so the result
            is the same).

    Logs one line per finished run (``logging``, INFO).
    """
    started, cpu_started = time.perf_counter(), time.process_time()
    world_config = config.world_config()
    if world is None:
        world = make_world(world_config)
    else:
        world_config = world.config
    total = len(config.rows) * len(config.seeds) * config.steps
    bar = tqdm(total=total, desc="harmonize", disable=not progress)
    runs = []
    recorded = {}
    if directory is not None:
        for row in [INIT_ROW, *ROWS]:
            for seed in config.seeds:
                value = directory.recorded(f"{row}-s{seed}")
                if value is not None:
                    recorded[row, seed] = record_from_plain(value)
    if config.evaluate_init:
        for seed in config.seeds:
            run = recorded.get((INIT_ROW, seed))
            if run is None:
                run_started = time.perf_counter()
                metrics = evaluate_backbone(initial_backbone(world, config, seed).eval(), world, config)
                run = RunRecord(INIT_ROW, seed, [], None, metrics, time.perf_counter() - run_started)
                if directory is not None:
                    directory.record(f"{INIT_ROW}-s{seed}", record_as_plain(run))
            runs.append(run)
            shown = ", ".join(f"{k}={v:.3g}" for k, v in run.metrics.items())
            logger.info("%s seed %d: %s", LABELS[INIT_ROW], seed, shown)
    for row in (r for r in ROWS if r in config.rows):
        for seed in config.seeds:
            bar.set_postfix(row=row, seed=seed)
            run = recorded.get((row, seed))
            if run is None:
                run_started = time.perf_counter()
                model, steps, samples = pretrain_row(world, config, row, seed, progress=bar.update)
                metrics = evaluate_backbone(model, world, config)
                if samples is not None:
                    metrics.update(drop_metrics(samples, world["pretrain"].misaligned))
                run = RunRecord(row, seed, steps, samples, metrics, time.perf_counter() - run_started)
                if directory is not None:
                    directory.record(f"{row}-s{seed}", record_as_plain(run))
            else:
                bar.update(config.steps)
            runs.append(run)
            shown = ", ".join(f"{k}={v:.3g}" for k, v in run.metrics.items())
            logger.info("%s seed %d (%.0fs): %s", LABELS[row], seed, run.seconds, shown)
    bar.close()
    return HarmonizeResult(config, world_config, runs, time.perf_counter() - started, time.process_time() - cpu_started)


# ------------------------------------------------------------------------------------------------- the report


def _cell(mean: float, std: float, digits: int = 1) -> str:
    if math.isnan(mean):
        return "-"
    return f"{mean:.{digits}f}" if math.isnan(std) else f"{mean:.{digits}f} ± {std:.{digits}f}"


def _smooth(values: np.ndarray, window: int) -> np.ndarray:
    window = max(1, min(window, len(values)))
    kernel = np.ones(window) / window
    padded = np.concatenate([np.full(window - 1, values[0]), values])
    return np.convolve(padded, kernel, mode="valid")


def plot_cosines(result: HarmonizeResult, path: str | Path, window: int = 20) -> Path:
    """The gradient cosine over training (every row), and, for the curriculum rows, the per-sample alignment and the
    share of samples dropped, for misaligned and aligned samples apart. PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    curriculum_rows = [row for row in result.rows() if any(r.samples is not None for r in result.runs if r.row == row)]
    panels = 3 if curriculum_rows else 1
    figure, axes = plt.subplots(1, panels, figsize=(5.2 * panels, 4.2), squeeze=False)
    axes = axes[0]
    colours = dict(zip(ROWS, plt.rcParams["axes.prop_cycle"].by_key()["color"], strict=False))
    for row in result.rows():
        curves = np.array([[s["cosine"] for s in run.steps] for run in result.runs if run.row == row and run.steps])
        if curves.size:
            axes[0].plot(_smooth(curves.mean(0), window), label=LABELS[row], color=colours[row], lw=1.3)
    axes[0].axhline(0.0, color="black", lw=0.6)
    axes[0].set(
        xlabel="step", ylabel="cos(g_va, g_vt)", title=f"gradient cosine (batch, mean of seeds, {window}-step mean)"
    )
    axes[0].legend(fontsize=8)
    for row in curriculum_rows:
        runs = [run for run in result.runs if run.row == row and run.samples is not None]
        steps = result.config.steps
        for truth, style in ((True, "--"), (False, "-")):
            alignment = np.zeros(steps)
            dropped = np.zeros(steps)
            count = np.zeros(steps)
            for run in runs:
                chosen = run.samples["misaligned"] == truth
                at = run.samples["step"][chosen]
                np.add.at(alignment, at, run.samples["alignment"][chosen])
                np.add.at(dropped, at, run.samples["dropped"][chosen])
                np.add.at(count, at, 1)
            seen = count > 0
            mean_alignment = np.where(seen, alignment / np.maximum(count, 1), np.nan)
            share = np.where(seen, dropped / np.maximum(count, 1), np.nan)
            label = f"{LABELS[row]}, {'misaligned' if truth else 'aligned'}"
            axes[1].plot(_smooth(np.nan_to_num(mean_alignment), window), style, color=colours[row], lw=1.2, label=label)
            axes[2].plot(_smooth(np.nan_to_num(share), window), style, color=colours[row], lw=1.2, label=label)
    if curriculum_rows:
        gamma = [result.config.gamma()(s) for s in range(result.config.steps)]
        axes[1].plot(gamma, ":", color="black", lw=1.0, label="gamma")
        axes[1].set(xlabel="step", ylabel=f"per-sample alignment ({result.config.measure})", title="CL's indicator")
        axes[2].set(xlabel="step", ylabel="share of samples dropped", title="what CL drops")
        axes[1].legend(fontsize=7)
        axes[2].legend(fontsize=7)
    for axis in axes:
        axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def write_csv(result: HarmonizeResult, path: str | Path) -> Path:
    """The table in the paper's layout, one line per row: ``<metric>_mean`` and ``<metric>_std`` columns."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    summary = result.summary()
    metrics = [*METRICS, *DROP_METRICS]
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["row", "method", "seeds", *(f"{m}_{s}" for m in metrics for s in ("mean", "std"))])
        for row, values in summary.items():
            cells = []
            for metric in metrics:
                mean, std = values.get(metric, (math.nan, math.nan))
                cells += [f"{mean:.6g}", f"{std:.6g}"]
            writer.writerow([row, LABELS[row], " ".join(map(str, result.config.seeds)), *cells])
    return path


def write_seed_csv(result: HarmonizeResult, path: str | Path) -> Path:
    """Every run's metrics, one line per (row, seed), and its wall time."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    metrics = [*METRICS, *DROP_METRICS]
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["row", "seed", *metrics, "seconds"])
        for run in result.runs:
            values = [f"{run.metrics.get(m, math.nan):.6g}" for m in metrics]
            writer.writerow([run.row, run.seed, *values, f"{run.seconds:.1f}"])
    return path


def markdown_report(result: HarmonizeResult, command: str, figure: str, csv_name: str, seeds_csv: str) -> str:
    """The Markdown page of an experiment: setup, the table, the curriculum's precision / recall, the cosines."""
    config, summary = result.config, result.summary()
    trained_runs = sum(run.row != INIT_ROW for run in result.runs)
    seeds = ", ".join(map(str, config.seeds))
    n_test = result.world_config.n_test
    lines = [
        "# Gradient harmonisation on the synthetic world",
        "",
        "Cross-modality gradient realignment (GR) and gradient-based curriculum learning (CL) of Wu et al. (NeurIPS "
        "2022) with the VATT-style backbone (`meltr.models.vatt`) on the synthetic world, in the layout of the "
        "paper's table. Generated by",
        "",
        "```",
        command,
        "```",
        "",
        f"in {result.seconds:.0f} s wall and {result.cpu_seconds:.0f} s of CPU time ({trained_runs} pre-training runs, "
        f"world generation and evaluation included; torch on {torch.get_num_threads()} thread(s); the wall time is "
        "longer than the CPU time when the cores are shared with other jobs). Everything below is what that run "
        "produced; `meltr.recipes.harmonize` documents the method.",
        "",
        "## Setup",
        "",
        f"- World (seed {result.world_config.seed}): {result.world_config.n_pretrain} pretrain clips of which "
        f"{config.misaligned_fraction:.0%} are served another clip's text (the world records which), "
        f"{result.world_config.n_train} clean clips to fit the probes, {n_test} clean test clips; "
        + ", ".join(f"`{k}={v}`" for k, v in config.world.items()),
        f"- Backbone: VATT-style, preset `{config.size}` with "
        + ", ".join(f"`{k}={v}`" for k, v in config.model.items())
        + f"; losses CMA_va (NCE) and CMA_vt (MIL-NCE over a bag of {config.bag_size} captions).",
        f"- Pre-training: {config.steps} steps of batch {config.batch_size}, AdamW lr {config.lr:g} (warm-up "
        f"{config.warmup_steps}, cosine to lr/10), update clipped at norm {config.grad_clip:g}; seeds {seeds}.",
        f"- RW: the up-weighted loss has weight {config.reweight:g}, the other 1. CL: per sample, "
        f"`{config.measure}` of the per-sample gradients > gamma, gamma {config.gamma_schedule} from "
        f"{config.gamma_start:g} to {config.gamma_end:g}; per-sample gradients over "
        + (", ".join(f"`{p}`" for p in config.alignment_scope) if config.alignment_scope else "every parameter")
        + " (updates over every parameter).",
        "- Evaluation: linear probes (logistic regression on the frozen pooled features) on the 12 event labels, "
        "fit on the probe split, Top-1/Top-5 on the test split; zero-shot text-to-video retrieval on the test split "
        "(caption 0 queries), R@K in percent, MdR = median rank.",
        "",
        f"## Results (mean ± std over seeds {seeds})",
        "",
        "| Method | " + " | ".join(METRICS.values()) + " |",
        "|---|" + "---|" * len(METRICS),
    ]
    for row, values in summary.items():
        lines.append(f"| {LABELS[row]} | " + " | ".join(_cell(*values[m]) for m in METRICS) + " |")
    if INIT_ROW in summary:
        lines += [
            "",
            f"The row *{LABELS[INIT_ROW]}* evaluates each seed's backbone at its initialisation, before any step: what "
            "the probes and retrieval get from the architecture (and the fixed spectral front-end of the audio tokens) "
            "alone.",
        ]
    lines += [
        "",
        f"Chance: classification Top-1 {100 / 12:.1f}, Top-5 {500 / 12:.1f}; retrieval R@1 {100 / n_test:.1f}, "
        f"R@10 {1000 / n_test:.1f}, MdR {(n_test + 1) / 2:g}. Per-seed values: [{seeds_csv}]({seeds_csv}); this "
        f"table: [{csv_name}]({csv_name}).",
    ]
    if "baseline" in summary and len(config.seeds) > 1 and len(summary) > 1:
        lines += [
            "",
            "Difference of each row's mean to VATT's (in the metric's unit; MdR: lower is better); `*` where it "
            "exceeds the sum of the two standard deviations:",
            "",
            "| Method | " + " | ".join(METRICS.values()) + " |",
            "|---|" + "---|" * len(METRICS),
        ]
        for row, values in summary.items():
            if row in ("baseline", INIT_ROW):
                continue
            cells = []
            for metric in METRICS:
                (mean, std), (base, base_std) = values[metric], summary["baseline"][metric]
                marked = "*" if abs(mean - base) > std + base_std else ""
                cells.append(f"{mean - base:+.1f}{marked}")
            lines.append(f"| {LABELS[row]} | " + " | ".join(cells) + " |")
    curriculum = [row for row in summary if "drop_precision" in summary[row]]
    if curriculum:
        lines += [
            "",
            "## What the curriculum dropped, against the world's record of misaligned pairs",
            "",
            "Event level: every (step, sample) a run saw; precision = misaligned share of the dropped samples, "
            "recall = dropped share of the misaligned samples. Clip level: a clip counts as dropped when it was "
            "dropped in more than half of the steps that showed it, against the record of all "
            f"{result.world_config.n_pretrain} clips. Dropping at random has precision "
            f"{config.misaligned_fraction:.2f} (the misaligned share). Indicator AUC: the probability that an aligned "
            "sample's alignment exceeds a misaligned one's, over every (step, sample) pair of a run, whatever gamma "
            "(0.5 = chance).",
            "",
            "| Method | dropped (share) | precision | recall | clip precision | clip recall | indicator AUC |",
            "|---|---|---|---|---|---|---|",
        ]
        for row in curriculum:
            values = summary[row]
            lines.append(f"| {LABELS[row]} | " + " | ".join(_cell(*values[m], digits=3) for m in DROP_METRICS) + " |")
    lines += ["", "## Gradient cosine over training", "", f"![gradient cosine]({figure})", ""]
    thirds = []
    trained = [row for row in summary if row != INIT_ROW]
    for row in trained:
        runs = [run for run in result.runs if run.row == row]
        curve = np.array([[s["cosine"] for s in run.steps] for run in runs]).mean(0)
        parts = np.array_split(curve, 3)
        conflict = np.mean([[s["cosine"] < 0 for s in run.steps] for run in runs])
        thirds.append(f"| {LABELS[row]} | " + " | ".join(f"{p.mean():+.3f}" for p in parts) + f" | {conflict:.0%} |")
    lines += [
        "Mean `cos(g_va, g_vt)` of the batch gradients (before any surgery), by third of training, and the share of "
        "steps where they conflict (cosine < 0):",
        "",
        "| Method | first third | second third | last third | steps in conflict |",
        "|---|---|---|---|---|",
        *thirds,
        "",
    ]
    batch, tail = config.batch_size, max(1, config.steps // 10)
    losses = []
    for row in trained:
        runs = [run for run in result.runs if run.row == row]
        first = [np.mean([run.steps[0][f"loss_{t}"] for run in runs]) for t in ("va", "vt")]
        last = [np.mean([[s[f"loss_{t}"] for s in run.steps[-tail:]] for run in runs]) for t in ("va", "vt")]
        losses.append(f"| {LABELS[row]} | {first[0]:.3f} | {last[0]:.3f} | {first[1]:.3f} | {last[1]:.3f} |")
    lines += [
        f"Training losses (batch means, mean of seeds): at the first step and over the last {tail} steps. With "
        f"embeddings that carry no information CMA_va is log B = {math.log(batch):.3f} and CMA_vt (symmetric "
        f"MIL-NCE) is log(2B - 1) = {math.log(2 * batch - 1):.3f}.",
        "",
        "| Method | CMA_va first | CMA_va last | CMA_vt first | CMA_vt last |",
        "|---|---|---|---|---|",
        *losses,
        "",
    ]
    return "\n".join(lines)


def write_report(result: HarmonizeResult, markdown: str | Path, command: str) -> list[Path]:
    """Write ``markdown`` and, next to it, ``<stem>.csv``, ``<stem>-seeds.csv`` and ``<stem>-cosine.png``."""
    markdown = Path(markdown)
    stem = markdown.with_suffix("")
    figure = plot_cosines(result, f"{stem}-cosine.png")
    table = write_csv(result, f"{stem}.csv")
    seeds = write_seed_csv(result, f"{stem}-seeds.csv")
    markdown.parent.mkdir(parents=True, exist_ok=True)
    markdown.write_text(markdown_report(result, command, figure.name, table.name, seeds.name))
    return [markdown, table, seeds, figure]


__all__ = [
    "DEFAULT_MODEL",
    "DEFAULT_WORLD",
    "DROP_METRICS",
    "HEADS_SCOPE",
    "INIT_ROW",
    "LABELS",
    "METRICS",
    "ROWS",
    "HarmonizeConfig",
    "HarmonizeResult",
    "RunRecord",
    "caption_bags",
    "drop_metrics",
    "embed",
    "evaluate_backbone",
    "initial_backbone",
    "markdown_report",
    "plot_cosines",
    "pretrain_row",
    "row_method",
    "run_harmonize",
    "scope_parameters",
    "scoped_task_gradients",
    "write_csv",
    "write_report",
    "write_seed_csv",
]
