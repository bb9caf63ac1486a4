"""The one way a run gets its backbone: a fresh preset, the shipped checkpoint, or a file, checked on load.

A backbone file holds the backbone's registry name, its full config and its weights, plus a label
(:func:`meltr.training.checkpoint.checkpoint_label`) naming the backbone and its size. It is a ``torch.save`` file
(``.pt``, read with ``weights_only=True``) or a ``.safetensors`` file whose metadata carry the same record, so a
backbone can be shared without pickles at all.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from meltr.config import ConfigError, check_options
from meltr.training.checkpoint import atomic_save, check_checkpoint, checkpoint_label, load_checkpoint

SAFETENSORS_SUFFIX = ".safetensors"


def checkpoint_file(checkpoint: str, backbone: str, size: str = "default") -> Path | None:
    """The file behind a ``checkpoint`` setting: ``"pretrained"`` (the one shipped for ``backbone`` at preset
    ``size``), ``"none"`` (None) or a path."""
    from meltr.models import pretrained_path

    if checkpoint == "none":
        return None
    return Path(pretrained_path(backbone, size) if checkpoint == "pretrained" else checkpoint)


def starting_point(checkpoint: str, backbone: str, size: str = "default") -> dict[str, Any]:
    """What a run starts from beyond its recipe: the checkpoint file and its SHA-256 (a run directory's
    ``start.json``).

    Two runs of one recipe are the same run only if they start from the same weights: a re-made ``pretrained``
    checkpoint changes the digest, not the recipe.
    """
    path = checkpoint_file(checkpoint, backbone, size)
    if path is None or not path.is_file():
        return {"checkpoint": None if path is None else str(path), "sha256": None}
    return {"checkpoint": str(path), "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}


def save_pretrained(path: str | Path, model: nn.Module, backbone: str, size: str | None = None, **extra: Any) -> Path:
    """Save ``model`` with what rebuilds it: its registry name, its full config and a label.

    Args:
        path: the file to write (parent directories are created); a ``.safetensors`` suffix writes safetensors
            (``extra`` is then stored as JSON metadata), anything else a ``torch.save`` file.
        model: a backbone of :mod:`meltr.models` (it has a dataclass ``config``).
        backbone: its registry name.
        size: the preset it was built from, if known (recorded in the label).
        **extra: anything else worth keeping (the recipe, the world's fingerprint, ...): plain data.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    label = checkpoint_label("backbone", backbone, size)
    config = dataclasses.asdict(model.config)
    if path.suffix == SAFETENSORS_SUFFIX:
        from safetensors.torch import save_file

        # Cloning unties shared tensors, which safetensors refuses; load_state_dict copies them back into place.
        state = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
        metadata = {"meltr": json.dumps(label), "backbone": backbone, "config": json.dumps(config)}
        metadata.update({k: json.dumps(v) for k, v in extra.items()})
        temporary = path.with_name(f".{path.name}.tmp")
        save_file(state, str(temporary), metadata=metadata)
        temporary.replace(path)
        return path
    payload = {"meltr": label, "backbone": backbone, "config": config, "state_dict": model.state_dict(), **extra}
    return atomic_save(payload, path)


def read_backbone_file(path: str | Path, *, unsafe: bool = False) -> dict[str, Any]:
    """The ``{"meltr", "backbone", "config", "state_dict", ...}`` record of a backbone file (``.pt`` or
    ``.safetensors``), checked to be a backbone checkpoint.

    Raises:
        ValueError: unreadable, or not a backbone checkpoint (e.g. a finetune run's ``best.pt``).
    """
    path = Path(path)
    if path.suffix == SAFETENSORS_SUFFIX and path.is_file():
        payload = _read_safetensors(path)
    else:
        payload = load_checkpoint(path, unsafe=unsafe)
    check_checkpoint(payload, path, "backbone")
    return payload


def load_pretrained(
    path: str | Path, *, backbone: str | None = None, size: str | None = None, unsafe: bool = False
) -> nn.Module:
    """Rebuild a backbone saved by :func:`save_pretrained` (in eval mode).

    Args:
        path: the file.
        backbone: the backbone the caller expects (None: any); another one in the file is a one-line error.
        size: the preset the caller expects (None: any).
        unsafe: see :func:`meltr.training.checkpoint.load_checkpoint`.
    """
    from meltr.models import build_backbone

    payload = read_backbone_file(path, unsafe=unsafe)
    label = check_checkpoint(payload, path, "backbone", backbone=backbone, size=size)
    config = dict(payload["config"])
    model = build_backbone(label["backbone"] or payload["backbone"], "default", **config)
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as error:
        raise ValueError(f"{path}: its weights do not fit its config ({str(error).splitlines()[0]})") from None
    return model.eval()


def backbone_for(
    backbone: str,
    checkpoint: str,
    *,
    vocab_size: int,
    size: str = "default",
    options: Mapping[str, Any] | None = None,
    shape: Mapping[str, Any] | None = None,
    unsafe: bool = False,
    source: str = "config",
) -> nn.Module:
    """The backbone a run starts from, for a world with ``vocab_size`` tokens.

    Args:
        backbone: registry name.
        checkpoint: ``"none"`` (a fresh ``size`` preset, initialised from the global RNG), ``"pretrained"`` (the
            checkpoint shipped at ``size``) or a file.
        vocab_size: the world's vocabulary; a checkpoint of another vocabulary is refused.
        size: the preset of a fresh backbone, or of the shipped checkpoint with ``"pretrained"``.
        options: backbone config fields to change (for a checkpoint: fields that do not change the weights' shapes,
            e.g. dropout).
        shape: config fields a fresh backbone takes from the world (``image_size``, ``max_frames``); options win.
        unsafe: see :func:`meltr.training.checkpoint.load_checkpoint`.
        source: the name errors give the settings (``"config"``, a file name, a class name).

    Raises:
        ValueError: one line naming ``source``'s field and the fix.
    """
    from meltr.models import build_backbone

    options = dict(options or {})
    path = checkpoint_file(checkpoint, backbone, size)
    if path is None:
        try:
            return build_backbone(backbone, size, vocab_size=vocab_size, **{**dict(shape or {}), **options})
        except (KeyError, TypeError) as error:
            raise ValueError(f"{source}: field 'backbone_options': {_message(error)}") from None
    if not path.exists() and checkpoint == "pretrained":
        shipped = ", ".join(sorted(p.stem for p in path.parent.glob("*.pt")))
        raise ValueError(
            f"{source}: field 'checkpoint': no pre-trained {backbone} of size {size!r} is shipped (shipped: "
            f"{shipped}); give another size, 'none' or a file"
        )
    if not path.exists():
        raise ValueError(f"{source}: field 'checkpoint': {path} does not exist; give 'pretrained', 'none' or a file")
    model = load_pretrained(path, backbone=backbone, unsafe=unsafe)
    for key, value in options.items():
        if not hasattr(model.config, key):
            raise ValueError(f"{source}: field 'backbone_options': {backbone} has no option {key!r}")
        setattr(model.config, key, value)
    if model.config.vocab_size != vocab_size:
        raise ValueError(
            f"{path}: the checkpoint's vocabulary ({model.config.vocab_size}) is not the world's ({vocab_size})"
        )
    return model


def backbone_config_class(backbone: str) -> type:
    """The config dataclass of a registered backbone (from its factory's return type)."""
    from meltr.models import BACKBONES

    model_class = typing.get_type_hints(BACKBONES.get(backbone))["return"]
    hint = typing.get_type_hints(model_class.__init__)["config"]
    return next(t for t in typing.get_args(hint) or (hint,) if t is not type(None))


def check_backbone_options(backbone: str, options: Mapping[str, Any], source: str) -> None:
    """Check the names and types of ``backbone_options`` against the backbone's config dataclass.

    Raises:
        ConfigError: ``backbone_options.<key>`` is not a field (with the closest one) or has the wrong type.
    """
    check_options(options, backbone_config_class(backbone), "backbone_options", source, owner=f"backbone {backbone!r}")


# -- transformers towers (meltr.models.hf) ---------------------------------------------------------------------------
TINY_RANDOM = "tiny-random"
"""``backbone: {hf: tiny-random, ...}``: tiny random towers built offline from the run's seed."""

TOWER_LAYOUTS: tuple[tuple[str, ...], ...] = (("text", "video"), ("clip",), ("xclip",))
"""The tower folders a backbone directory holds (as :func:`meltr.models.hf.save_hf_backbone` writes them)."""


def check_hf_spec(spec: Mapping[str, Any], source: str = "config") -> None:
    """Check a transformers backbone spec ``{hf: DIR | tiny-random, ...}`` without building anything.

    ``hf`` is a backbone directory (``text/`` + ``video/``, ``clip/`` or ``xclip/``) or ``tiny-random`` (then ``kind``,
    one of :data:`meltr.models.hf.TINY_KINDS`, and ``width``, the towers' even hidden size, may be given); every other
    key is a field of :class:`meltr.models.hf.HFConfig`, checked for name, type and range together with the
    directory's saved ``meltr_hf.json``.

    Raises:
        ConfigError: one line naming ``source``, the key and the fix.
    """
    from meltr.models.hf import OPTIONS_FILE, TINY_KINDS, HFConfig, tiny_heads

    where = spec.get("hf")
    if not isinstance(where, str) or not where:
        raise ConfigError(
            f"{source}: field 'backbone' must be a backbone name or {{hf: DIR, ...}} / {{hf: {TINY_RANDOM}, ...}}, "
            f"got {dict(spec)!r}"
        )
    if importlib.util.find_spec("transformers") is None:
        raise ConfigError(
            f"{source}: field 'backbone.hf' needs transformers; install the extra: pip install 'meltr[hf]'"
        )
    options = {k: v for k, v in spec.items() if k != "hf"}
    if where == TINY_RANDOM:
        kind, width = options.pop("kind", "bert+clip"), options.pop("width", 32)
        if kind not in TINY_KINDS:
            raise ConfigError(f"{source}: field 'backbone.kind' must be one of {list(TINY_KINDS)}, got {kind!r}")
        if not isinstance(width, int) or isinstance(width, bool) or width < 2 or width % 2:
            raise ConfigError(f"{source}: field 'backbone.width' must be an even integer of at least 2, got {width!r}")
        causal = kind in ("clip", "xclip")
        settings = tiny_heads(kind, options)
    else:
        tiny = sorted({"kind", "width"} & set(options))
        if tiny:
            raise ConfigError(
                f"{source}: field 'backbone.{tiny[0]}' belongs to hf: {TINY_RANDOM}, not to a directory; replace the "
                f"whole spec, e.g. backbone={{hf: {where}}}"
            )
        root = Path(where)
        layout = next((names for names in TOWER_LAYOUTS if all((root / n).is_dir() for n in names)), None)
        if layout is None:
            raise ConfigError(
                f"{source}: field 'backbone.hf': {root} is not a backbone directory (text/ + video/, clip/ or xclip/, "
                f"as meltr.models.hf.save_hf_backbone writes); give one, or hf: {TINY_RANDOM}"
            )
        saved = root / OPTIONS_FILE
        try:
            settings = {**(json.loads(saved.read_text()) if saved.is_file() else {}), **options}
        except (OSError, ValueError) as error:
            raise ConfigError(f"{source}: field 'backbone.hf': {saved} is not readable JSON ({error})") from None
        causal = layout != ("text", "video")
    check_options(options, HFConfig, "backbone", source, owner="the transformers backbone (HFConfig)")
    try:
        HFConfig(**settings)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"{source}: field 'backbone': {error}") from None
    if causal and settings.get("mlm", True):
        raise ConfigError(
            f"{source}: field 'backbone.mlm': the CLIP-style text tower is causal, so masked language modelling does "
            "not apply; set mlm: false"
        )


