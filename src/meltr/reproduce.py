"""MELTR's Tables 1-7 in miniature on the synthetic world (``meltr reproduce <table>``).

Each table is a list of rows, each row a set of recipe overrides on one shared miniature recipe; every row runs
for every seed through :func:`meltr.training.finetune.finetune` (run directories under
``runs/reproduce/table<N>/``; a finished run with the same recipe is reused), and the table prints mean +- std
over the seeds in the paper's layout, as Markdown and CSV.

The miniature recipe (``MINIATURE``) starts every run from the shipped pre-trained checkpoint and fine-tunes for a
fixed, small budget decided before any result was seen; ``--set key=value`` changes it for every run of a table.
Where the paper uses two datasets for one task (YouCook2 and MSRVTT), the second is a world of another seed.
"""

from __future__ import annotations

import csv
import json
import logging
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

# The shared miniature recipe: pre-trained backbone, small world, three epochs, the paper's MELTR settings.
MINIATURE: dict[str, Any] = {
    "checkpoint": "pretrained",
    "lr": 2e-4,
    "epochs": 3,
    "batch_size": 32,
    "meta_every": 3,
    "gamma": 0.1,
    "hypergrad": "identity",
    "backend": "jvp",
    "world": {"n_train": 480, "n_meta": 96, "n_test": 300, "seed": 0},
}
SECOND_DATASET = {"world": {"seed": 1}}  # MSRVTT's stand-in: the same kind of world, other clips


@dataclass(frozen=True)
class Column:
    key: str  # the metric as the task's evaluate() names it
    header: str
    higher_is_better: bool = True
    digits: int = 1
    scale: float = 1.0  # e.g. 100 for CIDEr, which Tables 4-5 print times 100


@dataclass(frozen=True)
class Row:
    label: str
    overrides: dict[str, Any]
    extra: dict[str, str] = field(default_factory=dict)  # fixed cells (e.g. Table 7's coefficients)


@dataclass(frozen=True)
class Table:
    number: int
    title: str
    columns: tuple[Column, ...]
    rows: tuple[Row, ...]
    base: dict[str, Any] = field(default_factory=dict)
    extra_headers: tuple[str, ...] = ()
    note: str = ""


RETRIEVAL = (
    Column("t2v/R@1", "R@1"),
    Column("t2v/R@5", "R@5"),
    Column("t2v/R@10", "R@10"),
    Column("t2v/MdR", "MedR", higher_is_better=False),
)
CAPTIONING = (
    Column("BLEU-3", "BLEU-3", digits=2),
    Column("BLEU-4", "BLEU-4", digits=2),
    Column("METEOR", "METEOR", digits=2),
    Column("ROUGE-L", "ROUGE-L", digits=2),
    Column("CIDEr", "CIDEr", digits=1, scale=100.0),
)
SINGLE = {"combiner": "single_task"}
MELTR = {"combiner": "meltr"}
UNIVL, VIOLET, ALLINONE = {"backbone": "univl"}, {"backbone": "violet"}, {"backbone": "allinone"}
JOINT = {"task_options": {"primary": "joint"}}
PAIRWISE_EVAL = {"eval_clips": 100, "val_clips": 64}  # one joint pass per (text, video) pair
TRANSCRIPT = {"backbone_options": {"caption_from_transcript": True}}
TABLE7_TASKS = ("joint", "m_joint", "align", "m_align", "cmlm", "cmfm", "decoder", "m_decoder")


def _table7_rows() -> tuple[Row, ...]:
    from meltr.combine.linear import TABLE7_SCHEMES

    rows = []
    for scheme in "ABCDE":
        weights = TABLE7_SCHEMES[scheme]
        cells = {task: f"{weights.get(task, 0.0):g}" for task in TABLE7_TASKS}
        rows.append(Row(f"({scheme})", {"combiner": "manual", "combiner_options": {"scheme": scheme}}, cells))
    rows.append(Row("MELTR", MELTR, dict.fromkeys(TABLE7_TASKS, "adaptive")))
    return tuple(rows)


