"""Readers of the benchmarks' own formats, and the world written to disk in them.

``read_dataset(format, root, ...)`` returns a :class:`Corpus` served like the synthetic world (``loader``,
``dataset``, ``splits``, ``tokenizer``), so the tasks, backbones and recipes read real data as they read the world;
``export_world(world, format, out)`` writes a world's train / meta / test splits in a format (``meltr world export``).
The layout each reader expects is in docs/data.md.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

from meltr._registry import Registry
from meltr.data.formats.common import FormatError, ReadOptions
from meltr.data.formats.corpus import Corpus, CorpusDataset, CorpusSplit, Example, carve_meta
from meltr.data.formats.folder import read_folder
from meltr.data.formats.mosi import export_mosi, read_mosi
from meltr.data.formats.msrvtt import export_msrvtt, read_msrvtt
from meltr.data.formats.qa import export_msvdqa, export_tgifqa, read_msvdqa, read_tgifqa
from meltr.data.formats.writing import ExportOptions
from meltr.data.formats.youcook2 import export_youcook2, read_youcook2

READERS: Registry[Corpus] = Registry("data format")
EXPORTERS: Registry[list[Path]] = Registry("export format")

READERS.register("msrvtt")(read_msrvtt)
EXPORTERS.register("msrvtt")(export_msrvtt)
READERS.register("youcook2")(read_youcook2)
EXPORTERS.register("youcook2")(export_youcook2)
READERS.register("tgifqa")(read_tgifqa)
EXPORTERS.register("tgifqa")(export_tgifqa)
READERS.register("msvdqa")(read_msvdqa)
EXPORTERS.register("msvdqa")(export_msvdqa)
READERS.register("mosi")(read_mosi)
EXPORTERS.register("mosi")(export_mosi)
READERS.register("folder")(read_folder)


def read_dataset(format: str, root: str | Path, tokenizer: Any = None, **options: Any) -> Corpus:
    """Read the dataset at ``root`` in ``format`` (``READERS.names()``).

    Args:
        format: ``msrvtt``, ``youcook2``, ``tgifqa``, ``msvdqa``, ``mosi`` or ``folder``.
        root: its folder (layouts in docs/data.md).
        tokenizer: tokenizes the text; default BERT's uncased WordPiece
            (:class:`~meltr.data.wordpiece.WordPieceTokenizer`).
        **options: fields of :class:`ReadOptions` and the format's own keyword arguments (e.g. MSRVTT's
            ``split``, ``per_caption``).
    """
    reader: Callable[..., Corpus] = READERS.get(format)
    names = {f.name for f in dataclasses.fields(ReadOptions)}
    common = ReadOptions(**{k: v for k, v in options.items() if k in names})
    own = {k: v for k, v in options.items() if k not in names}
    if tokenizer is None:
        from meltr.data.wordpiece import WordPieceTokenizer

        tokenizer = WordPieceTokenizer()
    try:
        return reader(root, tokenizer, common, **own)
    except TypeError as error:
        if "unexpected keyword" in str(error):
            raise TypeError(f"data format {format!r}: {error}; common options: {sorted(names)}") from None
        raise


def export_world(world: Any, format: str, out: str | Path, **options: Any) -> list[Path]:
    """Write ``world``'s train / meta / test splits in ``format`` under ``out`` (options: :class:`ExportOptions`)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    return EXPORTERS.get(format)(world, out, ExportOptions(**options))


__all__ = [
    "EXPORTERS",
    "READERS",
    "Corpus",
    "CorpusDataset",
    "CorpusSplit",
    "Example",
    "ExportOptions",
    "FormatError",
    "ReadOptions",
    "carve_meta",
    "export_world",
    "read_dataset",
]
