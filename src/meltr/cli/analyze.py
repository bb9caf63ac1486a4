"""``meltr analyze RUN_DIR``: the paper's Fig. 3 and Fig. 4 for a fine-tuning run (PNG + CSV)."""

from __future__ import annotations

import argparse
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "analyze",
        help="Fig. 3 (loss sweeps) and Fig. 4 (per-epoch sensitivity) of a finetune run",
        description="Write RUN_DIR/analysis/fig3.{png,csv} (MELTR(l) and dMELTR/dl_t while each loss sweeps 0 to 3, "
        "the others at their training averages) and fig4.{png,csv} (per-epoch mean dMELTR/dl_t per task).",
    )
    parser.add_argument("run_dir", help="a run directory written by meltr finetune")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from meltr.analysis.figures import analyze_run

    try:
        paths = analyze_run(args.run_dir)
    except ValueError as error:
        print(f"meltr analyze: {error}", file=sys.stderr)
        return 2
    for path in paths:
        print(path)
    return 0