def _tables() -> dict[int, Table]:
    return {
        1: Table(
            1,
            "Text-to-video retrieval (YouCook2 in miniature), UniVL-style backbone",
            RETRIEVAL,
            (
                Row("UniVL-Joint", {**SINGLE, **JOINT, **PAIRWISE_EVAL}),
                Row("UniVL-Align", SINGLE),
                Row("UniVL + MELTR-", {**MELTR, "gamma": 0.0}),
                Row("UniVL + MELTR", MELTR),
            ),
            base=UNIVL,
            note="MELTR- drops the regulariser (gamma = 0). UniVL-Joint ranks with the cross encoder on "
            f"{PAIRWISE_EVAL['eval_clips']} test clips (one joint pass per pair); the other rows use every test clip.",
        ),
        2: Table(
            2,
            "Text-to-video retrieval (MSRVTT in miniature), three backbones",
            RETRIEVAL,
            (
                Row("UniVL-Joint", {**UNIVL, **SINGLE, **JOINT, **PAIRWISE_EVAL}),
                Row("UniVL-Align", {**UNIVL, **SINGLE}),
                Row("UniVL + MELTR", {**UNIVL, **MELTR}),
                Row("Violet", {**VIOLET, **SINGLE, **PAIRWISE_EVAL}),
                Row("Violet + MELTR", {**VIOLET, **MELTR, **PAIRWISE_EVAL}),
                Row("All-in-one", {**ALLINONE, **SINGLE}),
                Row("All-in-one + MELTR", {**ALLINONE, **MELTR}),
            ),
            base=SECOND_DATASET,
            note="Primary losses: Align (UniVL), VTM (Violet), VTC (All-in-one). Rows ranked by the cross encoder "
            f"(UniVL-Joint, Violet) use {PAIRWISE_EVAL['eval_clips']} test clips. One world stands for both "
            "MSRVTT splits.",
        ),
        3: Table(
            3,
            "Video question answering (TGIF-QA and MSVD-QA in miniature), Violet-style backbone",
            (
                Column("accuracy/action", "Action"),
                Column("accuracy/transition", "Transition"),
                Column("accuracy/frame", "FrameQA"),
                Column("accuracy/open", "MSVD-QA"),
            ),
            (Row("Violet", SINGLE), Row("Violet + MELTR", MELTR)),
            base={**VIOLET, "task": "qa"},
            note="One model answers the four question types (the paper trains one per dataset); accuracy in %.",
        ),
        4: Table(
            4,
            "Video captioning (YouCook2 in miniature), UniVL-style backbone",
            CAPTIONING,
            (
                Row("UniVL", SINGLE, {"Modality": "V"}),
                Row("UniVL + MELTR", MELTR, {"Modality": "V"}),
                Row("UniVL", {**SINGLE, **TRANSCRIPT}, {"Modality": "V+T"}),
                Row("UniVL + MELTR", {**MELTR, **TRANSCRIPT}, {"Modality": "V+T"}),
            ),
            base={**UNIVL, "task": "captioning"},
            extra_headers=("Modality",),
            note="V: the decoder sees the video; V+T: the video and the transcript. CIDEr x 100 as the paper.",
        ),
        5: Table(
            5,
            "Video captioning (MSRVTT in miniature), UniVL-style backbone",
            CAPTIONING,
            (Row("UniVL", SINGLE, {"Modality": "V"}), Row("UniVL + MELTR", MELTR, {"Modality": "V"})),
            base={**UNIVL, "task": "captioning", **SECOND_DATASET},
            extra_headers=("Modality",),
            note="CIDEr x 100 as the paper.",
        ),
        6: Table(
            6,
            "Multimodal sentiment analysis (CMU-MOSI in miniature), UniVL-style backbone",
            (
                Column("BA", "BA"),
                Column("F1", "F1"),
                Column("MAE", "MAE", higher_is_better=False, digits=3),
                Column("corr", "Corr", digits=3),
            ),
            (Row("UniVL", SINGLE), Row("UniVL + MELTR", MELTR)),
            base={**UNIVL, "task": "sentiment"},
            note="BA and F1 with the CMU-MOSI convention (non-negative vs negative), in %.",
        ),
        7: Table(
            7,
            "Manual multi-task schemes against MELTR: video captioning (YouCook2 V+T in miniature), UniVL-style",
            (*CAPTIONING[:4], Column("CIDEr", "CIDEr", digits=2)),
            _table7_rows(),
            base={**UNIVL, "task": "captioning", **TRANSCRIPT},
            extra_headers=TABLE7_TASKS,
            note="Coefficients of each task loss; (A)-(E) as the paper. CIDEr as the scorer returns it, as Table 7.",
        ),
    }


