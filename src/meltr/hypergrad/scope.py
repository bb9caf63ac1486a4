"""Hypergradient scopes: which backbone parameters ``w`` the hypergradient differentiates through.

``AuxiliaryLearner(hypergrad_scope=patterns)`` restricts ``w`` in Eq. (9)-(11) of MELTR to the parameters whose names
match ``patterns`` (``fnmatch`` patterns, see :func:`meltr.learner.select_parameters`). With the scope ``S`` the
identity estimator (Eq. 11) becomes

    dL_pri/dphi ~ d_phi L_pri - grad_phi <grad_{w_S} L_pri, grad_{w_S} L_aux>,

the full estimate with the primary gradient zeroed outside ``S``. It is cheaper (the backward and forward-mode passes
stop at the earliest scoped layer) and biased: it ignores how the combiner moves every weight outside ``S``.
:func:`last_blocks` builds the usual scope, the last blocks of every transformer stack of a backbone.

Scopes by name (:func:`resolve_scope`, what a recipe's ``hypergrad_scope`` field holds): ``last_blocks(N)`` (the last
``N`` blocks of every stack, their final norms and the heads), ``head`` (the prediction heads only), or any
``fnmatch`` pattern of parameter names; a list mixes them, a single string is one entry.
"""

from __future__ import annotations

import fnmatch
import re
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


_LAST_BLOCKS = re.compile(r"last_blocks\((\d+)\)")
HEAD_NAMES = ("head", "heads")


def scope_entries(scope: str | Sequence[str] | None) -> list[str] | None:
    """``scope`` as a list of entries, each checked without a model: a named scope with a malformed argument
    (``last_blocks(0)``, ``last_blocks(x)``) is an error here, before any training starts.

    Raises:
        ValueError: naming the bad entry and the accepted forms.
    """
    if scope is None:
        return None
    entries = [scope] if isinstance(scope, str) else list(scope)
    for entry in entries:
        if not isinstance(entry, str) or not entry:
            raise ValueError(f"hypergrad_scope entries are non-empty strings, got {entry!r}")
        if entry.startswith("last_blocks"):
            match = _LAST_BLOCKS.fullmatch(entry.replace(" ", ""))
            if match is None or int(match.group(1)) < 1:
                raise ValueError(
                    f"hypergrad_scope entry {entry!r}: write last_blocks(N) with N >= 1 (e.g. last_blocks(1)), "
                    "head, or fnmatch patterns of parameter names"
                )
    return entries


def resolve_scope(model: nn.Module, scope: str | Sequence[str] | None) -> list[str] | None:
    """The ``fnmatch`` patterns of a scope given by name, for ``model``'s own stacks and heads.

    ``last_blocks(N)`` becomes :func:`last_blocks(model, N) <last_blocks>`; ``head`` (or ``heads``) becomes
    :data:`DEFAULT_HEADS`; every other entry is a pattern and stays as it is. ``None`` (every parameter) stays
    ``None``.

    Raises:
        ValueError: a malformed entry (see :func:`scope_entries`), or a named scope ``model`` does not have.
    """
    entries = scope_entries(scope)
    if entries is None:
        return None
    patterns: list[str] = []
    for entry in entries:
        match = _LAST_BLOCKS.fullmatch(entry.replace(" ", ""))
        if match is not None:
            resolved = last_blocks(model, int(match.group(1)))
        elif entry in HEAD_NAMES:
            resolved = list(DEFAULT_HEADS)
        else:
            resolved = [entry]
        patterns += [p for p in resolved if p not in patterns]
    return patterns


__all__ = ["DEFAULT_HEADS", "last_blocks", "resolve_scope", "scope_entries", "transformer_stacks"]
