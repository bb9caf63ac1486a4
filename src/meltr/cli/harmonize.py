"""``meltr harmonize``: the experiment of "Scaling Multimodal Pre-Training via Cross-Modality Gradient Harmonization"
(Wu et al., NeurIPS 2022).

``meltr harmonize [--seeds 0 1 2] [--steps N] [--rows baseline gr ...] [--out docs/harmonize.md]`` pre-trains the
VATT-style backbone on the synthetic world with a known share of misaligned video-text pairs, once per row of the
paper's table (VATT, + RW (VA), + RW (VT), + GR, + CL, + Both) and seed, evaluates each (linear probes for video and
audio classification, zero-shot text-to-video retrieval) and writes the Markdown table, ``<stem>.csv``,
``<stem>-seeds.csv`` and the gradient-cosine plot ``<stem>-cosine.png`` (see :mod:`meltr.recipes.harmonize`).
``--set key=value`` changes any field of :class:`~meltr.recipes.harmonize.HarmonizeConfig`, ``--model key=value`` a
field of the backbone's config and ``--world key=value`` one of the world's.
"""

from __future__ import annotations

import argparse
import dataclasses
import shlex
from pathlib import Path

from tqdm import tqdm

from meltr.config import parse_assignments


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``harmonize`` subcommand."""
    from meltr.recipes.harmonize import ROWS, HarmonizeConfig

    defaults = HarmonizeConfig()
    parser = subparsers.add_parser(
        "harmonize",
        help="gradient realignment and curriculum (Wu et al., NeurIPS 2022) on the world, in the paper's table",
        description="Pre-train the VATT-style backbone on the synthetic world with misaligned video-text pairs as "
        "VATT, + RW (VA), + RW (VT), + GR, + CL and + Both, over several seeds; evaluate video / audio "
        "classification by linear probes and zero-shot text-to-video retrieval; write the table (Markdown, CSV), "
        "the curriculum's precision / recall against the misaligned pairs and the gradient-cosine plot.",
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=list(defaults.seeds), help="seeds of the runs")
    parser.add_argument("--steps", type=int, default=defaults.steps, help="pre-training steps of every run")
    parser.add_argument("--rows", nargs="+", choices=list(ROWS), default=list(ROWS), help="rows of the table to run")
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size, help="clips per batch")
    parser.add_argument(
        "--out", type=Path, default=Path("docs/harmonize.md"), help="Markdown file to write (CSV and PNG next to it)"
    )
    for flag, what in (("--set", "the experiment's config"), ("--model", "the backbone's config")):
        parser.add_argument(
            flag,
            dest=flag[2:],
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help=f"change a field of {what} (repeatable), e.g. {flag} "
            + ("n_pretrain=500" if flag == "--set" else "dim=64"),
        )
    parser.add_argument(
        "--world",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="change a field of the world's config (repeatable), e.g. --world audio_noise=0.5",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar, no per-run lines")
    parser.set_defaults(func=run)


def command_line(args: argparse.Namespace) -> str:
    """The command that re-makes the run of ``args`` (every option spelled out)."""
    parts = ["meltr", "harmonize", "--seeds", *map(str, args.seeds), "--steps", str(args.steps)]
    parts += ["--rows", *args.rows, "--batch-size", str(args.batch_size), "--out", str(args.out)]
    for option in ("set", "model", "world"):
        for pair in getattr(args, option):
            parts += [f"--{option}", pair]
    return " ".join(shlex.quote(part) for part in parts)


def run(args: argparse.Namespace) -> int:
    """Run the experiment and write the report."""
    from meltr.recipes.harmonize import HarmonizeConfig, run_harmonize, write_report

    fields = parse_assignments(args.set, "--set", "harmonize")
    own_options = {"seeds", "rows", "model", "world", "steps", "batch_size"}
    known = {f.name for f in dataclasses.fields(HarmonizeConfig)} - own_options
    unknown = sorted(set(fields) - known)
    if unknown:
        raise SystemExit(
            f"meltr harmonize: --set cannot change {unknown}; its fields are {', '.join(sorted(known))} "
            "(seeds, rows, steps, batch_size, model and world have their own options)"
        )
    base = HarmonizeConfig()
    try:
        config = HarmonizeConfig(
            seeds=tuple(args.seeds),
            rows=tuple(args.rows),
            steps=args.steps,
            batch_size=args.batch_size,
            model={**base.model, **parse_assignments(args.model, "--model", "harmonize")},
            world={**base.world, **parse_assignments(args.world, "--world", "harmonize")},
            **fields,
        )
    except (TypeError, ValueError) as error:
        raise SystemExit(f"meltr harmonize: {error}") from None
    command = command_line(args)
    log = None if args.quiet else tqdm.write
    result = run_harmonize(config, progress=not args.quiet, log=log)
    paths = write_report(result, args.out, command)
    print(f"wrote {', '.join(map(str, paths))} ({result.seconds:.0f} s)")
    return 0
