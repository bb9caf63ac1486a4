"""Hypergradient scopes: which backbone parameters ``w`` the hypergradient differentiates through.

``AuxiliaryLearner(hypergrad_scope=patterns)`` restricts ``w`` in Eq. (9)-(11) of MELTR to the parameters whose names
match ``patterns`` (``fnmatch`` patterns, see :func:`meltr.learner.select_parameters`). With the scope ``S`` the
identity estimator (Eq. 11) becomes

    dL_pri/dphi ~ d_phi L_pri - grad_phi <grad_{w_S} L_pri, grad_{w_S} L_aux>,

the full estimate with the primary gradient zeroed outside ``S``. It is cheaper (the backward and forward-mode passes
stop at the earliest scoped layer) and biased: it ignores how the combiner moves every weight outside ``S``.
:func:`last_blocks` builds the usual scope, the last blocks of every transformer stack of a backbone.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence

from torch import nn

from meltr.distributed import unwrap

DEFAULT_HEADS: tuple[str, ...] = ("*_head.*",)
"""Patterns of the prediction heads that :func:`last_blocks` adds by default (every module named ``*_head``)."""


def transformer_stacks(model: nn.Module) -> dict[str, int]:
    """The transformer stacks of ``model``: ``{module name: number of blocks}``, in registration order.

    A stack is any submodule with a ``blocks`` :class:`~torch.nn.ModuleList` (every
    :class:`meltr.models.Transformer`: UniVL's text, video and cross encoders and its decoder; the single encoder of
    Violet and All-in-one).
    """
    return {
        name: len(module.blocks)
        for name, module in unwrap(model).named_modules()
        if isinstance(getattr(module, "blocks", None), nn.ModuleList) and len(module.blocks) > 0
    }


def last_blocks(
    model: nn.Module,
    n: int = 1,
    *,
    stacks: Sequence[str] | None = None,
    heads: Sequence[str] = DEFAULT_HEADS,
) -> list[str]:
    """Scope patterns for the last ``n`` blocks of every transformer stack of ``model``, for ``hypergrad_scope``.

    Each selected stack contributes ``<stack>.blocks.<i>.*`` for its last ``n`` blocks (all of them if it has fewer)
    and its final norm ``<stack>.norm.*`` when it has one; ``heads`` adds the prediction heads. Every loss of the
    reference backbones then depends on some scoped parameter, so that every task keeps a hypergradient signal.

    Args:
        model: the backbone (or a DDP-wrapped one).
        n: blocks per stack, counted from the output end.
        stacks: restrict to these stacks (names as in :func:`transformer_stacks`, e.g. ``["cross_encoder",
            "decoder"]``); default every stack.
        heads: extra patterns added as they are (default every ``*_head`` module); ``()`` for none.

    Returns:
        ``fnmatch`` patterns, each matching at least one parameter of ``model``.

    Raises:
        ValueError: ``n < 1``, ``model`` has no transformer stack, ``stacks`` names an unknown stack, or a ``heads``
            pattern matches nothing.

    Example:
        >>> AuxiliaryLearner(model, combiner, optimizer, hypergrad_scope=last_blocks(model, 1))  # doctest: +SKIP
    """
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    found = transformer_stacks(model)
    if not found:
        raise ValueError(
            f"{type(unwrap(model)).__name__} has no transformer stack (a submodule with a `blocks` ModuleList); "
            "pass hypergrad_scope= parameter names or patterns instead"
        )
    chosen = list(found) if stacks is None else list(stacks)
    unknown = [s for s in chosen if s not in found]
    if unknown:
        raise ValueError(f"unknown transformer stack(s) {unknown}; the model has {list(found)}")
    names = [name for name, _ in unwrap(model).named_parameters()]
    patterns: list[str] = []
    for stack in chosen:
        depth = found[stack]
        patterns += [f"{stack}.blocks.{i}.*" for i in range(max(0, depth - n), depth)]
        norm = f"{stack}.norm."
        if any(name.startswith(norm) for name in names):
            patterns.append(f"{norm}*")
    for pattern in heads:
        if not any(fnmatch.fnmatchcase(name, pattern) for name in names):
            raise ValueError(f"heads pattern {pattern!r} matches no parameter of the model; pass heads=() to omit")
        patterns.append(pattern)
    return patterns


__all__ = ["DEFAULT_HEADS", "last_blocks", "transformer_stacks"]
