"""Entry point of the ``meltr`` console command.

Every module of :mod:`meltr.cli` that defines ``register(subparsers)`` adds its subcommand; the parser it adds
sets ``func`` to the function that runs it (``func(args) -> int``).
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from collections.abc import Sequence

import meltr.cli


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="meltr",
        description="Learning to fine-tune video-language foundation models with all of their losses.",
    )
    parser.add_argument("--version", action="version", version=f"meltr {_version()}")
    subparsers = parser.add_subparsers(title="subcommands", dest="command", metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(meltr.cli.__path__), key=lambda m: m.name):
        if info.name == "main" or info.name.startswith("_"):
            continue
        module = importlib.import_module(f"meltr.cli.{info.name}")
        register = getattr(module, "register", None)
        if register is not None:
            register(subparsers)
    return parser


def _version() -> str:
    from meltr import __version__

    return __version__


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 0
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
