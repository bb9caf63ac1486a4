"""``meltr reproduce <table>``: one of MELTR's Tables 1-7 in miniature on the synthetic world.

    meltr reproduce 7                      # Table 7: manual schemes (A)-(E) vs MELTR, 3 seeds
    meltr reproduce 1 --seeds 0 1 2 3 4    # more seeds
    meltr reproduce 2 epochs=3             # change the miniature recipe for every run of the table (--set: the same)
    meltr reproduce 2 --config my.yaml     # start every run from another fine-tuning recipe
    meltr reproduce 7 --print-config       # the resolved recipe of every row (first seed)
    meltr reproduce 1 --lrs 1e-4 3e-4 --tune-seeds 1   # each row's learning rate chosen on seed 0's validation
    meltr reproduce --list                 # what each table covers

Every run is a ``meltr finetune`` run directory under ``--runs`` (a finished run of the same recipe is reused, an
interrupted one resumes); the table goes to ``--out`` as ``table<N>.md`` and ``table<N>.csv`` and is printed.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "reproduce",
        help="rebuild one of MELTR's Tables 1-7 in miniature (mean +- std over seeds, Markdown + CSV)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("table", nargs="?", help="table number, 1-7")
    parser.add_argument(
        "--config",
        default=None,
        help="the fine-tuning recipe every run starts from: a shipped name or a YAML file (default: "
        "reproduce/miniature)",
    )
    parser.add_argument(
        "overrides", nargs="*", metavar="KEY=VALUE", help="change a field of the recipe for every run, e.g. epochs=3"
    )
    parser.add_argument("--print-config", action="store_true", help="print the resolved config as YAML and exit")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds (default: 0 1 2)")
    parser.add_argument(
        "--set", dest="settings", nargs="*", default=[], metavar="KEY=VALUE", help="the same as KEY=VALUE"
    )
    parser.add_argument(
        "--runs", type=Path, default=Path("runs/reproduce"), help="run directories (default: %(default)s)"
    )
    parser.add_argument("--out", type=Path, default=None, help="where table<N>.md/.csv go (default: --runs)")
    parser.add_argument(
        "--lrs",
        nargs="+",
        type=float,
        default=None,
        help="tune every fine-tuned row's learning rate over these values on the validation split (the same "
        "budget for each row) and report its runs at the chosen one",
    )
    parser.add_argument(
        "--tune-seeds",
        type=int,
        default=None,
        help="with --lrs: tune on the first K seeds only (default: every seed)",
    )
    parser.add_argument("--list", action="store_true", help="list the tables and their rows")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from meltr.config import as_yaml, read_recipe
    from meltr.recipes import config_path
    from meltr.recipes.reproduce import MINIATURE, MINIATURE_CONFIG, get_table, run_config, run_table, write

    if args.list:
        for number in range(1, 8):
            table = get_table(number)
            rows = ", ".join(dict.fromkeys(row.label for row in table.rows))
            print(f"{number}: {table.title}\n   rows: {rows}")
        return 0
    if args.table is None:
        raise ValueError("give a table number (1-7) or --list")
    table = get_table(args.table)
    recipe = MINIATURE if args.config is None else read_recipe(config_path(args.config))
    settings = [*args.settings, *args.overrides]
    if not args.seeds:
        raise ValueError("--seeds: give at least one seed")
    if args.print_config:
        for row in table.rows:
            config = run_config(table, row, args.seeds[0], args.runs, settings, recipe=recipe)
            print(f"# table {table.number}, row {row.label!r}, seed {args.seeds[0]}")
            print(as_yaml(config), end="")
            print("---")
        return 0
    command = "meltr reproduce " + shlex.join(sys.argv[2:]) if sys.argv[1:2] == ["reproduce"] else ""
    outcome = run_table(
        args.table, args.seeds, args.runs, settings, lrs=args.lrs, tune_seeds=args.tune_seeds, recipe=recipe
    )
    name = MINIATURE_CONFIG if args.config is None else str(args.config)
    markdown, csv_path = write(outcome, args.out or args.runs, command=command, recipe_name=name)
    print(markdown.read_text())
    print(f"written: {markdown}, {csv_path}")
    return 0
