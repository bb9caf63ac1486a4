"""Metric loggers: where a run's rows go.

A run logs rows into named streams (``steps``: one row per optimiser step; ``epochs``: one per epoch). A
:class:`MetricLogger` is anything with ``log(stream, row)``, ``flush()`` and ``close()``; a run takes any number of
them (:class:`MetricLoggers`). Three ship:

- :class:`CSVLogger`: ``<stream>.csv`` and ``<stream>.json`` in the run directory (always on: the figures and
  ``meltr analyze`` read them);
- :class:`LoggingLogger`: the rows of chosen streams as log lines (Python ``logging``, so on stderr under the CLI,
  where stdout is kept for results);
- :class:`TensorBoardLogger`: every numeric value as a TensorBoard scalar (the optional extra
  ``pip install 'meltr[tensorboard]'``).
"""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol


class MetricLogger(Protocol):
    """Where a run's rows go: ``log(stream, row)`` adds a row to a stream (``steps``, ``epochs``); ``flush()``
    makes what was logged durable; ``close()`` ends."""

    def log(self, stream: str, row: Mapping[str, Any]) -> None: ...

    def flush(self) -> None: ...

    def close(self) -> None: ...


class CSVLogger:
    """Every stream as ``<stream>.csv`` and ``<stream>.json`` in a folder (the figures read them).

    Rows are kept in memory and the files rewritten atomically on :meth:`flush`, so the union of the rows' keys
    makes the CSV's columns and a crash leaves the files of the last flush.

    Args:
        folder: where the files go.
        streams: rows already logged (a resumed run's), by stream.
    """

    def __init__(self, folder: str | Path, streams: Mapping[str, list[dict[str, Any]]] | None = None) -> None:
        self.folder = Path(folder)
        self.streams: dict[str, list[dict[str, Any]]] = {k: list(v) for k, v in (streams or {}).items()}

    def log(self, stream: str, row: Mapping[str, Any]) -> None:
        self.streams.setdefault(stream, []).append(dict(row))

    def flush(self) -> None:
        for stream, rows in self.streams.items():
            write_rows(self.folder / stream, rows)

    def close(self) -> None:
        self.flush()


class LoggingLogger:
    """Rows of the chosen streams as log lines (``logging``, INFO), e.g. one line per epoch."""

    def __init__(self, streams: tuple[str, ...] = ("epochs",), name: str = "meltr.run") -> None:
        self.streams, self.logger = streams, logging.getLogger(name)

    def log(self, stream: str, row: Mapping[str, Any]) -> None:
        if stream in self.streams:
            self.logger.info(
                "%s: %s", stream, " ".join(f"{k}={_short(v)}" for k, v in row.items() if not isinstance(v, list))
            )

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


class TensorBoardLogger:
    """Every numeric value of every row as a TensorBoard scalar ``<stream>/<key>`` (``tensorboard --logdir``).

    The x-axis of a row is its ``step`` (the learner's optimiser-step counter, which a resumed run continues), else
    its ``epoch``, else the number of rows logged to the stream before it. Booleans, strings and lists are left out.

    Args:
        folder: the event files' folder (e.g. ``<run directory>/tensorboard``).

    Raises:
        ImportError: the ``tensorboard`` package is missing (with the install command).
    """

    def __init__(self, folder: str | Path) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ImportError(
                "the TensorBoard logger needs the tensorboard package: pip install 'meltr[tensorboard]'"
            ) from None
        self.folder = Path(folder)
        self._writer_class = SummaryWriter
        self.writer: Any = None  # created at the first row: a run refused its directory writes nothing there
        self.counts: dict[str, int] = {}

    def log(self, stream: str, row: Mapping[str, Any]) -> None:
        if self.writer is None:
            self.writer = self._writer_class(log_dir=str(self.folder))
        index = self.counts.get(stream, 0)
        self.counts[stream] = index + 1
        step = row.get("step", row.get("epoch", index))
        for key, value in row.items():
            if key in ("step", "epoch") or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            self.writer.add_scalar(f"{stream}/{key}", float(value), int(step))

    def flush(self) -> None:
        if self.writer is not None:
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


class MetricLoggers:
    """Several loggers as one."""

    def __init__(self, *loggers: MetricLogger) -> None:
        self.loggers = loggers

    def log(self, stream: str, row: Mapping[str, Any]) -> None:
        for logger in self.loggers:
            logger.log(stream, row)

    def flush(self) -> None:
        for logger in self.loggers:
            logger.flush()

    def close(self) -> None:
        for logger in self.loggers:
            logger.close()


def write_rows(stem: Path, rows: list[dict[str, Any]]) -> None:
    """Write ``rows`` as ``stem.csv`` and ``stem.json`` (the union of keys as CSV columns), each atomically."""
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    temporary = stem.with_suffix(".csv.tmp")
    with temporary.open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    temporary.replace(stem.with_suffix(".csv"))
    temporary = stem.with_suffix(".json.tmp")
    temporary.write_text(json.dumps(rows))
    temporary.replace(stem.with_suffix(".json"))


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


__all__ = ["CSVLogger", "LoggingLogger", "MetricLogger", "MetricLoggers", "TensorBoardLogger", "write_rows"]
