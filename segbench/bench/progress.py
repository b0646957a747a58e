"""The console's view of a running benchmark: a progress bar and a line per finished cell. It listens
to the run's records (see :mod:`segbench.bench.sink`) and changes nothing in them."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from segbench.results.records import CellRecord, CheckRecord


class ConsoleProgress:
    def __init__(self, console: Console) -> None:
        self.console = console
        self._progress: Progress | None = None
        self._task: TaskID | None = None

    def begin(self, total: int) -> None:
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=self.console,
            transient=True,
        )
        self._progress.start()
        self._task = self._progress.add_task("starting", total=total)

    def end(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def status(self, text: str) -> None:
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, description=escape(text))

    def advance(self) -> None:
        if self._progress is not None and self._task is not None:
            self._progress.advance(self._task)

    def note(self, text: str) -> None:
        self.console.print(f"[yellow]{escape(text)}[/]")

    def cell(self, record: CellRecord) -> None:
        subject, measured = record.subject, record.measurement
        where = f"{subject.model} {subject.backend}/{subject.device}/{subject.precision}"
        size = f"{record.height}x{record.width} b{record.batch_size}"
        latency = measured.latency_ms
        outcome = (
            f"p50 {latency['p50']:.2f} ms, {measured.throughput_ips:.1f} img/s"
            if measured.ok and latency is not None
            else f"[red]{measured.status}[/] {escape(measured.error or '')}"
        )
        self.console.print(f"  {escape(where)} {size}: {outcome}")

    def check(self, record: CheckRecord) -> None:
        return None
