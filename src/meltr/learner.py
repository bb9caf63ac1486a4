"""The bi-level learner of MELTR (Algorithm 1): inner steps on ``L_aux``, meta steps on ``L_pri``.

Inner step (Eq. 12): ``w <- optimiser step on L_aux = M(l(w; x); phi)``. Every ``meta_every`` inner steps, a meta
step (Eq. 13): ``phi <- meta-optimiser step on dL_pri/dphi``, the hypergradient of
``L_pri = l_0(w; x_meta) + reg_weight * |M(l) - sum_t l_t|`` given by a hypergradient estimator.

The learner works unchanged under ``torch.nn.parallel.DistributedDataParallel``: inner gradients are synchronised
by DDP; second-order passes run on the unwrapped module and every gradient of the meta step is all-reduced by hand,
so that all ranks keep identical combiners (the official code never synchronises them).
"""

from __future__ import annotations

import contextlib
import fnmatch
import math
import warnings
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.nn.parallel import DistributedDataParallel
from torch.nn.utils import parameters_to_vector

from meltr.batches import MicroBatches, ReplayStorage
from meltr.combine.base import LossCombiner
from meltr.contract import concat_task_losses, nonfinite_tasks
from meltr.distributed import all_reduce_mean, any_process, original_forward, unwrap
from meltr.hypergrad import BACKENDS, ESTIMATORS, MetaProblem, build_estimator
from meltr.hypergrad.backends import Backend, jvp
from meltr.hypergrad.cache import ScopeCache, TrunkRecord
from meltr.hypergrad.estimators import Estimator
from meltr.hypergrad.linalg import grad_or_zeros
from meltr.hypergrad.problem import DEFAULT_REG_WEIGHT
from meltr.hypergrad.scope import resolve_scope


class NonFiniteLossWarning(UserWarning):
    """A step was skipped because a task loss or a (hyper)gradient was NaN or infinite."""


@dataclass
class MetaStats:
    """What one meta step measured."""

    primary_loss: float  # L_pri on the meta batch
    primary_task_loss: float  # l_0 on the meta batch
    regulariser: float  # L_reg on the meta batch
    hypergrad_norm: float  # before clipping
    skipped: bool = False
    extras: dict[str, float] = field(default_factory=dict)


@dataclass
class StepStats:
    """What one call of :meth:`AuxiliaryLearner.step` measured, for logging."""

    step: int
    losses: dict[str, float]  # each task's (batch-mean) loss
    combined: float  # L_aux
    skipped: bool = False
    nonfinite: list[str] = field(default_factory=list)
    sensitivity: dict[str, float] = field(default_factory=dict)  # mean dM/dl_t
    meta: MetaStats | None = None

    def as_dict(self) -> dict[str, Any]:
        """A flat ``name -> value`` row (``loss/<task>``, ``sensitivity/<task>``, ``meta/<field>``)."""
        row: dict[str, Any] = {"step": self.step, "combined": self.combined, "skipped": self.skipped}
        row.update({f"loss/{t}": v for t, v in self.losses.items()})
        row.update({f"sensitivity/{t}": v for t, v in self.sensitivity.items()})
        if self.meta is not None:
            meta = asdict(self.meta)
            extras = meta.pop("extras")
            row.update({f"meta/{k}": v for k, v in meta.items()})
            row.update({f"meta/{k}": v for k, v in extras.items()})
        return row


class ReplayBuffer:
    """The last ``capacity`` training batches, sampled uniformly with a seeded generator (as the official code).

    ``storage`` decides what is kept of each batch (the batch, a CPU copy, or its dataset indices) and rebuilds the
    batch when it is sampled; ``batches`` holds those records.
    """

    def __init__(self, capacity: int = 10, seed: int = 0, storage: ReplayStorage | None = None) -> None:
        if capacity < 1:
            raise ValueError(f"replay_size must be at least 1, got {capacity}")
        self.batches: deque[Any] = deque(maxlen=capacity)
        self.generator = torch.Generator().manual_seed(seed)
        self.storage = storage or ReplayStorage()

    def append(self, batch: Any) -> None:
        self.batches.append(self.storage.keep(batch))

    def sample(self) -> Any:
        if not self.batches:
            raise RuntimeError("the replay buffer is empty: run an inner step first")
        index = int(torch.randint(len(self.batches), (), generator=self.generator))
        return self.storage.restore(self.batches[index])

    def __len__(self) -> int:
        return len(self.batches)


class _Batches:
    """Batches of an iterable, re-iterated when exhausted (a fresh pass, e.g. a new shuffle, each time)."""

    def __init__(self, data: Iterable[Any] | None, name: str) -> None:
        self.data, self.name = data, name
        self._iterator: Iterator[Any] | None = None

    @property
    def available(self) -> bool:
        return self.data is not None

    def next(self) -> Any:
        if self.data is None:
            raise ValueError(f"no {self.name} was given")
        if self._iterator is None:
            self._iterator = iter(self.data)
        try:
            return next(self._iterator)
        except StopIteration:
            self._iterator = iter(self.data)
            try:
                return next(self._iterator)
            except StopIteration:
                raise ValueError(f"{self.name} yielded no batch") from None


