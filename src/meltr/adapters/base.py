"""What every adapter shares: the registry, the block wrapper, and the peft-like functions over an adapted model.

An adapter method is injected by wrapping transformer blocks in :class:`AdaptedBlock` (``forward = block(x) +
scale * adapter(x)``, the parallel form of Eq. (1) of MSTA) and freezing everything else; LoRA's layers are peft's
own tuner layers (a wrapped ``base_layer`` and the adapter's weights). The functions here work on any model so
adapted, whatever the method: they find the wrappers (:func:`adapter_layers`), never a method's internals.

Merging: an adapter may offer ``merge_into(block)`` / ``unmerge_from(block)`` (it must then be exactly linear in the
block's weights); one that cannot be merged raises :class:`AdapterMergeError` from both, and the model is unchanged.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from meltr._registry import Registry

ADAPTERS: Registry[nn.Module] = Registry("adapter")
"""Adapter methods: ``ADAPTERS.build(name, model, config=None, **overrides)`` injects one and returns the model."""

ADAPTER_FILE_FORMAT = 1


class AdapterMergeError(RuntimeError):
    """The adapter cannot be folded into the frozen weights (see the adapter's ``merge_into``)."""


class AdaptedBlock(nn.Module):
    """A frozen transformer block with an adapter in parallel: ``block(x, *args) + scale * adapter(x)``.

    The wrapped block's parameters keep their names under ``block.``; the adapter's live under ``adapter.``.

    Args:
        block: the original (frozen) block; called with every argument the wrapper gets.
        adapter: a module whose ``forward(x)`` maps the block's input ``[..., L, d]`` to ``[..., L, d]``.
        scale: ``lambda``, the strength of the adapter's output.
    """

    def __init__(self, block: nn.Module, adapter: nn.Module, scale: float) -> None:
        super().__init__()
        self.block = block
        self.adapter = adapter
        self.scale = scale
        self.adapter_enabled = True

    def forward(self, x: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        out = self.block(x, *args, **kwargs)
        if not self.adapter_enabled:
            return out
        return out + self.scale * self.adapter(x)


def adapted_blocks(model: nn.Module) -> list[tuple[str, AdaptedBlock]]:
    """Every :class:`AdaptedBlock` of ``model`` with its module name, in registration order."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, AdaptedBlock)]


def _is_tuner_layer(module: nn.Module) -> bool:
    """A peft tuner layer (LoRA's): it wraps ``get_base_layer()`` and switches with ``enable_adapters``."""
    return callable(getattr(module, "get_base_layer", None)) and callable(getattr(module, "enable_adapters", None))


def adapter_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Every adapter wrapper of ``model`` with its module name: :class:`AdaptedBlock` s and peft's tuner layers."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, AdaptedBlock) or _is_tuner_layer(m)]


def _wrapped(layer: nn.Module) -> tuple[str, nn.Module]:
    """The original module a wrapper holds and its attribute name."""
    return ("block", layer.block) if isinstance(layer, AdaptedBlock) else ("base_layer", layer.get_base_layer())


def _adapter_parameters(layer: nn.Module) -> list[Tensor]:
    if isinstance(layer, AdaptedBlock):
        return list(layer.adapter.parameters())
    return [p for n, p in layer.named_parameters() if not n.startswith("base_layer.")]


def _enabled(layer: nn.Module) -> bool:
    return layer.adapter_enabled if isinstance(layer, AdaptedBlock) else not layer.disable_adapters


def _set_enabled(layer: nn.Module, enabled: bool) -> None:
    if isinstance(layer, AdaptedBlock):
        layer.adapter_enabled = enabled
    else:
        layer.enable_adapters(enabled)


def _require_adapted(model: nn.Module) -> list[tuple[str, nn.Module]]:
    blocks = adapter_layers(model)
    if not blocks:
        raise ValueError(
            f"{type(model).__name__} has no adapter; inject one first, e.g. inject_msta(model, MSTAConfig())"
        )
    return blocks


def adapter_parameter_names(model: nn.Module) -> list[str]:
    """Names (as in ``model.named_parameters()``, so shared parameters appear once) of the adapters' parameters."""
    ids = {id(p) for _, layer in _require_adapted(model) for p in _adapter_parameters(layer)}
    return [name for name, p in model.named_parameters() if id(p) in ids]


def adapter_state_dict(model: nn.Module) -> dict[str, Tensor]:
    """The adapters' parameters only, by their names in ``model.named_parameters()`` (detached, not cloned)."""
    named = dict(model.named_parameters())
    return {name: named[name].detach() for name in adapter_parameter_names(model)}


def backbone_state_dict(model: nn.Module) -> dict[str, Tensor]:
    """The state dict of the frozen backbone under its original names (no adapter key, no ``block.`` level).

    An adapted model's ``backbone_state_dict`` has exactly the keys of the model before injection, so it can be
    compared with, or saved as, a plain backbone checkpoint.
    """
    wrappers = {name: _wrapped(layer)[0] + "." for name, layer in adapter_layers(model)}
    state = {}
    for key, value in model.state_dict().items():
        owner = next((w for w in wrappers if key.startswith(w + ".")), None)
        if owner is None:
            state[key] = value
            continue
        rest = key[len(owner) + 1 :]
        if rest.startswith(wrappers[owner]):
            state[f"{owner}.{rest[len(wrappers[owner]) :]}"] = value
    return state


@dataclass(frozen=True)
class TrainableParameters:
    """How many parameters train, of how many."""

    trainable: int
    total: int

    @property
    def percent(self) -> float:
        return 100.0 * self.trainable / self.total if self.total else 0.0

    def __str__(self) -> str:
        return f"trainable params: {self.trainable:,} || all params: {self.total:,} || trainable%: {self.percent:.4f}"


def trainable_parameters(model: nn.Module) -> TrainableParameters:
    """Count the parameters with ``requires_grad`` against all of them (shared parameters counted once)."""
    params = list(model.parameters())
    return TrainableParameters(sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params))


def disable_adapter(model: nn.Module) -> nn.Module:
    """Switch every adapter off: the model then computes exactly the frozen backbone's outputs."""
    for _, layer in _require_adapted(model):
        _set_enabled(layer, False)
    return model


def enable_adapter(model: nn.Module) -> nn.Module:
    """Switch every adapter back on."""
    for _, layer in _require_adapted(model):
        _set_enabled(layer, True)
    return model


@contextlib.contextmanager
def adapter_disabled(model: nn.Module) -> Iterator[nn.Module]:
    """``with adapter_disabled(model): ...`` runs the frozen backbone, then restores each adapter's previous state."""
    blocks = _require_adapted(model)
    before = [_enabled(layer) for _, layer in blocks]
    disable_adapter(model)
    try:
        yield model
    finally:
        for (_, layer), enabled in zip(blocks, before, strict=True):
            _set_enabled(layer, enabled)


def merge_adapter(model: nn.Module) -> nn.Module:
    """Fold every adapter into its block's weights (for adapters that are linear in them).

    Raises:
        AdapterMergeError: the adapter cannot be merged (MSTA: see :meth:`meltr.adapters.msta.MSTA.merge_into`);
            nothing is changed.
    """
    for _, layer in _require_adapted(model):
        if isinstance(layer, AdaptedBlock):
            layer.adapter.merge_into(layer.block)  # an unmergeable adapter raises before any weight changes
        else:
            layer.merge()  # peft's LoRA: W <- W + (alpha / r) B A
    return model


def unmerge_adapter(model: nn.Module) -> nn.Module:
    """Undo :func:`merge_adapter`.

    Raises:
        AdapterMergeError: the adapter cannot be merged, so there is nothing to unmerge.
    """
    for _, layer in _require_adapted(model):
        if isinstance(layer, AdaptedBlock):
            layer.adapter.unmerge_from(layer.block)
        else:
            layer.unmerge()
    return model


def _adapted_root(model: nn.Module) -> nn.Module | None:
    """The module an adapter was injected into: ``model`` itself or the first submodule that carries one (e.g. the
    backbone inside a :class:`~meltr.adapters.ConsistencyTask`)."""
    return next((m for m in model.modules() if getattr(m, "adapter_method", None) is not None), None)


def save_adapter(model: nn.Module, path: str | Path) -> None:
    """Save the adapter's weights (only them) and its config to ``path``.

    The file is a ``torch.save`` of ``{"format", "adapter": name, "config": {...}, "state": {name: tensor}}``, or,
    for a ``.safetensors`` path, a safetensors file of ``state`` whose metadata hold the rest (as JSON);
    ``state`` holds exactly :func:`adapter_parameter_names` of the adapted backbone (names relative to it, so a file
    saved from a wrapper such as :class:`~meltr.adapters.ConsistencyTask` loads into a bare backbone).
    """
    root = _adapted_root(model)
    if root is None:
        _require_adapted(model)  # raises with the fix
        raise ValueError("the model's adapter blocks carry no adapter_method; inject adapters with inject_* functions")
    model, method, config = root, root.adapter_method, root.adapter_config
    payload = {
        "format": ADAPTER_FILE_FORMAT,
        "adapter": method,
        "config": dataclasses.asdict(config),
        "state": {k: v.detach().contiguous().clone() for k, v in adapter_state_dict(model).items()},
    }
    if Path(path).suffix == ".safetensors":
        from safetensors.torch import save_file

        metadata = {key: json.dumps(value) for key, value in payload.items() if key != "state"}
        save_file(payload["state"], str(path), metadata=metadata)
        return
    torch.save(payload, path)


def load_adapter(model: nn.Module, path: str | Path) -> nn.Module:
    """Load adapter weights saved by :func:`save_adapter` into ``model`` (or the adapted backbone inside it).

    A model without an adapter gets one injected first, with the saved method and config. A model that has one must
    have the same method and config. Returns ``model``.

    Raises:
        ValueError: the saved method or config differs from the model's, or the saved keys are not exactly the
            model's adapter parameters.
    """
    saved = _read_adapter_file(Path(path))
    if saved.get("format") != ADAPTER_FILE_FORMAT:
        raise ValueError(f"{path} is not an adapter file of format {ADAPTER_FILE_FORMAT} (see save_adapter)")
    target = _adapted_root(model)
    if target is None:
        target = ADAPTERS.build(saved["adapter"], model, **saved["config"])
    config = dataclasses.asdict(target.adapter_config)
    if target.adapter_method != saved["adapter"] or config != _as_fields(saved["config"], config):
        raise ValueError(
            f"the model has adapter {target.adapter_method!r} with config {config}, the file {path} holds "
            f"{saved['adapter']!r} with {saved['config']}; load it into a model injected with the file's config "
            "(or into a model without an adapter)"
        )
    named = dict(target.named_parameters())
    expected = set(adapter_parameter_names(target))
    if set(saved["state"]) != expected:
        missing, extra = sorted(expected - set(saved["state"])), sorted(set(saved["state"]) - expected)
        raise ValueError(f"adapter keys do not match: missing {missing[:5]}, unexpected {extra[:5]}")
    with torch.no_grad():
        for name, value in saved["state"].items():
            named[name].copy_(value)
    return model


def _read_adapter_file(path: Path) -> dict[str, Any]:
    """The record of an adapter file (``torch.save`` read with ``weights_only=True``, or safetensors)."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file, safe_open

        with safe_open(str(path), framework="pt") as file:
            metadata = file.metadata() or {}
        return {**{k: json.loads(v) for k, v in metadata.items()}, "state": load_file(str(path))}
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)  # never unpickles code
    except Exception as error:
        raise ValueError(f"{path}: not a readable adapter file ({str(error).splitlines()[0]})") from None
    return saved if isinstance(saved, dict) else {}


def _as_fields(saved: dict[str, Any], like: dict[str, Any]) -> dict[str, Any]:
    """``saved`` with lists turned back into tuples where the model's config has tuples (a round trip of asdict)."""
    return {k: tuple(v) if isinstance(like.get(k), tuple) and isinstance(v, list) else v for k, v in saved.items()}


def unload_adapter(model: nn.Module) -> nn.Module:
    """Remove every adapter: put the original blocks back and restore ``requires_grad`` as it was before injection."""
    for name, layer in _require_adapted(model):
        if not isinstance(layer, AdaptedBlock) and layer.merged:
            layer.unmerge()
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, _wrapped(layer)[1])
    undo = model.__dict__.pop("_adapter_undo", None)
    if undo is not None:
        undo(model)
    for attribute in ("adapter_method", "adapter_config", "lora_config", "peft_config"):
        model.__dict__.pop(attribute, None)
    return model


__all__ = [
    "ADAPTERS",
    "AdaptedBlock",
    "AdapterMergeError",
    "TrainableParameters",
    "adapted_blocks",
    "adapter_disabled",
    "adapter_layers",
    "adapter_parameter_names",
    "adapter_state_dict",
    "backbone_state_dict",
    "disable_adapter",
    "enable_adapter",
    "load_adapter",
    "merge_adapter",
    "save_adapter",
    "trainable_parameters",
    "unload_adapter",
    "unmerge_adapter",
]
