"""MELTR's Tables 1-7 in miniature on the synthetic world (``meltr reproduce <table>``).

Each table is a shipped config, ``reproduce/table<N>.yaml`` (:func:`load_table`): its title, columns and rows, each
row a set of recipe overrides on one shared miniature recipe, ``reproduce/miniature.yaml``; every row runs for every
seed through :func:`meltr.recipes.finetune.finetune` (run directories under
``runs/reproduce/table<N>/``; a finished run with the same recipe is reused), and the table prints mean +- std
over the seeds in the paper's layout, as Markdown and CSV.

The miniature recipe (:data:`MINIATURE`) starts every run from the shipped pre-trained checkpoint and fine-tunes for a
fixed, small budget decided before any result was seen; ``--set key=value`` changes it for every run of a table.
Where the paper uses two datasets for one task (YouCook2 and MSRVTT), the second is a world of another seed.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from meltr._yaml import load as yaml_load
from meltr.recipes import config_path

logger = logging.getLogger(__name__)

MINIATURE_CONFIG = "reproduce/miniature"
"""The shipped config every run of every table starts from (a :class:`FinetuneConfig` recipe)."""
MINIATURE: dict[str, Any] = yaml_load(config_path(MINIATURE_CONFIG).read_text())
"""Its fields: the pre-trained backbone, a small world, three epochs, the paper's MELTR settings."""


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
    overrides: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, str] = field(default_factory=dict)  # fixed cells (e.g. Table 7's coefficients)
    zero_shot: bool = False  # the recipe's model tested without fine-tuning (the row every fine-tuned one must beat)


@dataclass(frozen=True)
class Table:
    number: int
    title: str
    columns: tuple[Column, ...]
    rows: tuple[Row, ...]
    base: dict[str, Any] = field(default_factory=dict)
    extra_headers: tuple[str, ...] = ()
    note: str = ""


def load_table(number: int) -> Table:
    """Table ``number`` from its shipped config ``reproduce/table<number>.yaml``.

    Raises:
        ValueError: the file has a field that is not a table's, a column's or a row's (names the file and field).
    """
    path = config_path(f"reproduce/table{number}")
    values = yaml_load(path.read_text())
    fields = {f.name for f in dataclasses.fields(Table)} - {"number"}
    _check_fields(values, fields, str(path))
    try:
        columns = []
        for column in values.pop("columns"):
            _check_fields(column, {f.name for f in dataclasses.fields(Column)}, f"{path}: columns")
            columns.append(Column(**column))
        rows = []
        for row in values.pop("rows"):
            _check_fields(row, {f.name for f in dataclasses.fields(Row)}, f"{path}: rows")
            extra = {header: _cell_text(value) for header, value in row.pop("extra", {}).items()}
            rows.append(Row(extra=extra, **row))
        extra_headers = tuple(values.pop("extra_headers", ()))
        return Table(number, columns=tuple(columns), rows=tuple(rows), extra_headers=extra_headers, **values)
    except (KeyError, TypeError) as error:
        raise ValueError(f"{path}: a table needs title, columns and rows; each row a label ({error})") from None


def _check_fields(values: Any, fields: set[str], source: str) -> None:
    if not isinstance(values, dict):
        raise ValueError(f"{source}: expected a mapping of field: value, got {values!r}")
    unknown = sorted(set(values) - fields)
    if unknown:
        raise ValueError(f"{source}: unknown field(s) {unknown}; known fields: {sorted(fields)}")


def _cell_text(value: Any) -> str:
    """A fixed cell as the table prints it (a coefficient as ``:g``: 1, 0.5, 8)."""
    return f"{value:g}" if isinstance(value, int | float) and not isinstance(value, bool) else str(value)


TABLES: dict[int, Table] = {}
NUMBERS = range(1, 8)


def get_table(number: int | str) -> Table:
    try:
        key = int(str(number).removeprefix("table"))
    except ValueError:
        key = -1
    if key not in NUMBERS:
        raise ValueError(f"reproduce: unknown table {number!r}; choose from 1-{NUMBERS[-1]}")
    if key not in TABLES:
        TABLES[key] = load_table(key)
    return TABLES[key]


def _merge(values: dict[str, Any], overrides: dict[str, Any]) -> None:
    """Merge ``overrides`` into ``values`` in place, nested dicts field by field."""
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(values.get(key), dict):
            _merge(values[key], value)
        else:
            values[key] = json.loads(json.dumps(value))  # a copy: rows share their override dicts