def select_parameters(model: nn.Module, scope: str | Sequence[str] | None) -> list[str]:
    """Names of the trainable parameters of ``model`` in the hypergradient scope.

    Args:
        model: the (unwrapped) backbone.
        scope: ``None`` for every trainable parameter, else names or shell-style patterns (``"encoder.layers.3.*"``)
            and named scopes (``"last_blocks(1)"``, ``"head"``; :func:`meltr.hypergrad.scope.resolve_scope`).

    Raises:
        ValueError: a pattern matches no trainable parameter, or a named scope is malformed.
    """
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    scope = resolve_scope(model, scope)
    if scope is None:
        return names
    selected = []
    for pattern in scope:
        matched = [n for n in names if fnmatch.fnmatchcase(n, pattern)]
        if not matched:
            raise ValueError(f"hypergradient scope pattern {pattern!r} matches no trainable parameter of the model")
        selected += [n for n in matched if n not in selected]
    return [n for n in names if n in selected]


def resolve_estimator(hypergrad: str | Estimator, options: Mapping[str, Any] | None = None) -> Estimator:
    """The estimator object: ``hypergrad`` itself, or the one registered under that name built with ``options``.

    Raises:
        ValueError: ``options`` are given with an estimator object (they belong in its constructor).
        TypeError: ``hypergrad`` is neither a name nor callable.
    """
    if isinstance(hypergrad, str):
        return build_estimator(hypergrad, **dict(options or {}))
    if not callable(hypergrad):
        raise TypeError(f"hypergrad must be an estimator (problem -> hypergradient) or a name, got {hypergrad!r}")
    if options:
        raise ValueError(
            f"hypergrad_options {dict(options)} go with an estimator name; build the object with them instead"
        )
    return hypergrad


