"""The run log, ``segbench.log`` in the run directory: the full traceback of every failure.

A result row keeps a one-line error a table can show; the log keeps the rest, for the cell that failed
and for whatever an isolated child wrote, so a failure seen in a report can be traced without rerunning.
"""

from __future__ import annotations

import logging
import traceback
from pathlib import Path

from segbench.errors import describe_error
from segbench.results.layout import LOG_FILE


class RunLog:
    """Appends to ``segbench.log``; a resumed run continues the same file."""

    def __init__(self, out_dir: Path | None) -> None:
        # One logger per log file: two runs in one process (tests, a parent and its cells) never mix.
        self.path = None if out_dir is None else out_dir / LOG_FILE
        self._logger = logging.getLogger(f"segbench.run.{id(self)}")
        self._logger.propagate = False
        self._logger.setLevel(logging.INFO)
        self._handler: logging.Handler | None = None
        if self.path is not None:
            self._handler = logging.FileHandler(self.path, encoding="utf-8")
            self._handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
            self._logger.addHandler(self._handler)

    def info(self, message: str) -> None:
        self._logger.info(message)

    def failure(self, where: str, exc: BaseException) -> str:
        """Log ``exc`` with its traceback under ``where``; return its one-line description."""
        text = "".join(traceback.format_exception(exc)).rstrip()
        self._logger.error("%s failed:\n%s", where, text)
        return describe_error(exc)

    def block(self, title: str, text: str) -> None:
        """A multi-line text under a title (an isolated child's own log or its stderr)."""
        self._logger.error("%s:\n%s", title, text.rstrip() or "(empty)")

    def close(self) -> None:
        if self._handler is not None:
            self._logger.removeHandler(self._handler)
            self._handler.close()
            self._handler = None

    def __enter__(self) -> RunLog:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