TABLES: dict[int, Table] = {}


def get_table(number: int | str) -> Table:
    if not TABLES:
        TABLES.update(_tables())
    try:
        return TABLES[int(str(number).removeprefix("table"))]
    except (KeyError, ValueError):
        raise ValueError(f"reproduce: unknown table {number!r}; choose from 1-{len(_tables())}") from None


def _merge(values: dict[str, Any], overrides: dict[str, Any]) -> None:
    """Merge ``overrides`` into ``values`` in place, nested dicts field by field."""
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(values.get(key), dict):
            _merge(values[key], value)
        else:
            values[key] = json.loads(json.dumps(value))  # a copy: rows share their override dicts


def run_config(table: Table, row: Row, seed: int, out_root: Path, settings: Sequence[str] = ()):
    """The :class:`FinetuneConfig` of one row and seed: miniature recipe, table base, row, ``settings``."""
    from meltr.training.finetune import FinetuneConfig, apply_overrides

    values: dict[str, Any] = json.loads(json.dumps(MINIATURE))  # a deep copy
    slug = row.label.lower().replace(" + ", "+").replace(" ", "-").replace("(", "").replace(")", "")
    if "Modality" in row.extra:
        slug += "-" + row.extra["Modality"].lower().replace("+", "")
    _merge(values, table.base)
    _merge(values, row.overrides)
    apply_overrides(values, list(settings))
    _merge(values, {"seed": seed, "name": f"{slug}-s{seed}", "out_root": str(out_root / f"table{table.number}")})
    return FinetuneConfig.from_dict(values, source=f"table {table.number}, row {row.label!r}")


def _finished(config) -> dict[str, float] | None:
    """The test scores of a finished run of exactly this recipe, or None."""
    from meltr._yaml import load as yaml_load
    from meltr.training.finetune import starting_point

    run_dir = config.run_dir
    try:
        same = yaml_load((run_dir / "config.yaml").read_text()) == config.as_dict()
        same = same and json.loads((run_dir / "start.json").read_text())["sha256"] == starting_point(config)["sha256"]
        results = json.loads((run_dir / "results.json").read_text())
    except (FileNotFoundError, ValueError):
        return None
    return results["test"] if same else None


def run_table(
    number: int | str,
    seeds: Sequence[int] = (0, 1, 2),
    out_root: str | Path = "runs/reproduce",
    settings: Sequence[str] = (),
    progress: bool = True,
) -> dict[str, Any]:
    """Fine-tune every row of a table for every seed (reusing finished runs) and collect the test scores.

    Returns ``{"table": Table, "scores": {row label: [scores per seed]}, "seconds": {row label: [...]}}``.
    """
    from meltr.training.finetune import build_world, finetune

    table = get_table(number)
    if not seeds:
        raise ValueError("reproduce: give at least one seed")
    out_root = Path(out_root)
    configs = [(row, [run_config(table, row, seed, out_root, settings) for seed in seeds]) for row in table.rows]
    worlds: dict[str, Any] = {}
    scores: dict[str, list[dict[str, float]]] = {}
    seconds: dict[str, list[float]] = {}
    for row, row_configs in configs:
        key = f"{row.label} {json.dumps(row.extra, sort_keys=True)}"
        for config in row_configs:
            test = _finished(config)
            if test is None:
                world_key = json.dumps(config.world, sort_keys=True)
                if world_key not in worlds:
                    worlds[world_key] = build_world(config)
                extra = " ".join(row.extra.values())
                logger.info("table %s: %s %s seed %d", table.number, row.label, extra, config.seed)
                result = finetune(config, world=worlds[world_key], progress=progress)
                test = result.test
            scores.setdefault(key, []).append(test)
            results = json.loads((config.run_dir / "results.json").read_text())
            seconds.setdefault(key, []).append(float(results["seconds"]))
    return {"table": table, "scores": scores, "seconds": seconds, "seeds": list(seeds), "settings": list(settings)}


