"""Activations cached at the scope boundary (``cache_scope_inputs``): the forward passes of a meta step run only
through the hypergradient scope.

With a scope ``S`` (:mod:`meltr.hypergrad.scope`) the passes of a meta step over one batch differ only in the scoped
weights ``w_S`` (the perturbed forwards of the finite-difference backends, the forward-mode pass of ``jvp``, the
look-ahead forward of the unrolled estimator). Every computation that depends neither on ``w_S`` nor on anything
computed from ``w_S`` gives the same values in all of them: the *trunk*. This module records the outputs of the trunk
once, in the first pass over a batch, and returns them in the later passes instead of recomputing them, so a later
pass costs only the scoped part of the network (and the parent modules' glue code).

What is cached, for any backbone: the calls of the *trunk modules*, the largest submodules holding parameters none
of which is in ``S`` (for ``last_blocks(1)`` on a transformer stack: the embeddings and every block but the last),
whose tensor inputs do not depend on ``w_S`` in that pass. The dependence is read off the autograd graph of the
recording pass (an input depends on ``w_S`` iff its graph reaches a scoped leaf), so a trunk module fed by a scoped
one (UniVL's cross encoder after the text encoder's last block) is recomputed: the result is exact whatever the
wiring. Each cached call also keeps the CPU generator state after it; a later pass restores that state where it
skips the call, so the random masks and dropout drawn after it are the recording pass's, as without the cache (the
CPU generator, the one the meta step's passes replay; a device generator is replayed by neither).

Requirements (checked, with a one-line error naming the option): every pass over a batch makes the same sequence of
trunk-module calls with inputs of the same shapes (no data-dependent control flow across passes); the cached
outputs are not modified in place later in the forward. Backbones: every reference backbone of
:func:`meltr.models.build_backbone` (UniVL, VIOLET, All-in-one, VATT) calls its embeddings and blocks as modules;
how much is cached depends on the wiring (single-stream VIOLET / All-in-one: everything below the last block;
UniVL: the text and video encoders' blocks below their last one and the frame stems, as its cross encoder and
decoder take the scoped encoders' outputs).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils._pytree import tree_flatten, tree_map

OPTION = "cache_scope_inputs"


def trunk_modules(model: nn.Module, scoped: Iterable[Tensor]) -> list[nn.Module]:
    """The largest submodules of ``model`` that hold parameters, none of them in ``scoped`` (by identity).

    Raises:
        ValueError: every module with parameters holds a scoped one (the scope is the whole model): nothing to cache.
    """
    scoped_ids = {id(p) for p in scoped}
    found: list[nn.Module] = []
    seen: set[int] = set()

    def visit(module: nn.Module) -> None:
        if id(module) in seen:
            return
        seen.add(id(module))
        params = list(module.parameters())
        if not params:
            return
        if not any(id(p) in scoped_ids for p in params):
            found.append(module)
            return
        for child in module.children():
            visit(child)

    visit(model)
    if not found:
        raise ValueError(
            f"{OPTION}: every module of {type(model).__name__} holds a parameter of the hypergradient scope, so "
            "nothing lies below the scope; set hypergrad_scope (e.g. last_blocks(1)) or turn the option off"
        )
    return found


@dataclass
class _Call:
    signature: tuple
    output: Any = None  # detached outputs; None for a call that depends on the scope (recomputed)
    versions: tuple = ()
    rng_after: Tensor | None = None

    @property
    def cached(self) -> bool:
        return self.rng_after is not None


@dataclass
class TrunkRecord:
    """The trunk-module calls of one recorded pass over one batch, in call order per module."""

    calls: dict[int, list[_Call]] = field(default_factory=dict)

    @property
    def cached_calls(self) -> int:
        return sum(call.cached for calls in self.calls.values() for call in calls)


def _tensors(tree: Any) -> list[Tensor]:
    return [leaf for leaf in tree_flatten(tree)[0] if isinstance(leaf, Tensor)]


def _signature(args: tuple, kwargs: dict) -> tuple:
    return tuple(
        (tuple(leaf.shape), leaf.dtype) if isinstance(leaf, Tensor) else type(leaf).__name__
        for leaf in tree_flatten((args, kwargs))[0]
    )


class _Dependence:
    """Whether a tensor's autograd graph reaches one of the given leaves (memoised over one pass)."""

    def __init__(self, leaves: Iterable[Tensor]) -> None:
        self.leaf_ids = {id(t) for t in leaves}
        self.clean: set[Any] = set()  # graph nodes known not to reach a leaf

    def __call__(self, tensor: Tensor) -> bool:
        if not tensor.requires_grad:
            return False
        if tensor.grad_fn is None:
            return id(tensor) in self.leaf_ids
        stack, visited = [tensor.grad_fn], {tensor.grad_fn}
        while stack:
            node = stack.pop()
            if node in self.clean:
                continue
            variable = getattr(node, "variable", None)
            if variable is not None and id(variable) in self.leaf_ids:
                return True
            for child, _ in node.next_functions:
                if child is not None and child not in visited:
                    visited.add(child)
                    stack.append(child)
        self.clean |= visited
        return False


