"""Entry point of the ``meltr`` console command.

Every module of :mod:`meltr.cli` that defines ``register(subparsers)`` adds its subcommand; the parser it adds
sets ``func`` to the function that runs it (``func(args) -> int``).

How every subcommand behaves: results go to stdout (JSON or a table), logs and progress bars to stderr (Python
``logging``). A failure is one line on stderr, ``meltr <command>: <what, where, fix>``, with exit code 2 for a usage
error (bad option, recipe, config value, file) and 1 for a runtime failure (disk full, read-only folder, non-finite
training); ``--debug`` (anywhere on the line) shows the traceback instead. Ctrl-C ends with one line (exit 130);
rerunning the same command resumes.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import logging
import pkgutil
import sys
import traceback
import warnings
from collections.abc import Sequence

import meltr.cli

USAGE, RUNTIME, INTERRUPTED = 2, 1, 130


class Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (``meltr <command>: <error>; see --help``), exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(USAGE, f"{self.prog}: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="meltr",
        description="Learning to fine-tune video-language foundation models with all of their losses.",
        epilog="--debug anywhere on the command line shows the traceback of a failure.",
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


class _StderrHandler(logging.Handler):
    """Log lines on stderr, through tqdm so that they do not break a progress bar."""

    def emit(self, record: logging.LogRecord) -> None:
        from tqdm import tqdm

        try:
            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:  # logging must never be what fails a run
            self.handleError(record)


def configure_logging(level: int = logging.INFO) -> None:
    """meltr's log records (and Python warnings, one line each) on stderr."""
    root = logging.getLogger("meltr")
    if not any(isinstance(h, _StderrHandler) for h in root.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        root.addHandler(handler)
    root.setLevel(level)

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        root.warning("warning: %s", message)

    warnings.showwarning = show


def describe(error: BaseException) -> tuple[str, int]:
    """One line and the exit code for an exception that ended a command."""
    from meltr.config import ConfigError

    text = " ".join(str(error.args[0] if isinstance(error, KeyError) and error.args else error).split())
    if isinstance(error, (ConfigError, ValueError, KeyError, FileNotFoundError, IsADirectoryError)):
        return text or type(error).__name__, USAGE
    if isinstance(error, OSError):
        where = f"{error.filename}: " if getattr(error, "filename", None) else ""
        reason = error.strerror or text
        if error.errno == errno.ENOSPC:
            return f"{where}{reason}: no space left; free some and rerun the same command to resume", RUNTIME
        if error.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
            return f"{where}{reason}: cannot write there; choose another --out (or out_root)", RUNTIME
        return f"{where}{reason}", RUNTIME
    if isinstance(error, FloatingPointError):
        return f"{text}; lower lr or check the data (rerun resumes from the last finished epoch)", RUNTIME
    return f"{type(error).__name__}: {text} (rerun with --debug for the traceback)", RUNTIME


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 0
    configure_logging()
    command = f"meltr {args.command}"
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        if debug:
            traceback.print_exc()
        print(f"{command}: interrupted; rerun the same command to resume", file=sys.stderr)
        return INTERRUPTED
    except Exception as error:
        if debug:
            traceback.print_exc()
        line, code = describe(error)
        print(f"{command}: {line}", file=sys.stderr)
        return code


if __name__ == "__main__":
    sys.exit(main())
