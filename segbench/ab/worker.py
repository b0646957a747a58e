"""A side of ``segbench ab``: a ``segbench run`` whose timing passes start when the driver says so.

The driver starts ``python -m segbench ab-side CONFIG --out DIR --repeats N`` in the side's worktree and
talks to it over the process's standard input and output, one JSON object a line:

- the side builds every export, runs the numerics check, then sends ``{"ready": 0}`` and waits;
- the driver answers ``go``; the side times pass 0 and sends ``{"ready": 1}``, and so on;
- after the last pass it sends ``{"ready": null}`` and waits again: its report is written only when the
  driver says ``go`` once more (after every pass of both sides, so no report is drawn while the other side
  times a pass); then it sends ``{"done": EXIT_CODE}``.

Anything else the run prints goes to standard error (the driver keeps it in the side's log), so nothing a
library prints can be taken for a message. An end of input instead of ``go`` stops the side.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import IO, Any

from segbench.errors import SegbenchError

GO = "go"
READY, DONE = "ready", "done"


class DriverGone(SegbenchError):
    """The driver closed the side's input instead of starting the next pass."""


def send(stream: IO[str], message: dict[str, Any]) -> None:
    stream.write(json.dumps(message) + "\n")
    stream.flush()


def protocol_streams() -> tuple[IO[str], IO[str]]:
    """The driver's channel (a private copy of standard output) and its input; standard output itself is
    pointed at standard error, so prints from anywhere in the process stay off the channel."""
    channel = os.fdopen(os.dup(sys.stdout.fileno()), "w", encoding="utf-8")
    sys.stdout.flush()
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    return channel, sys.stdin


def serve(config_path: Path, out_dir: Path, repeats: int, channel: IO[str], commands: IO[str],
          listeners: list[Any] | None = None) -> int:  # fmt: skip
    """Run the side: the gated pipeline into ``out_dir``, then its report. Returns the run's exit code."""
    from segbench.bench.pipeline import run_benchmark
    from segbench.config import load_config
    from segbench.reports.report import write_report
    from segbench.reports.rundata import load_run

    config = load_config(config_path)
    for timing in [config.timing, *(entry.timing for entry in config.models if entry.timing)]:
        timing.repeats = repeats  # both sides run the same number of passes, whatever their YAML says

    def gate(repeat: int | None) -> None:
        send(channel, {READY: repeat})
        if commands.readline().strip() != GO:
            what = "the report" if repeat is None else f"pass {repeat + 1}"
            raise DriverGone(f"the ab driver stopped before {what}")

    summary = run_benchmark(config, out_dir, listeners=listeners or [], gate=gate)
    try:
        write_report(load_run(out_dir))
    except Exception as exc:  # the results are on disk; segbench report can render them later
        print(f"report not written: {type(exc).__name__}: {exc}", file=sys.stderr)
    send(channel, {DONE: summary.exit_code})
    return summary.exit_code