class ScopeCache:
    """Records the trunk of a pass over a batch and replays it in later passes (see the module docstring).

    Args:
        model: the (unwrapped) backbone.
        scoped: the scoped parameters ``w_S``.
    """

    def __init__(self, model: nn.Module, scoped: Sequence[Tensor]) -> None:
        self.model = model
        self.modules = trunk_modules(model, scoped)

    @contextlib.contextmanager
    def _patched(self, make_forward) -> Iterator[None]:
        saved = []
        for module in self.modules:
            had = "forward" in module.__dict__
            saved.append((module, had, module.__dict__.get("forward")))
            module.forward = make_forward(module, module.forward)
        try:
            yield
        finally:
            for module, had, previous in saved:
                if had:
                    module.forward = previous
                else:
                    del module.forward

    @contextlib.contextmanager
    def recording(self, leaves: Sequence[Tensor]) -> Iterator[TrunkRecord]:
        """Record the trunk calls of the pass run inside; ``leaves`` are the tensors standing for ``w_S`` in that
        pass (they must require grad and grad mode must be on, so that dependence on them shows in the graph)."""
        record = TrunkRecord()
        depends = _Dependence(leaves)
        depth = [0]

        def make_forward(module: nn.Module, original):
            calls = record.calls.setdefault(id(module), [])

            def forward(*args, **kwargs):
                if depth[0]:  # a trunk module called inside another (a shared submodule): part of the outer call
                    return original(*args, **kwargs)
                live = any(depends(t) for t in _tensors((args, kwargs)))
                depth[0] += 1
                try:
                    out = original(*args, **kwargs)
                finally:
                    depth[0] -= 1
                call = _Call(_signature(args, kwargs))
                if not live:
                    call.output = tree_map(lambda x: x.detach() if isinstance(x, Tensor) else x, out)
                    call.versions = tuple(t._version for t in _tensors(call.output))
                    call.rng_after = torch.get_rng_state()
                calls.append(call)
                return out

            return forward

        with self._patched(make_forward):
            yield record
        for calls in record.calls.values():
            for call in calls:  # an output modified in place after the call is not what a replay must return
                if call.cached and tuple(t._version for t in _tensors(call.output)) != call.versions:
                    call.output, call.rng_after = None, None

    @contextlib.contextmanager
    def replaying(self, record: TrunkRecord) -> Iterator[None]:
        """Run the pass inside with the recorded trunk calls returned instead of computed."""
        position: dict[int, int] = {}

        def make_forward(module: nn.Module, original):
            calls = record.calls.get(id(module), [])

            def forward(*args, **kwargs):
                index = position.get(id(module), 0)
                position[id(module)] = index + 1
                if index >= len(calls) or calls[index].signature != _signature(args, kwargs):
                    raise RuntimeError(
                        f"{OPTION}: this forward pass calls {type(module).__name__} differently from the recorded "
                        "pass over the same batch (data-dependent control flow?); turn the option off for this backbone"
                    )
                call = calls[index]
                if not call.cached:
                    return original(*args, **kwargs)
                if tuple(t._version for t in _tensors(call.output)) != call.versions:
                    raise RuntimeError(
                        f"{OPTION}: the cached output of {type(module).__name__} was modified in place by the forward "
                        "pass; turn the option off for this backbone"
                    )
                torch.set_rng_state(call.rng_after)
                return call.output

            return forward

        with self._patched(make_forward):
            yield
        for calls in record.calls.values():
            for call in calls:
                if call.cached and tuple(t._version for t in _tensors(call.output)) != call.versions:
                    raise RuntimeError(
                        f"{OPTION}: a cached trunk output was modified in place by the forward pass; turn the option "
                        "off for this backbone"
                    )


__all__ = ["OPTION", "ScopeCache", "TrunkRecord", "trunk_modules"]