def run_config(
    table: Table,
    row: Row,
    seed: int,
    out_root: Path,
    settings: Sequence[str] = (),
    lr: float | None = None,
    recipe: dict[str, Any] | None = None,
):
    """The :class:`FinetuneConfig` of one row and seed: the recipe (default :data:`MINIATURE`), table base, row,
    ``settings``, then ``lr`` (a learning rate being tuned: the run directory's name then carries it)."""
    from meltr.recipes.finetune import FinetuneConfig, apply_overrides

    values: dict[str, Any] = json.loads(json.dumps(MINIATURE if recipe is None else recipe))  # a deep copy
    slug = row.label.lower().replace(" + ", "+").replace(" ", "-").replace("(", "").replace(")", "")
    if "Modality" in row.extra:
        slug += "-" + row.extra["Modality"].lower().replace("+", "")
    _merge(values, table.base)
    _merge(values, row.overrides)
    apply_overrides(values, list(settings))
    if lr is not None:
        values["lr"] = lr
        slug += f"-lr{lr:g}"
    _merge(values, {"seed": seed, "name": f"{slug}-s{seed}", "out_root": str(out_root / f"table{table.number}")})
    return FinetuneConfig.from_dict(values, source=f"table {table.number}, row {row.label!r}")


def _finished(config) -> dict[str, float] | None:
    """The test scores of a finished run of exactly this recipe, or None."""
    from meltr.recipes.finetune import starting_point

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
    lrs: Sequence[float] | None = None,
    tune_seeds: int | None = None,
    recipe: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Fine-tune every row of a table for every seed (reusing finished runs) and collect the test scores.

    ``recipe`` is the fine-tuning recipe every run starts from (default: the shipped :data:`MINIATURE`).

    With ``lrs``, every fine-tuned row gets the same tuning budget: it runs at each learning rate on the first
    ``tune_seeds`` seeds (all of them by default), the rate with the best mean validation metric of the selected
    epoch is chosen (:mod:`meltr.recipes.tuning`; the test split is never read for it), and the row reports its
    runs at that rate on every seed.

    Returns ``{"table", "scores": {row key: [test scores per seed]}, "seconds": {...}, "seeds", "settings",
    "lrs": {row key: chosen lr}, "validation": {row key: {lr: [validation scores]}}}``.
    """
    from meltr.recipes.finetune import build_world, finetune, zero_shot
    from meltr.recipes.tuning import best_choice, validation_score

    table = get_table(number)
    seeds = list(seeds)
    if not seeds:
        raise ValueError("reproduce: give at least one seed")
    if lrs is not None and (not lrs or any(not lr > 0 for lr in lrs)):
        raise ValueError(f"reproduce: --lrs must be positive learning rates, got {list(lrs)}")
    if tune_seeds is not None and not 1 <= tune_seeds <= len(seeds):
        raise ValueError(f"reproduce: --tune-seeds must be between 1 and the number of seeds, got {tune_seeds}")
    out_root = Path(out_root)
    tuning_seeds = seeds[: tune_seeds or len(seeds)]
    grid: list[float | None] = list(lrs) if lrs else [None]
    # Build (and so validate) every recipe before the first run.
    for row in table.rows:
        for seed in seeds:
            for lr in [None] if row.zero_shot else grid:
                run_config(table, row, seed, out_root, settings, lr, recipe)
    worlds: dict[str, Any] = {}

    def world_of(config):
        key = json.dumps(config.world, sort_keys=True)
        if key not in worlds:
            worlds[key] = build_world(config)
        return worlds[key]

    def run(row: Row, config) -> tuple[dict[str, float], float]:
        test = _finished(config)
        if test is None:
            extra = " ".join(row.extra.values())
            logger.info("table %s: %s %s seed %d lr %g", table.number, row.label, extra, config.seed, config.lr)
            test = finetune(config, world=world_of(config), progress=progress).test
        results = json.loads((config.run_dir / "results.json").read_text())
        return test, float(results["seconds"])

    outcome: dict[str, Any] = {
        "table": table,
        "scores": {},
        "seconds": {},
        "seeds": seeds,
        "settings": list(settings),
        "lrs": {},
        "validation": {},
        "tuning_seeds": tuning_seeds if lrs else [],
        "recipe": MINIATURE if recipe is None else recipe,
    }
    for row in table.rows:
        key = row_key(row)
        if row.zero_shot:
            for seed in seeds:
                config = run_config(table, row, seed, out_root, settings, recipe=recipe)
                outcome["scores"].setdefault(key, []).append(zero_shot(config, world_of(config)))
                outcome["seconds"].setdefault(key, []).append(0.0)
            continue
        validation: dict[float | None, list[float]] = {}
        for seed in tuning_seeds:
            for lr in grid:
                config = run_config(table, row, seed, out_root, settings, lr, recipe)
                run(row, config)
                validation.setdefault(lr, []).append(validation_score(config.run_dir))
        chosen = best_choice(validation)
        for seed in seeds:
            test, seconds = run(row, run_config(table, row, seed, out_root, settings, chosen, recipe))
            outcome["scores"].setdefault(key, []).append(test)
            outcome["seconds"].setdefault(key, []).append(seconds)
        if lrs:
            outcome["lrs"][key] = chosen
            outcome["validation"][key] = validation
    return outcome


def row_key(row: Row) -> str:
    """A row's key in an outcome (the label alone is not unique: Table 4 has one row per input modality)."""
    return f"{row.label} {json.dumps(row.extra, sort_keys=True)}"


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
    chosen = outcome.get("lrs") or {}
    if chosen:
        header.append("lr")
    header.append("time (s)")
    cells, records = [], []
    for row in table.rows:
        key = row_key(row)
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
        if chosen:
            line.append(f"{chosen[key]:g}" if key in chosen else "-")
            record["lr"] = chosen.get(key, "")
        times = outcome["seconds"][key]
        line.append(f"{statistics.fmean(times):.0f}")
        record["seconds mean"] = statistics.fmean(times)
        cells.append(line)
        records.append(record)
    return header, cells, records


