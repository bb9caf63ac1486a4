"""LoRA (Hu et al., ICLR 2022) on meltr's backbones through peft's own implementation (an optional dependency).

``W x -> W x + (alpha / r) B A x`` on the chosen ``nn.Linear`` layers of the encoders' blocks, with ``A`` (``r x
d_in``) Kaiming-uniform and ``B`` (``d_out x r``) zero, so that the adapted model starts at the frozen backbone.
Nothing here re-implements LoRA: :func:`inject_lora` builds a ``peft.LoraConfig`` whose ``target_modules`` are the
full names of our Linear layers and calls ``peft.inject_adapter_in_model`` on the plain ``nn.Module`` backbone, which
swaps each target for a ``peft.tuners.lora.Linear`` and freezes every other parameter. peft's layers then offer
merge / unmerge / disable themselves (``layer.merge()``, ``layer.enable_adapters(False)``).

peft is imported when a function here is called, never by ``import meltr``; install it with
``pip install 'meltr[peft]'``.
"""

from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Literal

from torch import nn

from meltr.adapters.base import ADAPTERS
from meltr.adapters.layouts import adapted_indices, adapter_sites, freeze
from meltr.config import help_field

LORA_ADAPTER_NAME = "default"
"""peft's name of the one adapter :func:`inject_lora` adds (it appears in the parameter names)."""


def require_peft() -> ModuleType:
    """Import peft, or fail with the command that installs it.

    Raises:
        ImportError: peft is not installed.
    """
    try:
        return importlib.import_module("peft")
    except ImportError as error:
        raise ImportError(
            "the LoRA baseline uses the peft package, which is not installed; install it with "
            "`pip install 'meltr[peft]'` (or `pip install peft`)"
        ) from error


@dataclass
class LoRAConfig:
    """What :func:`inject_lora` adapts and how (every field has help text; peft's names in brackets)."""

    rank: int = help_field("Rank r of the update B A (peft: r).", 4)
    alpha: float = help_field("The update is scaled by alpha / r (peft: lora_alpha).", 8.0)
    dropout: float = help_field("Dropout on the input of A (peft: lora_dropout); 0 keeps training deterministic.", 0.0)
    target_modules: tuple[str, ...] = help_field(
        "Linear layers of each adapted block, relative to the block: the attention projections 'attention.query', "
        "'attention.key', 'attention.value', 'attention.out' and the MLP's 'mlp.0', 'mlp.2'.",
        ("attention.query", "attention.value", "mlp.0", "mlp.2"),
    )
    first_block: int = help_field(
        "Index (0-based, negative counts from the last block) of the first adapted block of each encoder.", 0
    )
    init: Literal["zero_b", "random"] = help_field(
        "'zero_b': B = 0, the adapted model starts at the frozen backbone (the paper, peft's default); 'random': A "
        "and B keep nn.Linear's initialisation (peft: init_lora_weights=False), an adapter that is not zero.",
        "zero_b",
    )

    def __post_init__(self) -> None:
        self.target_modules = tuple(self.target_modules)
        if not isinstance(self.rank, int) or isinstance(self.rank, bool) or self.rank < 1:
            raise ValueError(f"LoRAConfig.rank must be a positive int, got {self.rank!r}")
        if not isinstance(self.alpha, (int, float)) or self.alpha <= 0:
            raise ValueError(f"LoRAConfig.alpha must be a positive number, got {self.alpha!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"LoRAConfig.dropout must be in [0, 1), got {self.dropout!r}")
        if self.init not in ("zero_b", "random"):
            raise ValueError(f"LoRAConfig.init must be 'zero_b' or 'random', got {self.init!r}")
        if not self.target_modules:
            raise ValueError("LoRAConfig.target_modules must name at least one Linear layer of a block")


def lora_target_names(model: nn.Module, config: LoRAConfig) -> list[str]:
    """The full module names LoRA adapts in ``model``: every target of every adapted block of every encoder.

    Raises:
        KeyError: the backbone declares no ``adapter_sites``.
        ValueError: a target is not an ``nn.Linear`` of the blocks, or ``first_block`` leaves no block.
    """
    name = type(model).__name__
    modules = dict(model.named_modules())
    names = []
    for site in adapter_sites(model, "LoRA"):
        depth = len(model.get_submodule(site.path).blocks)
        for index in adapted_indices(depth, config.first_block, "LoRAConfig.first_block", site.path):
            for target in config.target_modules:
                full = f"{site.path}.blocks.{index}.{target}"
                if not isinstance(modules.get(full), nn.Linear):
                    raise ValueError(
                        f"LoRAConfig.target_modules: {target!r} is not an nn.Linear of the blocks of {name} "
                        f"({full}); choose among 'attention.query', 'attention.key', 'attention.value', "
                        "'attention.out', 'mlp.0', 'mlp.2'"
                    )
                names.append(full)
    return names


def inject_lora(model: nn.Module, config: LoRAConfig | None = None, **overrides: Any) -> nn.Module:
    """Add peft's LoRA to the target Linear layers of ``model``'s encoders, in place; everything else is frozen.

    Args:
        model: a backbone that declares its ``adapter_sites``.
        config: the configuration (default :class:`LoRAConfig`).
        **overrides: fields of the configuration to change.

    Returns:
        ``model`` (the same object; its target layers are now ``peft.tuners.lora.Linear``).

    Raises:
        ImportError: peft is not installed (the message says how to install it).
        ValueError: a field of the config is invalid, or the model already has an adapter.
    """
    config = dataclasses.replace(config or LoRAConfig(), **overrides)
    if getattr(model, "adapter_method", None) is not None or lora_parameter_names(model):
        method = getattr(model, "adapter_method", None) or "lora"
        raise ValueError(f"the model already has a {method!r} adapter; adapt a fresh copy of the backbone")
    targets = lora_target_names(model, config)
    peft = require_peft()
    peft_config = peft.LoraConfig(
        r=config.rank,
        lora_alpha=config.alpha,
        lora_dropout=config.dropout,
        target_modules=targets,
        bias="none",
        init_lora_weights=config.init == "zero_b",
    )
    restore = freeze(model)  # peft freezes the backbone too; this remembers the flags for unload_adapter
    peft.inject_adapter_in_model(peft_config, model, adapter_name=LORA_ADAPTER_NAME)
    model._adapter_undo = restore
    model.adapter_method = "lora"
    model.adapter_config = model.lora_config = config
    return model


@ADAPTERS.register("lora")
def build_lora(model: nn.Module, config: LoRAConfig | None = None, **overrides: Any) -> nn.Module:
    """Registry entry of LoRA: :func:`inject_lora` (needs peft)."""
    return inject_lora(model, config, **overrides)


def lora_parameter_names(model: nn.Module) -> list[str]:
    """Names of the LoRA parameters peft added (``...lora_A.default.weight`` / ``...lora_B.default.weight``)."""
    return [n for n, _ in model.named_parameters() if ".lora_A." in n or ".lora_B." in n]


__all__ = [
    "LORA_ADAPTER_NAME",
    "LoRAConfig",
    "inject_lora",
    "lora_parameter_names",
    "lora_target_names",
    "require_peft",
]
