"""Checkpoints: never half-written, read without unpickling code, and labelled with what they hold.

Writing goes to a temporary file in the same folder, then a rename, so a crash leaves the previous file (or none).
Reading uses ``torch.load(..., weights_only=True)``: only tensors and plain containers are rebuilt, and a file that
needs anything else (a crafted or foreign pickle) is refused with a one-line error. Unpickling such a file runs any
code it carries, so it happens only when the caller passes ``unsafe=True`` (``--unsafe-load`` on the command line).

Every checkpoint meltr writes carries a ``"meltr"`` record, ``{"kind", "backbone", "size", "task"}``;
:func:`check_checkpoint` compares it with what the caller expects and names the first difference.
"""

from __future__ import annotations

import logging
import os
import pickle
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch

logger = logging.getLogger(__name__)

UNSAFE_HINT = (
    "if you trust the file, load it with --unsafe-load (unsafe=True): unpickling runs any code the file carries"
)

KINDS = {
    "backbone": "a backbone checkpoint (meltr pretrain's backbone.pt or a shipped one)",
    "finetune": "a fine-tuned model (a finetune run's best.pt)",
    "finetune-state": "a finetune run's training state (last.pt)",
    "pretrain-state": "a pre-training run's training state (checkpoint.pt)",
}


def atomic_save(payload: Any, path: str | Path) -> Path:
    """``torch.save`` to ``path`` atomically: a crash leaves the previous file (or none), never a partial one.

    Raises:
        OSError: the folder cannot be written (read-only, disk full); nothing is left behind.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            torch.save(payload, file)
            file.flush()
            os.fsync(file.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)  # mkstemp's 0600 would hide shipped checkpoints from other users
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise
    return path


def checkpoint_label(kind: str, backbone: str | None = None, size: str | None = None, task: str | None = None) -> dict:
    """The ``"meltr"`` record of a checkpoint: what it holds (``kind``) and for which backbone, size and task."""
    if kind not in KINDS:
        raise ValueError(f"unknown checkpoint kind {kind!r}; known: {', '.join(KINDS)}")
    return {"kind": kind, "backbone": backbone, "size": size, "task": task}


def load_checkpoint(path: str | Path, *, unsafe: bool = False) -> Any:
    """Read a checkpoint without running code (``weights_only=True``) unless ``unsafe``.

    Args:
        path: the file.
        unsafe: unpickle arbitrary objects (legacy or foreign files). Only for files you trust: a crafted pickle
            runs any code it carries. A warning is logged.

    Raises:
        FileNotFoundError: no such file.
        ValueError: a directory, a corrupt file, or a file that needs unpickling (the message says how to allow it).
    """
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path}: is a directory; give a checkpoint file")
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such checkpoint file")
    if unsafe:
        logger.warning("%s: unpickling with weights_only=False (--unsafe-load): any code it carries runs", path)
    try:
        return torch.load(path, map_location="cpu", weights_only=not unsafe)
    except pickle.UnpicklingError as error:
        if not _looks_like_torch_save(path):
            raise ValueError(f"{path}: not a readable meltr checkpoint (not a torch.save file)") from None
        if unsafe:
            raise ValueError(f"{path}: not a readable checkpoint ({_first_line(error)})") from error
        raise ValueError(f"{path}: holds objects other than tensors and plain data; {UNSAFE_HINT}") from error
    except Exception as error:  # a corrupt or foreign file
        raise ValueError(f"{path}: not a readable meltr checkpoint ({_first_line(error)})") from error


def check_checkpoint(payload: Any, path: str | Path, kind: str, **expected: str | None) -> dict:
    """Check that ``payload`` is a checkpoint of ``kind`` for the ``expected`` backbone / size / task.

    Files written before checkpoints were labelled pass if their shape says they are of ``kind``: a backbone file
    has ``backbone``, ``config`` and ``state_dict``. Fields the file does not record are not compared.

    Returns:
        the checkpoint's label.

    Raises:
        ValueError: one line naming the file, what it holds and what was expected.
    """
    label = payload.get("meltr") if isinstance(payload, dict) else None
    if not isinstance(label, dict):
        label = _legacy_label(payload)
    if label is None:
        raise ValueError(f"{path}: not a meltr checkpoint; expected {KINDS[kind]}")
    if label.get("kind") != kind:
        holds = KINDS.get(label.get("kind"), repr(label.get("kind")))
        raise ValueError(f"{path}: holds {holds}, not {KINDS[kind]}; give {_where(kind)}")
    for field, want in expected.items():
        have = label.get(field)
        if want is not None and have is not None and have != want:
            fix = f"--{field} {have}" if field == "backbone" else f"{field}={have}"
            raise ValueError(f"{path}: holds a checkpoint for {field} {have!r}, not {want!r}; use {fix}")
    return label


def _looks_like_torch_save(path: Path) -> bool:
    """A zip archive (torch.save's format) or a pickle (its legacy format, starting with the PROTO opcode)."""
    with path.open("rb") as file:
        head = file.read(2)
    return zipfile.is_zipfile(path) or head[:1] == b"\x80"


def _legacy_label(payload: Any) -> dict | None:
    if not isinstance(payload, dict):
        return None
    if {"backbone", "config", "state_dict"} <= set(payload):
        recipe = payload.get("recipe") or {}
        size = recipe.get("size") if isinstance(recipe, dict) else None
        return {"kind": "backbone", "backbone": payload["backbone"], "size": size, "task": None}
    if {"model", "combiner"} <= set(payload):
        return {"kind": "finetune", "backbone": None, "size": None, "task": None}
    if {"model", "optimizer", "learner"} <= set(payload):
        return {"kind": "finetune-state", "backbone": None, "size": None, "task": None}
    if {"model", "optimizer", "schedule"} <= set(payload):
        return {"kind": "pretrain-state", "backbone": None, "size": None, "task": None}
    return None


def _where(kind: str) -> str:
    return {
        "backbone": "'pretrained' or the backbone.pt written by meltr pretrain",
        "finetune": "a finetune run's best.pt",
        "finetune-state": "a finetune run's last.pt",
        "pretrain-state": "a meltr pretrain run's checkpoint.pt",
    }[kind]


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


__all__ = ["KINDS", "UNSAFE_HINT", "atomic_save", "check_checkpoint", "checkpoint_label", "load_checkpoint"]