def _cell(values: list[float], digits: int) -> str:
    mean = statistics.fmean(values)
    if len(values) < 2:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def summarise(outcome: dict[str, Any]) -> tuple[list[str], list[list[str]], list[dict[str, Any]]]:
    """Markdown header and rows (mean +- std) and CSV records (mean, std and every seed's value)."""
    table: Table = outcome["table"]
    header = [
        "Model",
        *table.extra_headers,
        *(c.header + (" ↑" if c.higher_is_better else " ↓") for c in table.columns),
    ]
    header.append("time (s)")
    cells, records = [], []
    for row in table.rows:
        key = f"{row.label} {json.dumps(row.extra, sort_keys=True)}"
        runs = outcome["scores"][key]
        line = [row.label, *(row.extra.get(h, "") for h in table.extra_headers)]
        record: dict[str, Any] = {"model": row.label, **{h: row.extra.get(h, "") for h in table.extra_headers}}
        for column in table.columns:
            missing = [i for i, run in enumerate(runs) if column.key not in run]
            if missing:
                raise ValueError(f"table {table.number}, row {row.label!r}: no metric {column.key!r} in the results")
            values = [run[column.key] * column.scale for run in runs]
            line.append(_cell(values, column.digits))
            record[f"{column.header} mean"] = statistics.fmean(values)
            record[f"{column.header} std"] = statistics.stdev(values) if len(values) > 1 else 0.0
            for seed, value in zip(outcome["seeds"], values, strict=True):
                record[f"{column.header} seed{seed}"] = value
        times = outcome["seconds"][key]
        line.append(f"{statistics.fmean(times):.0f}")
        record["seconds mean"] = statistics.fmean(times)
        cells.append(line)
        records.append(record)
    return header, cells, records


def write(outcome: dict[str, Any], out_dir: str | Path, command: str = "") -> tuple[Path, Path]:
    """``table<N>.md`` and ``table<N>.csv`` in ``out_dir``; returns their paths."""
    table: Table = outcome["table"]
    records = summarise(outcome)[2]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    seeds = ", ".join(map(str, outcome["seeds"]))
    lines = [f"### Table {table.number} in miniature: {table.title}", ""]
    lines.append(f"Mean ± std over seeds {seeds} on the synthetic world's test split. {table.note}".strip())
    lines.append(f"Recipe: `meltr.reproduce.MINIATURE` {_recipe_text(outcome['settings'])}.")
    if command:
        lines.append(f"Command: `{command}`")
    lines += ["", as_markdown(outcome), ""]
    markdown = out_dir / f"table{table.number}.md"
    markdown.write_text("\n".join(lines))
    path = out_dir / f"table{table.number}.csv"
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(records[0]))
        writer.writeheader()
        writer.writerows(records)
    return markdown, path


def _recipe_text(settings: Sequence[str]) -> str:
    base = ", ".join(f"{k}={v}" for k, v in MINIATURE.items() if k != "world")
    world = ", ".join(f"{k}={v}" for k, v in MINIATURE["world"].items())
    extra = f"; changed: {' '.join(settings)}" if settings else ""
    return f"({base}; world {world}{extra})"


def as_markdown(outcome: dict[str, Any]) -> str:
    header, cells, _ = summarise(outcome)
    return "\n".join(
        ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
        + ["| " + " | ".join(line) + " |" for line in cells]
    )


__all__ = ["MINIATURE", "Column", "Row", "Table", "as_markdown", "get_table", "run_table", "summarise", "write"]
