"""Where adapters go in a backbone, and the bookkeeping every injection shares.

A backbone declares its transformer stacks as ``adapter_sites`` (:class:`~meltr.models.layout.AdapterSite`: a path
and the modality of its tokens) and, if one stack carries both modalities, keeps ``token_layouts``
(:class:`~meltr.models.layout.TokenLayouts`), which tells an adapter inside a block which tokens of the current call
are text. Every method (MSTA, AdaptFormer, LoRA) reads those declarations through :func:`adapter_sites`, picks its
blocks with :func:`adapted_indices`, and freezes and restores the backbone with :func:`freeze` /
:class:`RestoreRequiresGrad`.
"""

from __future__ import annotations

from torch import nn

from meltr.models.layout import AdapterSite, TokenLayout, TokenLayouts


def adapter_sites(model: nn.Module, method: str) -> tuple[AdapterSite, ...]:
    """The sites ``model``'s class declares (``adapter_sites``).

    Raises:
        KeyError: the class declares none; the message says how to declare them.
    """
    sites = getattr(type(model), "adapter_sites", None)
    if not sites:
        raise KeyError(
            f"{method} does not know where the encoders of {type(model).__name__} are: the class declares no "
            "adapter_sites; give it adapter_sites = (AdapterSite('<path>', 'text'|'video'|'mixed'), ...) "
            "(meltr.models.layout), and token_layouts for a 'mixed' site"
        )
    return tuple(sites)


def token_layouts(model: nn.Module, method: str) -> TokenLayouts:
    """The layout stack of a backbone with a single-stream ('mixed') site.

    Raises:
        KeyError: the backbone keeps none.
    """
    layouts = getattr(model, "token_layouts", None)
    if not isinstance(layouts, TokenLayouts):
        raise KeyError(
            f"{method}: {type(model).__name__} has a 'mixed' adapter site but no token_layouts; its encoder call "
            "must push a TokenLayout (meltr.models.layout) so that an adapter knows which tokens are text"
        )
    return layouts


def adapted_indices(depth: int, first_block: int, owner: str, where: str = "an encoder") -> list[int]:
    """Blocks ``first_block..depth-1`` of a stack of ``depth`` blocks (a negative ``first_block`` counts from the
    last block).

    Raises:
        ValueError: no block is left; names ``owner`` (e.g. ``MSTAConfig.first_block``) and the valid range.
    """
    start = first_block + depth if first_block < 0 else first_block
    if not 0 <= start < depth:
        raise ValueError(
            f"{owner}={first_block} leaves no block to adapt in {where} of {depth} blocks; "
            f"use a value in [{-depth}, {depth - 1}]"
        )
    return list(range(start, depth))


def check_unadapted(model: nn.Module) -> None:
    """Raise a ``ValueError`` if ``model`` already carries an adapter (one method at a time)."""
    if getattr(model, "adapter_method", None) is not None:
        raise ValueError(f"the model already has a {model.adapter_method!r} adapter; unload_adapter(model) first")


def freeze(model: nn.Module) -> RestoreRequiresGrad:
    """Set ``requires_grad=False`` on every parameter; returns what puts the flags back as they were."""
    restore = RestoreRequiresGrad({n: p.requires_grad for n, p in model.named_parameters()})
    for p in model.parameters():
        p.requires_grad_(False)
    return restore


class RestoreRequiresGrad:
    """Undoes :func:`freeze` when an adapter is unloaded (a class, not a closure, so that an adapted model can still
    be pickled)."""

    def __init__(self, requires_grad: dict[str, bool]) -> None:
        self.requires_grad = requires_grad

    def __call__(self, model: nn.Module) -> None:
        for name, p in model.named_parameters():
            p.requires_grad_(self.requires_grad.get(name, True))


__all__ = [
    "AdapterSite",
    "RestoreRequiresGrad",
    "TokenLayout",
    "TokenLayouts",
    "adapted_indices",
    "adapter_sites",
    "check_unadapted",
    "freeze",
    "token_layouts",
]
