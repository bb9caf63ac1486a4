"""Run directories: one run per directory, resumable, and no trace left by a run that never got going.

A :class:`RunDirectory` is claimed by one process at a time. Claiming it

1. takes an exclusive lock: ``.lock`` is created with ``O_EXCL`` and records the process id, the host, the recipe
   and the time. A second process is refused with the first one's identity. A lock whose process is gone (same
   host, no such pid, or an unreadable lock file left by a crash while writing it) is stale and taken over;
2. refuses a directory that holds another run: ``run.json`` names the recipe (``finetune``, ...), ``config.yaml``
   the resolved config and ``start.json`` what the run started from (a checkpoint's digest). Any difference is a
   one-line error and nothing in the directory changes;
3. writes those three files, so that a rerun of the same command resumes.

A run resumes from its resumable state (``last.pt`` of fine-tuning, ``checkpoint.pt`` of pre-training) or from the
parts it recorded (:meth:`RunDirectory.record`: an experiment's finished rows and seeds). A run that fails before it
has either removes what the claim wrote (and the directory, if the claim created it and it is empty), so the
corrected command can use the same directory.
Leaving the ``with`` block always releases the lock.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import socket
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from meltr._yaml import load as yaml_load
from meltr.config import plain_data
from meltr.training.checkpoint import atomic_save
from meltr.training.loggers import write_rows

logger = logging.getLogger(__name__)

LOCK = ".lock"
RECORDS = "records"
CLAIM_FILES = ("run.json", "config.yaml", "start.json")


class RunDirectoryError(ValueError):
    """The directory is locked by another run or holds another recipe's run."""


class RunDirectory:
    """One run's directory (see the module docstring).

    Args:
        path: the directory.
        recipe: the recipe's name (``finetune``, ``pretrain``, ...).
        config: the resolved config, as plain data (saved as ``config.yaml``).
        start: what the run starts from beyond its config (saved as ``start.json``), e.g. a checkpoint's SHA-256.
        info: more facts about the run worth keeping in ``run.json`` (e.g. the primary task); not compared.
        resumable: the file of the state a rerun resumes from (``last.pt`` for fine-tuning); once it exists, the claim
            is kept even if the run fails.
    """

    def __init__(
        self,
        path: str | Path,
        recipe: str,
        config: Mapping[str, Any],
        start: Mapping[str, Any] | None = None,
        info: Mapping[str, Any] | None = None,
        resumable: str = "last.pt",
    ) -> None:
        self.path = Path(path)
        self.resumable = resumable
        self.recipe = recipe
        self.config = dict(config)
        self.start = dict(start or {})
        self.info = dict(info or {})
        self._locked = False
        self._created = False
        self._wrote: list[Path] = []
        self.saved = False  # a resumable state exists (saved by this run or found on claiming)

    # -- claiming ------------------------------------------------------------------------------------------------
    def __enter__(self) -> RunDirectory:
        self.claim()
        return self

    def __exit__(self, kind, error, traceback) -> None:
        try:
            if error is not None and not (self.saved or self.has(self.resumable)):
                self._withdraw()
        finally:
            self.release()

    def claim(self) -> RunDirectory:
        """Lock the directory, check it holds this run (or none) and record the run in it.

        Raises:
            RunDirectoryError: another live process holds the lock, or the directory holds another run.
            OSError: the directory cannot be created or written (e.g. read-only).
        """
        self._created = not self.path.exists()
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise OSError(error.errno, f"{self.path}: cannot create the run directory ({error.strerror})") from None
        try:
            self._lock()
            self._check_identity()
            self.saved = self.has(self.resumable) or any(self.path.glob(f"{RECORDS}/*.json"))
            self._write_claim()
        except BaseException:
            if self._locked:
                self.release()
            if self._created:
                with contextlib.suppress(OSError):
                    self.path.rmdir()
            raise
        return self

    def release(self) -> None:
        """Remove the lock if this process holds it."""
        if self._locked:
            with contextlib.suppress(FileNotFoundError):
                (self.path / LOCK).unlink()
            self._locked = False

    def _lock(self) -> None:
        lock = self.path / LOCK
        identity = {"pid": os.getpid(), "host": socket.gethostname(), "recipe": self.recipe, "since": time.time()}
        for _ in range(3):
            try:
                handle = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = read_lock(lock)
                if holder is not None and not _stale(holder):
                    raise RunDirectoryError(
                        f"{self.path}: in use by another run ({holder.get('recipe', '?')}, pid {holder.get('pid')} "
                        f"on {holder.get('host')}); wait for it, choose another directory, or remove {lock} if that "
                        "run is gone"
                    ) from None
                logger.warning("%s: taking over a stale lock (%s)", self.path, holder or "unreadable")
                with contextlib.suppress(FileNotFoundError):
                    lock.unlink()
                continue
            except OSError as error:
                message = f"{self.path}: cannot write in the run directory ({error.strerror})"
                raise OSError(error.errno, message) from None
            with os.fdopen(handle, "w") as file:
                json.dump(identity, file)
            self._locked = True
            return
        raise RunDirectoryError(f"{self.path}: could not take the lock {lock}; remove it if no run uses the directory")

    def _check_identity(self) -> None:
        saved = self.path / "run.json"
        if saved.exists():
            recipe = _read_json(saved).get("recipe")
            if recipe != self.recipe:
                raise RunDirectoryError(
                    f"{saved}: the directory holds a {recipe} run, not a {self.recipe} run; choose another directory"
                )
        saved = self.path / "config.yaml"
        if saved.exists():
            try:
                previous = yaml_load(saved.read_text())
            except yaml.YAMLError:
                previous = None
            if previous != plain_data(self.config):
                changed = _first_difference(previous, plain_data(self.config))
                raise RunDirectoryError(
                    f"{saved}: the run directory holds a run of another recipe{changed}; give this run another "
                    "directory (--out, or name / out_root), or remove that one"
                )
        saved = self.path / "start.json"
        if saved.exists() and self.start and _read_json(saved).get("sha256") != self.start.get("sha256"):
            raise RunDirectoryError(
                f"{saved}: the run directory holds a run that started from other weights than "
                f"{self.start.get('checkpoint')} (the checkpoint was re-made); give this run another directory, or "
                "remove that one"
            )

    def _write_claim(self) -> None:
        files = {
            "run.json": json.dumps({"recipe": self.recipe, **self.info}, indent=1),
            "config.yaml": yaml.safe_dump(plain_data(self.config), sort_keys=False),
            "start.json": json.dumps(self.start, indent=1),
        }
        for name, text in files.items():
            target = self.path / name
            if not target.exists():
                self._wrote.append(target)
            _write_text(target, text)

    def _withdraw(self) -> None:
        for path in self._wrote:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        for leftover in self.path.glob("*.tmp"):
            with contextlib.suppress(FileNotFoundError):
                leftover.unlink()
        if self._created:
            self.release()
            with contextlib.suppress(OSError):
                self.path.rmdir()

    # -- contents ------------------------------------------------------------------------------------------------
    def has(self, name: str) -> bool:
        return (self.path / name).exists()

    def file(self, name: str) -> Path:
        return self.path / name

    def update_info(self, **facts: Any) -> None:
        """Add facts to ``run.json`` (e.g. the primary task, once the model is built)."""
        self.info.update(facts)
        _write_text(self.path / "run.json", json.dumps({"recipe": self.recipe, **self.info}, indent=1))

    def save(self, name: str, payload: Any, resumable: bool = False) -> Path:
        """Save a checkpoint atomically; ``resumable`` marks the state a rerun resumes from (the claim is kept
        from then on, even if the run fails)."""
        path = atomic_save(payload, self.path / name)
        if resumable:
            self.saved = True
        return path

    def write_json(self, name: str, value: Any) -> Path:
        return _write_text(self.path / name, json.dumps(value, indent=1))

    def record(self, key: str, value: Any) -> Path:
        """Keep a finished part of the run (one table row and seed of an experiment) as ``records/<key>.json``;
        a rerun reads it back (:meth:`recorded`) instead of redoing the part, and the claim is kept from then on."""
        (self.path / RECORDS).mkdir(exist_ok=True)
        path = _write_text(self.path / RECORDS / f"{key}.json", json.dumps(value))
        self.saved = True
        return path

    def recorded(self, key: str) -> Any | None:
        """The value :meth:`record` kept under ``key`` (by this run or an interrupted one), or None."""
        path = self.path / RECORDS / f"{key}.json"
        return _read_json_value(path) if path.exists() else None

    def rows(self, stem: str, rows: list[dict[str, Any]]) -> None:
        """Write ``rows`` as ``<stem>.csv`` and ``<stem>.json``."""
        write_rows(self.path / stem, rows)