class AuxiliaryLearner:
    """Fine-tune a model on all of its losses, combined by a (meta-learned) combiner: Algorithm 1 of MELTR.

    Args:
        model: a module (or DDP-wrapped module) whose ``forward(batch)`` returns ``{task: loss}``.
        combiner: the loss combiner; fixed combiners (no meta parameters) make this plain multi-task training.
        optimizer: the user's optimiser over the model's parameters (the inner problem).
        meta_optimizer: optimiser over ``combiner.meta_parameters()``; default Adam(lr=1e-3, weight_decay=3e-5).
        meta_every: inner steps between meta steps (the official code's ``auxgrad_every``, 3).
        reg_weight: the weight of the regulariser ``|M(l) - sum_t l_t|`` in ``L_pri`` (Eq. 7, the paper's gamma;
            ``gamma=`` is accepted with a DeprecationWarning).
        hypergrad: the estimator, ``estimator(problem) -> dL_pri/dphi`` (e.g. ``Neumann(terms=5)``), or the name of
            one in :data:`~meltr.hypergrad.ESTIMATORS` (``identity``, ``neumann``, ``cg``, ``unrolled``, ``stocbio``).
        hypergrad_options: keyword options of a named estimator (``terms``, ``lr``, ``iters``, ...).
        backend: how the mixed term is computed: a backend function or the name of one in
            :data:`~meltr.hypergrad.BACKENDS` (``double_backward``, ``jvp``, ``finite_difference``).
        meta_source: ``"replay"`` draws meta batches from the replay buffer of recent training batches (the official
            code); ``"split"`` draws them from ``meta_data``, a held-out meta split; ``"next"`` takes the next inner
            batch: the meta step due after an optimiser step runs in the next call of :meth:`step`, right after its
            inner forward, whose graph gives ``grad_w L_pri`` (no forward of its own for the meta batch), and before
            its combined loss (so that inner step uses the updated combiner, as usual). The hypergradient is the
            plain one on that batch at those weights (the masks of the inner forward); its statistics come with
            that step's. Needs :meth:`step`, one process, ``accumulate=1`` and ``precision="32"``.
        meta_data: iterable of meta batches (re-iterated when exhausted), for ``meta_source="split"``.
        replay_size: capacity of the replay buffer (official: 10).
        direct_term: include the regulariser's direct ``d/dphi`` term; ``False`` reproduces the official code.
        clip_norm: the hypergradient's norm is clipped to this (official: 50); ``None`` to disable.
        on_nonfinite: ``"skip"`` a step whose losses or gradients are not finite (with a warning), or ``"raise"``.
        hypergrad_scope: restrict ``w`` in the hypergradient to these parameter names / patterns, or a named scope
            (``"last_blocks(1)"``, ``"head"``, see :func:`meltr.hypergrad.scope.resolve_scope`).
        fd_scale: relative step of the finite-difference backends (``None``: 1e-5 central, 1e-6 one-sided).
        track_sensitivity: report the mean ``dM/dl_t`` per task at every step (``True``), every ``N`` steps (an
            int ``N``; a logging-only cost), or never (``False`` / 0).
        meta_train_batch: the train-side batch of a meta step (the batch of ``L_aux``): ``"replay"`` samples it from
            the replay buffer (the official code); ``"current"`` takes the batch of the optimiser step that ends
            with the meta step. With :meth:`step`, one micro-batch per step and ``precision="32"``, the meta step
            then runs before that optimiser step, at the weights the inner forward saw, and the backends reuse
            that forward's losses and masks (``forward_difference`` then costs one extra forward); the
            hypergradient is the plain path's at those weights and batches, to float rounding.
        cache_scope_inputs: keep the outputs of the network below the hypergradient scope (the *trunk*: every module
            with no scoped parameter whose inputs do not depend on the scope) from the first forward pass of a meta
            step over a batch, and return them in its later passes, which then run through the scope only
            (:mod:`meltr.hypergrad.cache`). With ``meta_train_batch="current"`` the inner forward is that first
            pass of the train-side batch. Exact: the hypergradient is the uncached one to float rounding. Needs a
            scope that leaves some module out (``hypergrad_scope``, or frozen parameters).
        scope_cosine_every: every this many meta steps, also compute the hypergradient with the full scope (every
            trainable parameter; same batches, masks and estimator, without the cache) and log its cosine with the
            scoped one (``meta/scope_cosine``, summarised by ``meltr analyze``); 0 never. Needs ``hypergrad_scope``;
            each check costs a full-scope hypergradient.
        check_finite_every: check the task losses and inner gradients for NaN / inf (and skip such steps) every
            this many steps; 0 never checks (a non-finite step then reaches the weights). Under DDP each check is
            one all-reduce.
        seed: seed of the replay buffer's sampling and of the meta steps' own random stream (a meta step's
            dropout and masks never draw from the global generator, so the model's own stream is the same with
            meta steps on or off).
        reg_batch: the batch the regulariser is evaluated on: ``"meta"`` (with ``l_0``) or ``"train"`` (the
            train-side batch, as the official UniVL and Violet code do).
        lookahead_every: every this many meta steps, check whether the step helped (see :meth:`lookahead_check`);
            0 never checks. Each check costs about three training steps.
        lookahead_data: iterable of held-out batches for the check (re-iterated when exhausted); default: the meta
            batches of ``meta_data``, else a replayed training batch (then not held out).
        backward: ``backward(loss)`` computes the inner gradients (default ``Tensor.backward``); pass Lightning's
            ``manual_backward`` or ``accelerator.backward`` so that the loop's gradient synchronisation and loss
            scaling happen.
        grad_scaler: a ``torch.amp.GradScaler`` the learner drives (scale, unscale, step, update) for fp16; a step
            the scaler skips for overflow is not an inner step (``overflow_steps`` counts them; no warning).
        max_grad_norm: clip the inner gradients to this norm (UniVL: 1.0) after unscaling; ``None`` to disable.
        accumulate: micro-batches per optimiser step. :meth:`step` takes micro-batches; ``meta_every``, the replay
            buffer and ``inner_steps`` count optimiser steps, and a meta step reads a whole group of micro-batches.
            With per-sample losses this is the run on the concatenated batch; with batch-level losses a non-linear
            combiner of the micro-batch means differs from the combiner of the whole batch's means.
        precision: ``"32"``; ``"bf16"`` or ``"fp16"`` run the backbone's inner forward under ``torch.autocast``
            (combiner and meta steps in float32; fp16 needs ``grad_scaler``).
        replay_storage: ``"device"`` (keep batches as they are), ``"cpu"`` (keep CPU copies) or ``"index"`` (keep
            only ``batch[replay_index_key]`` and rebuild the batch with ``replay_fetch(indices)``).
        replay_fetch: ``dataset indices -> batch`` for ``replay_storage="index"``.
        replay_index_key: the batch key holding dataset indices.
        replay_in_checkpoint: keep the replay buffer's records in :meth:`state_dict`.
    """

    def __init__(
        self,
        model: nn.Module,
        combiner: LossCombiner,
        optimizer: torch.optim.Optimizer,
        *,
        meta_optimizer: torch.optim.Optimizer | None = None,
        meta_every: int = 3,
        reg_weight: float = DEFAULT_REG_WEIGHT,
        hypergrad: str | Estimator = "identity",
        hypergrad_options: Mapping[str, Any] | None = None,
        backend: str | Backend = jvp,
        meta_source: Literal["replay", "split", "next"] = "replay",
        meta_data: Iterable[Any] | None = None,
        replay_size: int = 10,
        direct_term: bool = True,
        clip_norm: float | None = 50.0,
        on_nonfinite: Literal["skip", "raise"] = "skip",
        hypergrad_scope: str | Sequence[str] | None = None,
        fd_scale: float | None = None,
        track_sensitivity: bool | int = True,
        meta_train_batch: Literal["replay", "current"] = "replay",
        check_finite_every: int = 1,
        cache_scope_inputs: bool = False,
        scope_cosine_every: int = 0,
        seed: int = 0,
        reg_batch: Literal["meta", "train"] = "meta",
        lookahead_every: int = 0,
        lookahead_data: Iterable[Any] | None = None,
        backward: Callable[[Tensor], Any] = Tensor.backward,
        grad_scaler: torch.amp.GradScaler | None = None,
        max_grad_norm: float | None = None,
        accumulate: int = 1,
        precision: Literal["32", "bf16", "fp16"] = "32",
        replay_storage: Literal["device", "cpu", "index"] = "device",
        replay_fetch: Callable[[Tensor], Any] | None = None,
        replay_index_key: str = "index",
        replay_in_checkpoint: bool = True,
        gamma: float | None = None,
    ) -> None:
        if gamma is not None:
            warnings.warn(
                "AuxiliaryLearner(gamma=...) is now reg_weight= (the curriculum has its own gamma)",
                DeprecationWarning,
                stacklevel=2,
            )
            reg_weight = gamma
        if meta_every < 1:
            raise ValueError(f"meta_every must be at least 1, got {meta_every}")
        if reg_weight < 0:
            raise ValueError(f"reg_weight must be non-negative, got {reg_weight}")
        if meta_source not in ("replay", "split", "next"):
            raise ValueError(f"meta_source must be 'replay', 'split' or 'next', got {meta_source!r}")
        if meta_source == "next" and (
            accumulate != 1 or precision != "32" or isinstance(model, DistributedDataParallel)
        ):
            raise ValueError(
                "meta_source='next' needs accumulate=1, precision='32' and one process (it reuses the inner "
                "forward's graph); use meta_source='replay'"
            )
        if meta_source == "split" and meta_data is None:
            raise ValueError("meta_source='split' needs meta_data, an iterable of held-out meta batches")
        if reg_batch not in ("meta", "train"):
            raise ValueError(f"reg_batch must be 'meta' or 'train', got {reg_batch!r}")
        if lookahead_every < 0:
            raise ValueError(f"lookahead_every must be 0 (never) or positive, got {lookahead_every}")
        if meta_train_batch not in ("replay", "current"):
            raise ValueError(f"meta_train_batch must be 'replay' or 'current', got {meta_train_batch!r}")
        if not isinstance(check_finite_every, int) or check_finite_every < 0:
            raise ValueError(f"check_finite_every must be 0 (never) or a positive int, got {check_finite_every!r}")
        if not isinstance(track_sensitivity, (bool, int)) or track_sensitivity < 0:
            raise ValueError(f"track_sensitivity must be a bool or a non-negative int, got {track_sensitivity!r}")
        if on_nonfinite not in ("skip", "raise"):
            raise ValueError(f"on_nonfinite must be 'skip' or 'raise', got {on_nonfinite!r}")
        check_loop_options(accumulate, max_grad_norm, precision, grad_scaler)
        self.model = model
        self.combiner = combiner
        self.optimizer = optimizer
        self.estimator = resolve_estimator(hypergrad, hypergrad_options)
        self.estimator_name = hypergrad if isinstance(hypergrad, str) else type(self.estimator).__name__
        self.backend = BACKENDS.get(backend) if isinstance(backend, str) else backend
        self.meta_every = meta_every
        self.reg_weight = reg_weight
        self.meta_source = meta_source
        self.meta_data = meta_data
        self.backward = backward
        self.grad_scaler = grad_scaler
        self.max_grad_norm = max_grad_norm
        self.accumulate = accumulate
        self.precision = precision
        self.replay_in_checkpoint = replay_in_checkpoint
        self.device_type = next(iter(unwrap(model).parameters()), torch.empty(0)).device.type
        sample_device = None if replay_storage == "device" else next(iter(unwrap(model).parameters())).device
        storage = ReplayStorage(replay_storage, sample_device, replay_fetch, replay_index_key)
        self._group: list[Any] = []  # micro-batches of the optimiser step under way
        self._meta = _Batches(meta_data, "meta_data")
        self.replay = ReplayBuffer(replay_size, seed, storage)
        self.meta_generator = torch.Generator().manual_seed(seed + 0x5EED)
        self.direct_term = direct_term
        self.clip_norm = clip_norm
        self.on_nonfinite = on_nonfinite
        self.fd_scale = fd_scale
        self.track_sensitivity = track_sensitivity
        self.meta_train_batch = meta_train_batch
        self.check_finite_every = check_finite_every
        self.reg_batch = reg_batch
        self.lookahead_every = lookahead_every
        self._lookahead = _Batches(lookahead_data if lookahead_data is not None else meta_data, "lookahead_data")
        self._previous_hypergrad: Tensor | None = None
        # the check draws its masks from its own stream: turning it on changes nothing else in the run
        self._lookahead_generator = torch.Generator().manual_seed(seed + 0x10CA)
        self.scope = select_parameters(unwrap(model), hypergrad_scope)
        if not isinstance(cache_scope_inputs, bool):
            raise ValueError(f"cache_scope_inputs must be true or false, got {cache_scope_inputs!r}")
        named = dict(unwrap(model).named_parameters())
        self.scope_cache = ScopeCache(unwrap(model), [named[n] for n in self.scope]) if cache_scope_inputs else None
        self.full_scope = select_parameters(unwrap(model), None)
        if not isinstance(scope_cosine_every, int) or isinstance(scope_cosine_every, bool) or scope_cosine_every < 0:
            raise ValueError(f"scope_cosine_every must be 0 (never) or a positive int, got {scope_cosine_every!r}")
        if scope_cosine_every and self.scope == self.full_scope:
            raise ValueError(
                "scope_cosine_every compares a scoped hypergradient with the full one: set hypergrad_scope"
            )
        self.scope_cosine_every = scope_cosine_every
        meta_parameters = combiner.meta_parameters()
        self.meta_enabled = bool(meta_parameters)
        if meta_optimizer is None and self.meta_enabled:
            meta_optimizer = torch.optim.Adam(meta_parameters, lr=1e-3, weight_decay=3e-5)
        self.meta_optimizer = meta_optimizer
        self.steps = 0  # calls of step()
        self.inner_steps = 0  # inner steps taken
        self.meta_steps = 0  # meta steps taken
        self.skipped_steps = 0
        self.skipped_meta_steps = 0
        self.overflow_steps = 0  # fp16 steps the grad scaler skipped
        self.meta_pending = False  # meta_source="next": a meta step is due at the next inner forward

    # -- the loop ------------------------------------------------------------------------------------------------
    def step(self, batch: Any) -> StepStats:
        """One micro-batch on ``batch``; every ``accumulate``-th call the optimiser step, and a meta step every
        ``meta_every`` optimiser steps."""
        self.steps += 1
        if not self._group:
            self.optimizer.zero_grad(set_to_none=True)
        early = self._meta_reuses_inner_forward()
        pending = self.meta_pending and self.meta_enabled
        # the generator state the inner forward draws its masks and dropout from, replayed by the meta step
        rng_state = torch.get_rng_state() if early or pending else None
        record = None
        if (early or pending) and self.scope_cache is not None:
            named = dict(unwrap(self.model).named_parameters())
            with self.scope_cache.recording([named[n] for n in self.scope]) as record:
                stacked = self._inner_forward(batch)
        else:
            stacked = self._inner_forward(batch)
        check = self.check_finite_every > 0 and self.steps % self.check_finite_every == 0
        bad = nonfinite_tasks(stacked, self.combiner.tasks) if check else []
        losses = self._task_means(stacked)
        if check and any_process(bool(bad)):
            self._discard_group()
            return self._skip(losses, bad or ["(another process)"], what="task loss")
        next_meta = None
        if pending:
            # the meta step due after the last optimiser step, with this batch as its meta batch, at these weights
            self.meta_pending = False
            current = self.meta_train_batch == "current"
            next_meta = self.meta_step(
                batch if current else None,
                train_losses=stacked.detach() if current else None,
                train_rng_state=rng_state if current else None,
                train_record=record if current else None,
                meta_batch=batch,
                meta_losses=stacked,
                meta_rng_state=rng_state,
                meta_record=record,
            )
        combined = self.combiner(stacked)
        self._group.append(batch)
        last = len(self._group) == self.accumulate
        scaled = combined / self.accumulate if self.accumulate > 1 else combined
        if self.grad_scaler is not None:
            scaled = self.grad_scaler.scale(scaled)
        # Micro-batches before the last skip DDP's all-reduce; the last one reduces the accumulated gradient.
        with (
            self.model.no_sync()
            if isinstance(self.model, DistributedDataParallel) and not last
            else contextlib.nullcontext()
        ):
            self.backward(scaled)
        for p in self.combiner.parameters():
            p.grad = None  # phi is learned by meta steps only
        stats = StepStats(step=self.steps, losses=losses, combined=float(combined.detach()), meta=next_meta)
        if self.track_sensitivity and self.steps % int(self.track_sensitivity) == 0:
            sensitivity = self.combiner.sensitivity(stacked.detach())
            if sensitivity.dim() == 2:
                sensitivity = sensitivity.mean(0)
            stats.sensitivity = dict(zip(self.combiner.tasks, sensitivity.tolist(), strict=True))
        if not last:
            return stats
        meta = None
        if early:
            # At the weights of this inner forward, before the optimiser step: its losses are l(w; batch).
            self.replay.append(batch)
            meta = self.meta_step(batch, train_losses=stacked.detach(), train_rng_state=rng_state, train_record=record)
        if not self._optimizer_step(check):
            self._discard_group()
            if self.grad_scaler is not None:
                stats.skipped, stats.nonfinite = True, ["(fp16 overflow)"]
                return stats
            return self._skip(losses, ["(gradient)"], what="gradient")
        closed = self._close_group(meta_done=early, meta=meta)
        stats.meta = closed if closed is not None else next_meta
        return stats

    def _meta_reuses_inner_forward(self) -> bool:
        """Whether the optimiser step under way ends with a meta step that reuses its inner forward."""
        return (
            self.meta_train_batch == "current"
            and self.meta_source != "next"
            and self.meta_enabled
            and self.accumulate == 1
            and self.precision == "32"
            and "_original_forward" not in unwrap(self.model).__dict__  # Accelerate autocasts the forward
            and (self.inner_steps + 1) % self.meta_every == 0
        )

    def inner_loss(self, batch: Any) -> Tensor:
        """``L_aux`` on ``batch`` for a loop that owns backward and the optimiser step (the split API).

        The loop back-propagates the returned loss (scaled as it likes), steps its optimiser, and then calls
        :meth:`after_optimizer_step`; the micro-batches seen in between form that step's replay group.
        """
        if self.meta_source == "next":
            raise RuntimeError(
                "meta_source='next' reuses the inner forward inside step(); use step(), not inner_loss()"
            )
        self.steps += 1
        stacked = self._inner_forward(batch)
        self._group.append(batch)
        self.last_losses = self._task_means(stacked)
        return self.combiner(stacked)

    def after_optimizer_step(self) -> MetaStats | None:
        """Close the optimiser step: its micro-batches join the replay buffer, and every ``meta_every`` optimiser
        steps a meta step runs. Returns the meta step's statistics, or ``None``."""
        return self._close_group()

    def _close_group(self, meta_done: bool = False, meta: MetaStats | None = None) -> MetaStats | None:
        """:meth:`after_optimizer_step`; ``meta_done``: the step's meta step already ran (``meta``), before the
        optimiser step, and the group already joined the replay buffer."""
        if not self._group:
            raise RuntimeError("after_optimizer_step() follows an optimiser step on inner_loss(batch); none was seen")
        for p in self.combiner.parameters():
            p.grad = None  # phi is learned by meta steps only
        group = self._group[0] if len(self._group) == 1 else MicroBatches(self._group)
        self._group = []
        self.inner_steps += 1
        if meta_done:
            return meta
        self.replay.append(group)
        if self.meta_enabled and self.inner_steps % self.meta_every == 0:
            if self.meta_source == "next":
                self.meta_pending = True
                return None
            return self.meta_step(group if self.meta_train_batch == "current" else None)
        return None

    def hypergradient(
        self,
        train_batch: Any,
        meta_batch: Any,
        train_losses: Tensor | None = None,
        train_rng_state: Tensor | None = None,
        train_record: TrunkRecord | None = None,
        meta_losses: Tensor | None = None,
        meta_rng_state: Tensor | None = None,
        meta_record: TrunkRecord | None = None,
        *,
        scope: Sequence[str] | None = None,
        seed: int | None = None,
    ) -> tuple[list[Tensor], MetaStats]:
        """The estimated ``dL_pri/dphi`` (one tensor per meta parameter) and its statistics, changing nothing.

        The model, the combiner, their optimisers and the global random stream are left as they were: the forward
        passes draw their dropout and masks from the learner's own meta generator, which this call advances.
        Under DDP the hypergradient and the statistics are averaged over ranks.

        Args:
            train_batch: the train-side batch (of ``L_aux``).
            meta_batch: the meta batch (of ``L_pri``).
            train_losses: ``l(w; train_batch)`` at the current weights if already computed (the inner step's
                forward), drawn with the masks of ``train_rng_state``; a backend that needs it takes it as is.
            train_rng_state: the CPU generator state every pass over ``train_batch`` replays (its masks and
                dropout); default a seed of this meta step.
            train_record: the trunk record of the pass that computed ``train_losses`` (``cache_scope_inputs``).
            meta_losses, meta_rng_state, meta_record: the same for the meta batch; ``meta_losses`` keeps its graph
                (the inner forward's), which gives ``grad_w L_pri`` without a forward and is kept for the caller.
            scope: parameter names to differentiate through instead of the learner's scope (then without the
                scope cache).
            seed: the seed of this meta step's random stream instead of a fresh one from the meta generator (which
                is then not advanced): the same masks as an earlier call.
        """
        rng_states = {} if meta_rng_state is None else {id(meta_batch): meta_rng_state}
        if train_rng_state is not None:
            rng_states[id(train_batch)] = train_rng_state
        known = {} if meta_losses is None else {id(meta_batch): meta_losses.detach()}
        if train_losses is not None:
            known[id(train_batch)] = train_losses.detach()
        records = {} if meta_record is None else {id(meta_batch): meta_record}
        if train_record is not None:
            records[id(train_batch)] = train_record
        problem = MetaProblem(
            model=unwrap(self.model),
            combiner=self.combiner,
            param_names=self.scope if scope is None else list(scope),
            train_batch=train_batch,
            meta_batch=meta_batch,
            reg_weight=self.reg_weight,
            direct_term=self.direct_term,
            backend=self.backend,
            sample_train_batch=self.replay.sample,
            reduce=all_reduce_mean,
            lookahead_lr=float(self.optimizer.param_groups[0]["lr"]),
            fd_scale=self.fd_scale,
            reg_batch=self.reg_batch,
            known_losses=known,
            rng_states=rng_states,
            scope_cache=self.scope_cache if scope is None else None,
            trunk_records=records if scope is None else {},
            graph_losses={} if meta_losses is None else {id(meta_batch): meta_losses},
        )
        if seed is None:
            seed = int(torch.randint(0, 2**62, (), generator=self.meta_generator))
        self._last_meta_seed = seed
        # The math attention kernel is the one with double backward and forward-mode AD on CPU in torch; meta
        # steps run in full precision even inside a loop that autocasts (Lightning's bf16-mixed wraps the step,
        # Accelerate's mixed precision wraps the backbone's forward).
        with (
            torch.random.fork_rng(devices=[]),
            sdpa_kernel(SDPBackend.MATH),
            torch.autocast(self.device_type, enabled=False),
            original_forward(unwrap(self.model)),
        ):
            torch.manual_seed(seed)
            hypergrad = self.estimator(problem)
        norm = float(torch.sqrt(sum((g.double() ** 2).sum() for g in hypergrad)))
        names = ("primary_loss", "primary_task_loss", "regulariser")
        values = torch.tensor([problem.stats.get(name, math.nan) for name in names], dtype=torch.float64)
        averaged = dict(zip(names, all_reduce_mean([values])[0].tolist(), strict=True))
        stats = MetaStats(
            **averaged,
            hypergrad_norm=norm,
            extras={k: v for k, v in problem.stats.items() if k not in names},
        )
        return hypergrad, stats

    def meta_step(
        self,
        train_batch: Any | None = None,
        train_losses: Tensor | None = None,
        train_rng_state: Tensor | None = None,
        train_record: TrunkRecord | None = None,
        meta_batch: Any | None = None,
        meta_losses: Tensor | None = None,
        meta_rng_state: Tensor | None = None,
        meta_record: TrunkRecord | None = None,
    ) -> MetaStats:
        """One meta step: ``phi <- meta-optimiser step on the estimated dL_pri/dphi`` (Eq. 13).

        ``train_batch`` (default: one from the replay buffer), ``train_losses``, ``train_rng_state`` and
        ``train_record`` are those of :meth:`hypergradient`, and so are ``meta_losses``, ``meta_rng_state`` and
        ``meta_record`` for ``meta_batch`` (default: from the replay buffer or the meta split).
        """
        train_batch = self.replay.sample() if train_batch is None else train_batch
        if meta_batch is None:
            meta_batch = self.replay.sample() if self.meta_source != "split" else self._next_meta_batch()
        hypergrad, stats = self.hypergradient(
            train_batch,
            meta_batch,
            train_losses,
            train_rng_state,
            train_record,
            meta_losses,
            meta_rng_state,
            meta_record,
        )
        norm = stats.hypergrad_norm
        if not math.isfinite(norm) or not math.isfinite(stats.primary_loss):
            self._handle_nonfinite("meta step: the hypergradient or L_pri is not finite; the combiner is unchanged")
            self.skipped_meta_steps += 1
            stats.skipped = True
            return stats
        flat = torch.cat([g.detach().reshape(-1).double() for g in hypergrad])
        if self._previous_hypergrad is not None:
            stats.extras["hypergrad_cosine_prev"] = float(
                torch.nn.functional.cosine_similarity(flat, self._previous_hypergrad, dim=0)
            )
        self._previous_hypergrad = flat
        if self.scope_cosine_every and self.meta_steps % self.scope_cosine_every == 0:
            full, _ = self.hypergradient(
                train_batch, meta_batch, train_losses, train_rng_state, None, None, meta_rng_state, None,
                scope=self.full_scope, seed=self._last_meta_seed,
            )  # fmt: skip
            reference = torch.cat([g.detach().reshape(-1).double() for g in full])
            stats.extras["scope_cosine"] = float(torch.nn.functional.cosine_similarity(flat, reference, dim=0))
        check = self.lookahead_every > 0 and self.meta_steps % self.lookahead_every == 0
        if check:
            held_out = self._lookahead.next() if self._lookahead.available else self.replay.sample()
            before = {k: v.detach().clone() for k, v in self.combiner.state_dict().items()}
        meta_parameters = self.combiner.meta_parameters()
        self.meta_optimizer.zero_grad(set_to_none=True)
        for p, g in zip(meta_parameters, hypergrad, strict=True):
            p.grad = g.detach().to(p.dtype).clone()
        if self.clip_norm is not None:
            torch.nn.utils.clip_grad_norm_(meta_parameters, self.clip_norm)
        self.meta_optimizer.step()
        self.meta_optimizer.zero_grad(set_to_none=True)
        self.combiner.project_()
        if check:
            stats.extras.update(self.lookahead_check(train_batch, held_out, before))
        self.meta_steps += 1
        return stats

    def lookahead_check(self, train_batch: Any, held_out: Any, previous_combiner: Mapping[str, Tensor]) -> dict:
        """Did the last meta step help the primary task on held-out data?

        From the current weights ``w``, the inner step direction ``d(phi) = grad_w M(l(w; x_train); phi)`` is taken
        with the combiner before (``phi_0``) and after (``phi_1``) the meta step. For each, it reports the cosine
        between ``-d`` and the primary task's descent direction on the held-out batch, and the primary loss on that
        batch after a normalised look-ahead step ``w - s ||w|| d / ||d||`` (``s = 1e-3``). Normalising removes the
        loss scale, which AdamW ignores, so only the combination's direction is compared.

        Returns:
            ``lookahead/cos_before``, ``lookahead/cos_after``, ``lookahead/loss_before``, ``lookahead/loss_after``
            and ``lookahead/gain = loss_before - loss_after`` (positive: the meta step helped).
        """
        model = unwrap(self.model)
        names = self.scope
        named = dict(model.named_parameters())
        params = [named[n] for n in names]
        current = {k: v.detach().clone() for k, v in self.combiner.state_dict().items()}
        was_training = model.training
        model.eval()  # no dropout: the only difference between the two directions is the combiner
        try:
            with torch.random.fork_rng(devices=[]), sdpa_kernel(SDPBackend.MATH):
                seed = int(torch.randint(0, 2**62, (), generator=self._lookahead_generator))
                torch.manual_seed(seed)
                primary = _stacked_losses(model, self.combiner, held_out)[..., self.combiner.primary_index].mean()
                grad_primary = parameters_to_vector(grad_or_zeros(primary, params)).double()
                torch.manual_seed(seed + 1)
                stacked = _stacked_losses(model, self.combiner, train_batch)
                directions = {}
                for label, state in (("before", previous_combiner), ("after", current)):
                    self.combiner.load_state_dict(state)
                    loss = self.combiner(stacked)
                    directions[label] = parameters_to_vector(grad_or_zeros(loss, params, retain_graph=True)).double()
                norm_w = float(torch.sqrt(sum((p.detach().double() ** 2).sum() for p in params)))
                out: dict[str, float] = {}
                for label, direction in directions.items():
                    out[f"lookahead/cos_{label}"] = float(
                        torch.nn.functional.cosine_similarity(direction, grad_primary, dim=0)
                    )
                    step = 1e-3 * norm_w * direction / direction.norm().clamp_min(1e-30)
                    with torch.no_grad():
                        # in place, so that the parameters keep their storage (DDP buckets, optimiser state)
                        saved = [p.detach().clone() for p in params]
                        offsets = step.split([p.numel() for p in params])
                        for p, offset in zip(params, offsets, strict=True):
                            p.sub_(offset.view_as(p).to(p.dtype))
                        torch.manual_seed(seed)
                        out[f"lookahead/loss_{label}"] = float(
                            _stacked_losses(model, self.combiner, held_out)[..., self.combiner.primary_index].mean()
                        )
                        for p, value in zip(params, saved, strict=True):
                            p.copy_(value)
        finally:
            self.combiner.load_state_dict(current)
            model.train(was_training)
        out["lookahead/gain"] = out["lookahead/loss_before"] - out["lookahead/loss_after"]
        return out

    # -- state ---------------------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The learner's own state (combiner, meta optimiser, counters, replay buffer and its sampler); the model
        and its optimiser are the user's to save."""
        return {
            "combiner": self.combiner.state_dict(),
            "meta_optimizer": None if self.meta_optimizer is None else self.meta_optimizer.state_dict(),
            "counters": {
                k: getattr(self, k)
                for k in (
                    "steps",
                    "inner_steps",
                    "meta_steps",
                    "skipped_steps",
                    "skipped_meta_steps",
                    "overflow_steps",
                    "meta_pending",
                )
            },
            "replay_generator": self.replay.generator.get_state(),
            "meta_generator": self.meta_generator.get_state(),
            # Groups of micro-batches as plain dicts, so that the state loads with torch.load(weights_only=True).
            "replay_batches": [_plain(b) for b in self.replay.batches] if self.replay_in_checkpoint else [],
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.combiner.load_state_dict(state["combiner"])
        if self.meta_optimizer is not None and state["meta_optimizer"] is not None:
            self.meta_optimizer.load_state_dict(state["meta_optimizer"])
        for key, value in state["counters"].items():
            setattr(self, key, value)
        self.replay.generator.set_state(state["replay_generator"])
        if "meta_generator" in state:
            self.meta_generator.set_state(state["meta_generator"])
        self.replay.batches.clear()
        self.replay.batches.extend(_grouped(b) for b in state.get("replay_batches", []))

    # -- helpers -------------------------------------------------------------------------------------------------
    def _inner_forward(self, batch: Any) -> Tensor:
        """The stacked task losses of an inner step, the backbone under autocast when asked, in float32 or above."""
        self.model.train()
        self.combiner.train()
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision)
        with torch.autocast(self.device_type, dtype=dtype, enabled=dtype is not None):
            out = self.model(batch)
        if self.steps == 1:
            _require_grad(out)
        stacked = self.combiner.stack(out)
        return stacked.float() if stacked.dtype in (torch.float16, torch.bfloat16) else stacked

    def _optimizer_step(self, check: bool = True) -> bool:
        """Unscale, check (when ``check`` or with a grad scaler), clip and step; ``False`` if the step was skipped
        (non-finite gradients)."""
        scaler = self.grad_scaler
        if scaler is not None:
            scaler.unscale_(self.optimizer)
        finite = not any_process(not self._gradients_finite()) if check or scaler is not None else True
        if finite and self.max_grad_norm is not None:
            params = [p for group in self.optimizer.param_groups for p in group["params"] if p.grad is not None]
            torch.nn.utils.clip_grad_norm_(params, self.max_grad_norm)
        if scaler is not None:
            scaler.step(self.optimizer)  # skips the update itself when unscale_ found inf/nan
            scaler.update()
            if not finite:
                self.overflow_steps += 1
            return finite
        if not finite:
            self.optimizer.zero_grad(set_to_none=True)
            return False
        self.optimizer.step()
        return True

    def _discard_group(self) -> None:
        self._group = []
        self.optimizer.zero_grad(set_to_none=True)

    def _next_meta_batch(self) -> Any:
        return self._meta.next()

    def _task_means(self, stacked: Tensor) -> dict[str, float]:
        means = stacked.detach().mean(0) if stacked.dim() == 2 else stacked.detach()
        return dict(zip(self.combiner.tasks, means.tolist(), strict=True))

    def _gradients_finite(self) -> bool:
        grads = [p.grad for group in self.optimizer.param_groups for p in group["params"] if p.grad is not None]
        if not grads:
            return True
        return bool(torch.isfinite(torch.stack([torch.linalg.vector_norm(g) for g in grads])).all())

    def _handle_nonfinite(self, message: str) -> None:
        if self.on_nonfinite == "raise":
            raise FloatingPointError(message)
        warnings.warn(message, NonFiniteLossWarning, stacklevel=3)

    def _skip(self, losses: dict[str, float], bad: list[str], what: str) -> StepStats:
        self._handle_nonfinite(
            f"step {self.steps}: non-finite {what} in {bad}; the step is skipped and no weight changes"
        )
        self.skipped_steps += 1
        return StepStats(step=self.steps, losses=losses, combined=math.nan, skipped=True, nonfinite=bad)


