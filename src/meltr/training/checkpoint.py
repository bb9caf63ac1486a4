"""Checkpoints that are never half-written (write to a temporary file in the same folder, then rename), and
backbones saved with what rebuilds them."""

from __future__ import annotations

import dataclasses
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from meltr.models import build_backbone


def atomic_save(payload: Any, path: str | Path) -> Path:
    """``torch.save`` to ``path`` atomically: a crash leaves the previous file (or none), never a partial one."""
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


def load_checkpoint(path: str | Path) -> Any:
    """Read a checkpoint written by :func:`atomic_save`, with an error that names the file if it is unreadable."""
    path = Path(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except FileNotFoundError:
        raise
    except Exception as error:  # a corrupt or foreign file
        raise ValueError(f"{path}: not a readable meltr checkpoint ({error})") from error


def save_pretrained(path: str | Path, model: nn.Module, backbone: str, **extra: Any) -> Path:
    """Save ``model`` with what rebuilds it: its registry name and its full config.

    Args:
        path: the file to write (parent directories are created).
        model: a backbone of :mod:`meltr.models` (it has a dataclass ``config``).
        backbone: its registry name.
        **extra: anything else worth keeping (the recipe, the world's fingerprint, ...).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "backbone": backbone,
        "config": dataclasses.asdict(model.config),
        "state_dict": model.state_dict(),
        **extra,
    }
    return atomic_save(payload, path)


def load_pretrained(path: str | Path) -> nn.Module:
    """Rebuild a backbone saved by :func:`save_pretrained` (in eval mode)."""
    payload = load_checkpoint(path)
    config = dict(payload["config"])
    model = build_backbone(payload["backbone"], "default", **config)
    model.load_state_dict(payload["state_dict"])
    return model.eval()
