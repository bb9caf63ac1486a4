"""The recipes wing: the runs and experiments built from the library, beside it and never imported by it.

- :mod:`~meltr.recipes.finetune`: fine-tune a pre-trained backbone on a downstream task with any combiner
  (``meltr finetune``, ``meltr demo``);
- :mod:`~meltr.recipes.pretrain`: pre-train a reference backbone with the sum of its pretext losses
  (``meltr pretrain``);
- :mod:`~meltr.recipes.reproduce`: MELTR's Tables 1-7 in miniature (``meltr reproduce``);
- :mod:`~meltr.recipes.harmonize`: the table of "Scaling Multimodal Pre-Training via Cross-Modality Gradient
  Harmonization" on the synthetic world (``meltr harmonize``);
- :mod:`~meltr.recipes.base_to_novel`: base-to-novel generalisation of adapters, the protocol of "Efficient Transfer
  Learning for Video-language Foundation Models" (``meltr adapt``);
- :mod:`~meltr.recipes.toy`: the helpful / harmful toy problem (``meltr demo --toy``).

Their YAML configs ship inside the package, under ``configs/`` (:func:`config_path` finds one by name), so an
installed ``meltr`` runs them from any directory.
"""

from __future__ import annotations

from pathlib import Path

CONFIGS = Path(__file__).resolve().parent / "configs"
"""The folder of the shipped YAML configs."""


def shipped_configs() -> list[str]:
    """The names of the shipped configs (``tiny``, ``reproduce/table1``, ...), sorted."""
    return sorted(path.relative_to(CONFIGS).with_suffix("").as_posix() for path in CONFIGS.rglob("*.yaml"))


def config_path(name: str | Path) -> Path:
    """The YAML file of ``name``: an existing file as given, else a shipped config by name (``tiny``,
    ``tiny.yaml``, ``reproduce/table1``).

    Raises:
        ValueError: neither a file nor a shipped config; the message lists the shipped ones.
    """
    path = Path(name)
    if path.is_file():
        return path
    if path.is_dir():
        raise ValueError(f"{path}: is a directory; give a YAML recipe file or a shipped config by name")
    shipped = CONFIGS / (path if path.suffix == ".yaml" else path.with_suffix(".yaml"))
    if not path.is_absolute() and shipped.is_file():
        return shipped
    raise ValueError(
        f"{name}: no such file and no shipped config of that name; shipped: {', '.join(shipped_configs())}"
    )


__all__ = ["CONFIGS", "config_path", "shipped_configs"]