def check_loop_options(
    accumulate: int, max_grad_norm: float | None, precision: str, grad_scaler: torch.amp.GradScaler | None
) -> None:
    """Validate the learner's loop options (one-line errors naming the option)."""
    if not isinstance(accumulate, int) or isinstance(accumulate, bool) or accumulate < 1:
        raise ValueError(f"accumulate must be a positive int, got {accumulate!r}")
    if max_grad_norm is not None and not max_grad_norm > 0:
        raise ValueError(f"max_grad_norm must be positive or None, got {max_grad_norm!r}")
    if precision not in ("32", "bf16", "fp16"):
        raise ValueError(f"precision must be '32', 'bf16' or 'fp16', got {precision!r}")
    if precision == "fp16" and grad_scaler is None:
        raise ValueError("precision='fp16' needs grad_scaler=torch.amp.GradScaler(...): fp16 gradients underflow")


def _stacked_losses(model: nn.Module, combiner: LossCombiner, batch: Any) -> Tensor:
    """The stacked task losses of a batch, or of a group of micro-batches (concatenated)."""
    if isinstance(batch, MicroBatches):
        return concat_task_losses([combiner.stack(model(part)) for part in batch])
    return combiner.stack(model(batch))


def _plain(record: Any) -> Any:
    return {"micro_batches": list(record)} if isinstance(record, MicroBatches) else record


def _grouped(record: Any) -> Any:
    if isinstance(record, dict) and set(record) == {"micro_batches"}:
        return MicroBatches(record["micro_batches"])
    return record


def _require_grad(outputs: Mapping[str, Tensor]) -> None:
    """Refuse task losses that cannot train anything (checked at the first step)."""
    frozen = [task for task, loss in outputs.items() if not loss.requires_grad]
    if frozen:
        raise ValueError(
            f"the losses of {frozen} do not require grad, so no step would change the model; unfreeze the "
            "parameters they depend on (requires_grad=True) and do not compute them under torch.no_grad()"
        )


__all__ = [
    "ESTIMATORS",
    "AuxiliaryLearner",
    "MetaStats",
    "NonFiniteLossWarning",
    "ReplayBuffer",
    "StepStats",
    "resolve_estimator",
    "select_parameters",
]
