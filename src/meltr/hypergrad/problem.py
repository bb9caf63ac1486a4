"""One meta step's bi-level problem, as the hypergradient estimators see it.

Notation (MELTR Sec. 4.2): ``w`` the backbone parameters (restricted to a scope), ``phi`` the combiner's
parameters, ``l(w; x)`` the stacked task losses, ``L_aux(w, phi) = M(l(w; x_train); phi)`` on a train-side batch and
``L_pri(w, phi) = l_0(w; x_meta) + reg_weight * L_reg`` with ``L_reg = |M(l) - sum_t l_t|`` (Eq. 6-7), the regulariser
evaluated on the meta batch or, as the official UniVL and Violet code do, on the train-side batch. The
implicit hypergradient (Eq. 9, with the direct term of the regulariser) is

    dL_pri/dphi = d_phi L_pri - grad_w L_pri . H^-1 . grad_phi grad_w L_aux,    H = grad_w^2 L_aux.

Estimators differ in how they approximate ``q = H^-1 grad_w L_pri``; every one of them ends with the mixed term
``grad_phi <q, grad_w L_aux>``, computed by a :mod:`backend <meltr.hypergrad.backends>`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call

from meltr.batches import MicroBatches
from meltr.combine.base import LossCombiner
from meltr.contract import concat_task_losses, stack_task_losses
from meltr.hypergrad.backends import DEFAULT_FD_SCALE, DEFAULT_FORWARD_FD_SCALE, Backend, jvp
from meltr.hypergrad.cache import ScopeCache, TrunkRecord
from meltr.hypergrad.linalg import Params, dot, grad_or_zeros

# The defaults of a meta step, shared by MetaProblem and AuxiliaryLearner (one place each).
DEFAULT_REG_WEIGHT = 0.1
DEFAULT_LOOKAHEAD_LR = 1e-3  # torch's Adam / AdamW default lr; the learner passes its optimiser's lr
Reduce = Callable[[Sequence[Tensor]], list[Tensor]]


def _no_reduce(tensors: Sequence[Tensor]) -> list[Tensor]:
    return list(tensors)


def regulariser(combiner: LossCombiner, losses: Tensor) -> Tensor:
    """``L_reg = |M(l) - sum_t l_t|`` (Eq. 6); for per-sample losses the mean over samples of the per-sample value."""
    return (combiner.combine(losses) - losses.sum(-1)).abs().mean()


def primary_objective(combiner: LossCombiner, losses: Tensor, reg_weight: float) -> tuple[Tensor, Tensor, Tensor]:
    """``L_pri = l_0 + reg_weight * L_reg`` (Eq. 7, whose weight the paper calls gamma). Returns
    ``(L_pri, l_0, L_reg)``."""
    primary = losses[..., combiner.primary_index].mean()
    if reg_weight == 0:
        reg = torch.zeros((), dtype=losses.dtype, device=losses.device)
        return primary, primary, reg
    reg = regulariser(combiner, losses)
    return primary + reg_weight * reg, primary, reg


@dataclass
class MetaProblem:
    """Everything an estimator needs for one meta step.

    Args:
        model: the module whose ``forward(batch)`` returns ``{task: loss}`` (the unwrapped module under DDP).
        combiner: the loss combiner ``M(.; phi)``.
        param_names: names (in ``model.named_parameters()``) of the scoped backbone parameters ``w``.
        train_batch: the train-side batch of ``L_aux``.
        meta_batch: the meta batch of ``L_pri``.
        reg_weight: the weight of ``L_reg`` in ``L_pri`` (the paper's gamma).
        direct_term: include ``d_phi L_pri`` (the regulariser's direct dependence on ``phi``). The official code
            drops it; ``False`` reproduces that.
        backend: the function that computes the mixed term ``grad_phi <v, grad_w L_aux>``, ``backend(problem,
            vector, aux_grad)`` (one of :data:`~meltr.hypergrad.BACKENDS`; resolve a name there).
        sample_train_batch: draws a fresh train-side batch (StocBiO's Hessian-vector products).
        reduce: averages a list of tensors over processes (identity in a single process).
        lookahead_lr: step size of the inner optimiser, used by the unrolled (ITD) estimator.
        fd_scale: relative step ``||e v|| / ||w||`` of the finite-difference backends; ``None``: each backend's
            default (``DEFAULT_FD_SCALE`` central, ``DEFAULT_FORWARD_FD_SCALE`` one-sided).
        reg_batch: the batch ``L_reg`` is evaluated on: ``"meta"`` (with ``l_0``) or ``"train"`` (the train-side
            batch, as the official code does; it costs one more forward and backward when ``reg_weight > 0``).
        known_losses: ``{id(batch): l(w; batch)}``, task losses at the current ``w`` that a caller already computed
            (the inner step's forward); :meth:`losses_at_w` returns them instead of running a forward.
        rng_states: ``{id(batch): CPU generator state}``: the passes over such a batch replay that state (the one
            its known losses were drawn with) instead of a seed of this meta step, so that they see the same masks.
        scope_cache: caches the trunk below the scope (:mod:`meltr.hypergrad.cache`): the first pass over a batch
            records it, the later passes (at other scoped weights) replay it; ``None``: every pass runs in full.
        trunk_records: ``{id(batch): record}``, trunk records of passes a caller already made at the current
            weights with the batch's replayed generator state (the inner step's forward).
        graph_losses: ``{id(meta_batch): l(w; meta_batch)}`` with its autograd graph, from a forward a caller made
            at the current weights (the next inner step's, ``meta_source="next"``): ``grad_w L_pri`` is taken
            through it (the graph is kept for the caller) instead of a forward of its own.
    """

    model: nn.Module
    combiner: LossCombiner
    param_names: Sequence[str]
    train_batch: Any
    meta_batch: Any
    reg_weight: float = DEFAULT_REG_WEIGHT
    direct_term: bool = True
    backend: Backend = jvp
    sample_train_batch: Callable[[], Any] | None = None
    reduce: Reduce = _no_reduce
    lookahead_lr: float = DEFAULT_LOOKAHEAD_LR
    fd_scale: float | None = None
    reg_batch: str = "meta"
    known_losses: dict[int, Tensor] = field(default_factory=dict)
    rng_states: dict[int, Tensor] = field(default_factory=dict)
    scope_cache: ScopeCache | None = None
    trunk_records: dict[int, TrunkRecord] = field(default_factory=dict)
    graph_losses: dict[int, Tensor] = field(default_factory=dict)
    stats: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not callable(self.backend):
            raise TypeError(
                f"MetaProblem.backend must be a backend function, got {self.backend!r}; resolve a name with "
                "meltr.hypergrad.BACKENDS.get(name)"
            )
        if self.reg_batch not in ("meta", "train"):
            raise ValueError(f"reg_batch must be 'meta' or 'train', got {self.reg_batch!r}")
        named = dict(self.model.named_parameters())
        missing = [n for n in self.param_names if n not in named]
        if missing:
            raise ValueError(f"hypergradient scope names unknown parameters: {missing[:5]}")
        self.params: Params = [named[n] for n in self.param_names]
        # One name per storage slot (module, attribute) of every scoped parameter. A parameter reached under two
        # names, as a module shared by two parents (an adapter's shared bottleneck) is, has one slot: naming it twice
        # makes functional_call swap the slot twice and restore the wrong tensor, which unties the module.
        slots: dict[int, dict[tuple[int, str], str]] = {}
        for name, parameter in self.model.named_parameters(remove_duplicate=False):
            path, _, attribute = name.rpartition(".")
            module = self.model.get_submodule(path)
            slots.setdefault(id(parameter), {}).setdefault((id(module), attribute), name)
        self._aliases = [list(slots[id(p)].values()) for p in self.params]
        self.meta_params: Params = self.combiner.meta_parameters()
        # Every forward pass of one batch replays the same random stream, so that the random masks of a backbone's
        # pretext losses are identical across the several passes an estimator makes over that batch.
        self._seeds: dict[int, int] = {}

    def seed_of(self, batch: Any) -> int:
        """The seed of the random stream replayed by every forward pass over ``batch`` in this meta step."""
        key = id(batch)
        if key not in self._seeds:
            self._seeds[key] = int(torch.randint(0, 2**62, ()).item())
        return self._seeds[key]

    # -- losses --------------------------------------------------------------------------------------------------
    def task_losses(self, batch: Any, params: Sequence[Tensor] | None = None, record: bool = True) -> Tensor:
        """The stacked task losses ``l(w; batch)`` in the combiner's order, optionally at other values of ``w``.

        With a ``scope_cache``, the first pass over ``batch`` records its trunk (unless ``record`` is off: inside
        a functorch transform) and the later ones replay it.
        """
        if isinstance(batch, MicroBatches):  # the micro-batches of one accumulated optimiser step
            return concat_task_losses([self.task_losses(part, params, record) for part in batch])
        state = self.rng_states.get(id(batch))
        seed = self.seed_of(batch) if state is None else 0
        with torch.random.fork_rng(devices=[]):
            if state is None:
                torch.manual_seed(seed)
            else:
                torch.set_rng_state(state)
            out = self._forward(batch, params, record)
        losses = stack_task_losses(out, self.combiner.tasks)
        if params is None:
            self.known_losses[id(batch)] = losses.detach()
        return losses

    def _call(self, batch: Any, params: Sequence[Tensor] | None, others: dict[int, Tensor] | None = None) -> Any:
        """The model's forward at ``params`` for the scoped weights (and ``others`` by parameter id)."""
        if params is None and others is None:
            return self.model(batch)
        at = self.params if params is None else params
        replaced = {name: value for names, value in zip(self._aliases, at, strict=True) for name in names}
        for name, parameter in self.model.named_parameters(remove_duplicate=False):
            if others is not None and name not in replaced:
                replaced[name] = others.get(id(parameter), parameter)
        return functional_call(self.model, replaced, (batch,), tie_weights=False)

    def _forward(self, batch: Any, params: Sequence[Tensor] | None, record: bool) -> Any:
        cache = self.scope_cache
        if cache is None:
            return self._call(batch, params)
        known = self.trunk_records.get(id(batch))
        if known is not None:
            with cache.replaying(known):
                return self._call(batch, params)
        if not record:
            return self._call(batch, params)
        at = self.params if params is None else list(params)
        if torch.is_grad_enabled() and all(t.requires_grad for t in at):
            with cache.recording(at) as trunk:
                out = self._call(batch, params)
        else:
            # Dependence on w_S shows in the graph only if w_S requires grad: a graph of the scoped part alone,
            # with every other weight detached, dropped once the pass is recorded.
            leaves = [t.detach().requires_grad_(True) for t in at]
            frozen = {id(p): p.detach() for p in self.model.parameters()}
            with torch.enable_grad(), cache.recording(leaves) as trunk:
                out = self._call(batch, leaves, others=frozen)
            out = {k: v.detach() if isinstance(v, Tensor) else v for k, v in out.items()}
        self.trunk_records[id(batch)] = trunk
        return out

    def losses_at_w(self, batch: Any) -> Tensor:
        """``l(w; batch)`` without a graph: the known value (a forward already made at this ``w`` with these masks),
        else one no-grad forward."""
        known = self.known_losses.get(id(batch))
        if known is not None:
            return known
        with torch.no_grad():
            return self.task_losses(batch)

    def aux_gradient(self, batch: Any | None = None, create_graph: bool = True) -> Params:
        """``grad_w L_aux`` on the train-side batch (or ``batch``), with its graph for second-order use."""
        losses = self.task_losses(self.train_batch if batch is None else batch)
        return grad_or_zeros(self.combiner(losses), self.params, create_graph=create_graph)

    def primary_gradients(self, params: Sequence[Tensor] | None = None) -> tuple[Params, Params]:
        """``(grad_w L_pri, d_phi L_pri)`` on the meta batch, averaged over processes.

        ``d_phi L_pri`` is zero when ``direct_term`` is off. ``params`` evaluates ``L_pri`` at other ``w`` (the
        look-ahead point of the unrolled estimator); the gradient is then with respect to those tensors.
        """
        at = self.params if params is None else list(params)
        shared = self.graph_losses.get(id(self.meta_batch)) if params is None else None
        losses = self.task_losses(self.meta_batch, None if params is None else at) if shared is None else shared
        if self.reg_batch == "train" and self.reg_weight > 0:
            primary, _, _ = primary_objective(self.combiner, losses, 0.0)
            reg = regulariser(self.combiner, self.task_losses(self.train_batch, None if params is None else at))
            total = primary + self.reg_weight * reg
        else:
            total, primary, reg = primary_objective(self.combiner, losses, self.reg_weight)
        self.stats.update(
            primary_loss=float(total.detach()),
            primary_task_loss=float(primary.detach()),
            regulariser=float(reg.detach()),
        )
        targets = at + (self.meta_params if self.direct_term else [])
        grads = grad_or_zeros(total, targets, retain_graph=True if shared is not None else None)
        v, direct = grads[: len(at)], grads[len(at) :]
        if not self.direct_term:
            direct = [torch.zeros_like(p) for p in self.meta_params]
        reduced = self.reduce(v + direct)
        return reduced[: len(v)], reduced[len(v) :]

    def hvp(self, aux_grad: Params, vector: Params) -> Params:
        """``H vector`` with ``H = grad_w^2 L_aux``, from a gradient built with ``create_graph=True``
        (reverse-over-reverse: a backward through that gradient's graph, which is kept for the next product)."""
        return self.reduce(grad_or_zeros(aux_grad, self.params, grad_outputs=vector, retain_graph=True))

    def hvp_forward(self, vector: Params, batch: Any | None = None) -> Params:
        """``H vector`` by forward-over-reverse: the forward-mode derivative of ``grad_w L_aux`` along ``vector``
        (``torch.func.jvp`` of ``torch.func.grad``), on the train-side batch or ``batch``.

        Exact like :meth:`hvp`, but it needs no ``create_graph`` gradient and keeps no graph between products: each
        product is one forward and backward carrying tangents.
        """
        batch = self.train_batch if batch is None else batch
        combiner = self.combiner

        def aux_loss(*params: Tensor) -> Tensor:
            return combiner(self.task_losses(batch, params, record=False))

        count = len(self.params)
        primals = tuple(p.detach() for p in self.params)
        tangents = tuple(v.detach().to(p.dtype) for v, p in zip(vector, primals, strict=True))
        # no reverse graph outside the transforms: phi is a constant here
        with torch.no_grad():
            _, product = torch.func.jvp(torch.func.grad(aux_loss, argnums=tuple(range(count))), primals, tangents)
        return self.reduce(list(product))

    def mixed(self, vector: Params, aux_grad: Params | None = None) -> Params:
        """``grad_phi <vector, grad_w L_aux>`` by the problem's backend, averaged over processes."""
        return self.reduce(self.backend(self, vector, aux_grad))


__all__ = [
    "DEFAULT_FD_SCALE",
    "DEFAULT_FORWARD_FD_SCALE",
    "MetaProblem",
    "Params",
    "dot",
    "grad_or_zeros",
    "primary_objective",
    "regulariser",
]
