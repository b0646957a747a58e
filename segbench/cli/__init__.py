"""The ``segbench`` command line.

Bad input (a malformed config, an unknown name, a missing file) prints one ``segbench: error:`` line
and exits with code 2; ``run`` exits 1 when a cell or a numerics check failed, 0 otherwise.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

from rich.console import Console

from segbench.cli.ab import cmd_ab, cmd_ab_side
from segbench.cli.commands import (
    cmd_bench,
    cmd_check,
    cmd_compare,
    cmd_data,
    cmd_env,
    cmd_eval,
    cmd_export,
    cmd_merge,
    cmd_models,
    cmd_report,
    cmd_run,
    cmd_trtcheck,
)
from segbench.cli.parser import EXIT_BAD_INPUT, build_parser
from segbench.errors import ConfigError, SegbenchError
from segbench.plugins import PLUGINS_ENV, load_plugins

__all__ = ["PLUGINS_ENV", "main"]  # PLUGINS_ENV: the name tests and plugin authors import

COMMANDS = {
    "bench": cmd_bench,
    "run": cmd_run,
    "report": cmd_report,
    "compare": cmd_compare,
    "ab": cmd_ab,
    "ab-side": cmd_ab_side,
    "merge": cmd_merge,
    "check": cmd_check,
    "eval": cmd_eval,
    "env": cmd_env,
    "models": cmd_models,
    "data": cmd_data,
    "trtcheck": cmd_trtcheck,
    "export": cmd_export,
}


def output_directory(path: Path) -> None:
    """Refuse, before any work, an ``--out`` that cannot exist, so it is bad input named in one line and
    not a traceback half-way through a command. Nothing is left behind: a missing directory is probed by
    creating and removing a temporary one in its nearest existing parent, not created."""
    if path.exists():
        if not path.is_dir():
            raise ConfigError(f"--out {path}: exists and is not a directory")
        if not os.access(path, os.W_OK | os.X_OK):
            raise ConfigError(f"--out {path}: the directory is not writable")
        return
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise ConfigError(f"--out {path}: cannot create the directory ({parent} is not a directory)")
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".segbench-out-", dir=parent))
    except OSError as exc:
        raise ConfigError(f"--out {path}: cannot create the directory ({exc.strerror or exc})") from None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    console = Console()
    try:
        load_plugins()
        out = getattr(args, "out", None)
        if out is not None and not getattr(args, "dry_run", False):
            output_directory(out)
        return COMMANDS[args.command](args, console)
    except SegbenchError as exc:
        print(f"segbench: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("segbench: interrupted; results written so far are kept", file=sys.stderr)
        return 130