def write(
    outcome: dict[str, Any], out_dir: str | Path, command: str = "", recipe_name: str = MINIATURE_CONFIG
) -> tuple[Path, Path]:
    """``table<N>.md`` and ``table<N>.csv`` in ``out_dir``; returns their paths."""
    table: Table = outcome["table"]
    records = summarise(outcome)[2]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    seeds = ", ".join(map(str, outcome["seeds"]))
    lines = [f"### Table {table.number} in miniature: {table.title}", ""]
    lines.append(f"Mean ± std over seeds {seeds} on the synthetic world's test split. {table.note}".strip())
    recipe = outcome.get("recipe", MINIATURE)
    where = f"the shipped config `{recipe_name}`" if recipe is MINIATURE else f"`{recipe_name}`"
    lines.append(f"Recipe: {where} {_recipe_text(outcome['settings'], recipe)}.")
    if command:
        lines.append(f"Command: `{command}`")
    lines += ["", as_markdown(outcome), ""]
    if outcome.get("validation"):
        lines.append(
            f"Each fine-tuned row's learning rate (column lr) was chosen by the validation metric of its selected "
            f"epoch, mean over seeds {', '.join(map(str, outcome['tuning_seeds']))}; validation per learning rate:"
        )
        lines.append("")
        for row in table.rows:
            per_lr = outcome["validation"].get(row_key(row))
            if per_lr:
                extra = " ".join(row.extra.values())
                cells = ", ".join(f"{lr:g}: {statistics.fmean(v):.3g}" for lr, v in per_lr.items())
                lines.append(f"- {row.label}{' ' + extra if extra else ''}: {cells}")
        lines.append("")
    markdown = out_dir / f"table{table.number}.md"
    markdown.write_text("\n".join(lines))
    path = out_dir / f"table{table.number}.csv"
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(records[0]))
        writer.writeheader()
        writer.writerows(records)
    return markdown, path


def _recipe_text(settings: Sequence[str], recipe: dict[str, Any] = MINIATURE) -> str:
    base = ", ".join(f"{k}={v}" for k, v in recipe.items() if k != "world")
    world = ", ".join(f"{k}={v}" for k, v in recipe.get("world", {}).items())
    extra = f"; changed: {' '.join(settings)}" if settings else ""
    return f"({base}; world {world}{extra})"


def as_markdown(outcome: dict[str, Any]) -> str:
    header, cells, _ = summarise(outcome)
    return "\n".join(
        ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
        + ["| " + " | ".join(line) + " |" for line in cells]
    )


__all__ = [
    "MINIATURE",
    "MINIATURE_CONFIG",
    "Column",
    "Row",
    "Table",
    "as_markdown",
    "get_table",
    "load_table",
    "row_key",
    "run_table",
    "summarise",
    "write",
]
