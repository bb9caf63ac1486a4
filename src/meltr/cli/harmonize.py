"""``meltr harmonize``: the experiment of "Scaling Multimodal Pre-Training via Cross-Modality Gradient Harmonization"
(Wu et al., NeurIPS 2022).

``meltr harmonize [--seeds 0 1 2] [--steps N] [--rows baseline gr ...] [--out docs/harmonize.md]`` pre-trains the
VATT-style backbone on the synthetic world with a known share of misaligned video-text pairs, once per row of the
paper's table (VATT, + RW (VA), + RW (VT), + GR, + CL, + Both) and seed, evaluates each (linear probes for video and
audio classification, zero-shot text-to-video retrieval) and writes the Markdown table, ``<stem>.csv``,
``<stem>-seeds.csv`` and the gradient-cosine plot ``<stem>-cosine.png`` (see :mod:`meltr.recipes.harmonize`).
The options are shorthands for fields of :class:`~meltr.recipes.harmonize.HarmonizeConfig`; ``--config X.yaml`` and
``KEY=VALUE`` set any field (``model.dim=64`` one key of the backbone's config, ``world.audio_noise=0.5`` one of the
world's; ``--set``, ``--model`` and ``--world`` say the same). Every finished (row, seed) is kept in the run directory
``--runs``; a rerun of the same command reuses them.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import shlex
from pathlib import Path

from meltr.cli._config import add_config_arguments, print_config, resolve

FLAGS = ("seeds", "rows", "steps", "batch_size")
"""The config fields that have an option of their own."""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``harmonize`` subcommand."""
    from meltr.recipes.harmonize import ROWS

    parser = subparsers.add_parser(
        "harmonize",
        help="gradient realignment and curriculum (Wu et al., NeurIPS 2022) on the world, in the paper's table",
        description="Pre-train the VATT-style backbone on the synthetic world with misaligned video-text pairs as "
        "VATT, + RW (VA), + RW (VT), + GR, + CL and + Both, over several seeds; evaluate video / audio "
        "classification by linear probes and zero-shot text-to-video retrieval; write the table (Markdown, CSV), "
        "the curriculum's precision / recall against the misaligned pairs and the gradient-cosine plot. Fields: "
        "HarmonizeConfig (meltr.recipes.harmonize).",
    )
    add_config_arguments(parser, "n_pretrain=500 model.dim=64")
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="seeds of the runs (default: 0 1 2)")
    parser.add_argument("--steps", type=int, default=None, help="pre-training steps of every run")
    parser.add_argument("--rows", nargs="+", choices=list(ROWS), default=None, help="rows of the table to run")
    parser.add_argument("--batch-size", type=int, default=None, help="clips per batch")
    parser.add_argument(
        "--out", type=Path, default=Path("docs/harmonize.md"), help="Markdown file to write (CSV and PNG next to it)"
    )
    parser.add_argument(
        "--runs", type=Path, default=Path("runs/harmonize"), help="the run directory (default: %(default)s)"
    )
    for flag, prefix, example in (
        ("--set", "", "n_pretrain=500"),
        ("--model", "model.", "dim=64"),
        ("--world", "world.", "audio_noise=0.5"),
    ):
        parser.add_argument(
            flag,
            dest=flag[2:],
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help=f"the same as the override {prefix}KEY=VALUE (repeatable), e.g. {flag} {example}",
        )
    parser.add_argument("--quiet", action="store_true", help="no progress bar, no per-run lines")
    parser.set_defaults(func=run)


def aliases(args: argparse.Namespace) -> list[str]:
    """``--set`` / ``--model`` / ``--world`` pairs as overrides (``dim=64`` of ``--model`` is ``model.dim=64``)."""
    overrides = []
    for option, prefix in (("set", ""), ("model", "model."), ("world", "world.")):
        for pair in getattr(args, option):
            if "=" not in pair or not pair.partition("=")[0].strip():
                raise ValueError(f"--{option} expects KEY=VALUE, got {pair!r}")
            overrides.append(prefix + pair.strip())
    return overrides


def command_line(args: argparse.Namespace, config) -> str:
    """The command that re-makes the run of ``args`` (every option spelled out, from the resolved config)."""
    parts = ["meltr", "harmonize", "--seeds", *map(str, config.seeds), "--steps", str(config.steps)]
    parts += ["--rows", *config.rows, "--batch-size", str(config.batch_size), "--out", str(args.out)]
    if args.runs != Path("runs/harmonize"):
        parts += ["--runs", str(args.runs)]
    if args.config is not None:
        parts += ["--config", str(args.config)]
    for option in ("set", "model", "world"):
        for pair in getattr(args, option):
            parts += [f"--{option}", pair]
    return shlex.join([*parts, *args.overrides])


def run(args: argparse.Namespace) -> int:
    """Run the experiment in its run directory and write the report."""
    from meltr.recipes.harmonize import HarmonizeConfig, run_harmonize, write_report
    from meltr.training.run_directory import RunDirectory

    config = resolve(HarmonizeConfig, args, {name: getattr(args, name) for name in FLAGS}, aliases(args))
    if args.print_config:
        return print_config(config)
    command = command_line(args, config)
    if args.quiet:
        logging.getLogger("meltr").setLevel(logging.WARNING)
    with RunDirectory(args.runs, "harmonize", dataclasses.asdict(config)) as directory:
        result = run_harmonize(config, progress=not args.quiet, directory=directory)
    paths = write_report(result, args.out, command)
    print(f"wrote {', '.join(map(str, paths))} ({result.seconds:.0f} s)")
    return 0