def read_run_info(run_dir: str | Path) -> dict[str, Any]:
    """``run.json`` of a run directory (``{}`` for runs written before it existed)."""
    path = Path(run_dir) / "run.json"
    return _read_json(path) if path.exists() else {}


def read_lock(path: Path) -> dict[str, Any] | None:
    """The lock's record, or None if it is unreadable (a crash while writing it)."""
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _stale(holder: Mapping[str, Any]) -> bool:
    """A lock of this host whose process no longer exists. Another host's lock cannot be checked: it holds."""
    if holder.get("host") != socket.gethostname():
        return False
    pid = holder.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # a live process of another user
    return False


# -- helpers -------------------------------------------------------------------------------------------------------
def _write_text(path: Path, text: str) -> Path:
    temporary = path.with_name(f".{path.name}.tmp")
    try:
        temporary.write_text(text)
        temporary.replace(path)
    except OSError as error:
        with contextlib.suppress(OSError):
            temporary.unlink()
        if error.errno == errno.ENOSPC:
            raise OSError(error.errno, f"{path}: no space left on the device; free some and rerun to resume") from None
        raise
    return path


def _read_json(path: Path) -> dict[str, Any]:
    value = _read_json_value(path)
    return value if isinstance(value, dict) else {}


def _read_json_value(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise RunDirectoryError(f"{path}: unreadable ({error}); remove the directory or choose another") from None


def _first_difference(previous: Any, current: Any) -> str:
    if not isinstance(previous, dict):
        return ""
    for key in dict.fromkeys([*current, *previous]):
        if previous.get(key) != current.get(key):
            return f" ({key}: {previous.get(key)!r} there, {current.get(key)!r} here)"
    return ""


__all__ = [
    "RunDirectory",
    "RunDirectoryError",
    "read_lock",
    "read_run_info",
]