def hf_starting_point(spec: Mapping[str, Any]) -> dict[str, Any]:
    """What a transformers backbone spec starts from: its directory and a SHA-256 over every file in it (relative
    path and content), or ``tiny-random`` (no file: the towers follow from the seed)."""
    where = spec["hf"]
    if where == TINY_RANDOM:
        return {"checkpoint": TINY_RANDOM, "sha256": None}
    root = Path(where)
    digest = hashlib.sha256()
    for file in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(file.relative_to(root).as_posix().encode() + b"\0")
        with file.open("rb") as handle:
            digest.update(hashlib.file_digest(handle, "sha256").digest())
    return {"checkpoint": str(root), "sha256": digest.hexdigest()}


def hf_backbone_for(
    spec: Mapping[str, Any],
    *,
    vocab_size: int,
    image_size: int,
    frames: int,
    special_tokens: Mapping[str, int] | None = None,
    seed: int = 0,
    source: str = "config",
) -> nn.Module:
    """The :class:`meltr.models.hf.HFVideoText` of a spec checked by :func:`check_hf_spec`, for data with
    ``vocab_size`` tokens and clips of ``frames`` frames of ``image_size`` pixels.

    The towers never draw from the global random stream (tiny random towers use ``seed`` inside a forked stream;
    a directory's are loaded), so the new heads are initialised alike from either. The special token ids MLM uses
    are the data's tokenizer's (``special_tokens``; None: the world's), since the batches carry its ids.

    Raises:
        ConfigError: the towers cannot be built, or their vocabulary is smaller than the data's.
    """
    from meltr.models.hf import HFConfig, HFVideoText, load_towers, tiny_heads, tiny_random_towers

    options = {k: v for k, v in spec.items() if k != "hf"}
    options.setdefault("special_tokens", None if special_tokens is None else dict(special_tokens))
    try:
        if spec["hf"] == TINY_RANDOM:
            kind, width = options.pop("kind", "bert+clip"), options.pop("width", 32)
            with torch.random.fork_rng(devices=[]):
                towers = tiny_random_towers(kind, vocab_size, image_size, frames, width, seed)
            config = HFConfig(**tiny_heads(kind, options))
        else:
            with torch.random.fork_rng(devices=[]):
                towers, config = load_towers(spec["hf"], **options)
        model = HFVideoText(**towers, config=config)
    except (OSError, TypeError, ValueError) as error:
        raise ConfigError(f"{source}: field 'backbone': {_message(error)}") from None
    if model.vocab_size < vocab_size:
        raise ConfigError(
            f"{source}: field 'backbone.hf': the text tower's vocabulary ({model.vocab_size}) is smaller than the "
            f"data's tokenizer ({vocab_size}); tokenize with the tower's tokenizer (data.tokenizer: wordpiece for "
            "BERT towers) or build the towers for this vocabulary"
        )
    return model


def _read_safetensors(path: Path) -> dict[str, Any]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file, safe_open

    try:
        with safe_open(str(path), framework="pt") as file:
            metadata = file.metadata() or {}
        state = load_file(str(path))
        payload = {key: json.loads(value) for key, value in metadata.items() if key != "backbone"}
    except (SafetensorError, OSError, ValueError) as error:
        raise ValueError(f"{path}: not a readable safetensors file ({_message(error)})") from None
    if "backbone" not in metadata or "config" not in payload:
        raise ValueError(f"{path}: a safetensors file without meltr's metadata; save it with save_pretrained")
    payload.update(backbone=metadata["backbone"], state_dict=state)
    return payload


def _message(error: BaseException) -> str:
    text = (error.args[0] if error.args else str(error)) if isinstance(error, KeyError) else str(error)
    return str(text).strip().splitlines()[0] if str(text).strip() else type(error).__name__


__all__ = [
    "TINY_RANDOM",
    "TOWER_LAYOUTS",
    "backbone_config_class",
    "backbone_for",
    "check_backbone_options",
    "check_hf_spec",
    "checkpoint_file",
    "hf_backbone_for",
    "hf_starting_point",
    "load_pretrained",
    "read_backbone_file",
    "save_pretrained",
]
