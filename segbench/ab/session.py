"""The ``segbench ab`` driver: two sides of one config on this machine, their passes interleaved.

1. The refs become trees: the working tree for the head (by default), a temporary git worktree for a
   commit. Each side runs in its own process from its own tree (``PYTHONPATH`` starts with it, so a
   ``module:`` model, a plugin, and inside segbench's own repository segbench itself, come from that
   commit), with its own Python when ``--base-python`` names one.
2. Both sides build their exports and run the numerics check before anything is timed.
3. The passes run in a balanced order (base head, head base, ...), one side at a time, the other waiting;
   the noise sentinel is read in this process before the first pass and after every pass.
4. ``DIR/base`` and ``DIR/head`` are ordinary run directories; ``DIR/comparison.md`` and ``.json`` hold
   the paired comparison, ``DIR/ab.json`` the schedule and the sides, ``DIR/sentinel.jsonl`` the readings.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from segbench.ab.git import add_worktree, remove_worktree, repository_root, resolve_ref
from segbench.ab.worker import DONE, GO, READY
from segbench.bench.sentinel import Sentinel, sentinel_devices
from segbench.errors import ConfigError, SegbenchError
from segbench.files import atomic_write_text
from segbench.reports.compare import CompareSettings
from segbench.reports.paired import BASE, HEAD, MIN_PAIRS, ABComparison, SidePass, abba_order, compare_sides
from segbench.reports.paired_report import ab_json, ab_markdown
from segbench.reports.rundata import load_run
from segbench.results.jsonl import JsonlWriter
from segbench.results.layout import SENTINEL_FILE
from segbench.results.records import SentinelReading

# What must be equal in the two sides' YAML for their cells to match one to one.
CELL_SECTIONS = ("models", "backends", "sweep")
COMPARISON_MD, COMPARISON_JSON, AB_FILE = "comparison.md", "comparison.json", "ab.json"
# A pause before each sentinel reading: a side that has just finished a pass may keep its thread pool
# spinning for a moment (OpenMP's wait policy), which the reading would take for a busy machine.
SETTLE_S = 0.2


class SideFailed(SegbenchError):
    """A side stopped before its passes were done (its log says why): not bad input, ab exits 1."""


@dataclass(frozen=True)
class ABRequest:
    config: Path
    base: str | None
    head: str | None  # None: the working tree
    out: Path
    base_python: Path | None = None
    passes: int | None = None  # None: the config's timing.repeats
    settings: CompareSettings = field(default_factory=CompareSettings)


@dataclass(frozen=True)
class Side:
    """What one side runs: which tree, which Python, which config file, where it writes."""

    name: str
    ref: str  # as the user named it ("working tree" for uncommitted files)
    sha: str | None
    tree: Path
    cwd: Path
    config: Path
    python: str
    out: Path

    def describe(self) -> str:
        commit = f" ({self.sha[:12]})" if self.sha else ""
        return f"{self.ref}{commit}, {self.python}"


class SideProcess:
    """A running side: start it, let it run a pass, read what it says."""

    def __init__(self, side: Side, repeats: int, log: Path) -> None:
        self.side = side
        self.log_path = log
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            [str(side.tree), *filter(None, [os.environ.get("PYTHONPATH")])])}  # fmt: skip
        command = [side.python, "-m", "segbench", "ab-side", str(side.config), "--out", str(side.out)]
        self._log = log.open("w", encoding="utf-8")
        try:
            self.process = subprocess.Popen(
                [*command, "--repeats", str(repeats)], cwd=side.cwd, env=env, text=True,
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log,
            )  # fmt: skip
        except OSError as exc:
            self._log.close()
            raise ConfigError(
                f"cannot start the {side.name} side with {side.python}: {exc.strerror}"
            ) from None
        self.exit_code: int | None = None

    def expect(self, key: str) -> Any:
        """The next message's ``key`` value; SideFailed when the side ends or says something else."""
        stdout = self.process.stdout
        assert stdout is not None, "the side's process is started with stdout=PIPE"
        line = stdout.readline()
        if not line:
            self.process.wait()
            raise self._failure()
        try:
            message = json.loads(line)
        except ValueError:
            message = {}
        if not isinstance(message, dict) or key not in message:
            raise SideFailed(f"the {self.side.name} side said {line.strip()!r}, expected {key}")
        return message[key]

    def go(self) -> None:
        stdin = self.process.stdin
        assert stdin is not None, "the side's process is started with stdin=PIPE"
        stdin.write(GO + "\n")
        stdin.flush()

    def _failure(self) -> SegbenchError:
        code = self.process.returncode
        lines = [x for x in self.log_path.read_text(encoding="utf-8", errors="replace").splitlines() if x]
        last = lines[-1] if lines else f"exit code {code}"
        if "invalid choice: 'ab-side'" in last or "No module named segbench" in last:
            return ConfigError(f"the {self.side.name} side's segbench ({self.side.describe()}) has no ab "
                               "worker: both sides need a segbench with segbench ab")  # fmt: skip
        error = ConfigError if code == 2 else SideFailed
        return error(
            f"the {self.side.name} side ({self.side.describe()}) stopped: {last} (log: {self.log_path})"
        )

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self._log.close()


def _config_sections(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data


def _passes(data: dict[str, Any], requested: int | None) -> int:
    timings = [data.get("timing") or {}, *((m or {}).get("timing") or {} for m in data.get("models") or [])]
    passes = requested or max(int(t.get("repeats", 1)) for t in timings if isinstance(t, dict))
    if passes < MIN_PAIRS:
        raise ConfigError(f"segbench ab needs at least {MIN_PAIRS} passes to pair (the config has {passes}): "
                          "set timing.repeats or give --passes")  # fmt: skip
    return passes


def config_from_head_if_missing(base: Side, head: Side, say: Callable[[str], None]) -> Side:
    """The base side, running the head's copy of the config when the base commit has none at that path
    (the file was added or moved in head, e.g. into examples/). Sound because ab compares the same cells on
    both sides anyway: what the base lacks is the file, not a grid of its own."""
    if base.config.is_file() or not head.config.is_file():
        return base
    say(f"{head.config.name} is not in the base side ({base.describe()}): the base runs the head's copy")
    return replace(base, config=head.config)


def _check_same_cells(base: Side, head: Side) -> dict[str, Any]:
    """Both sides' YAML, checked to define the same cells; returns the head's."""
    for side in (base, head):
        if not side.config.is_file():
            raise ConfigError(
                f"{side.config.name} does not exist in the {side.name} side ({side.describe()})"
            )
    old, new = _config_sections(base.config), _config_sections(head.config)
    differing = [key for key in CELL_SECTIONS if old.get(key) != new.get(key)]
    if differing:
        raise ConfigError(f"the config's {', '.join(differing)} differ between base and head: ab compares "
                          "the same cells on both sides; change the grid in a commit of its own")  # fmt: skip
    return new


@contextmanager
def _sides(request: ABRequest, root: Path, scratch: Path) -> Iterator[tuple[Side, Side]]:
    """The two sides, their worktrees made (and removed afterwards)."""
    config = request.config.resolve()
    inside = config.is_relative_to(root)
    here = Path.cwd().resolve()
    relative_cwd = here.relative_to(root) if here.is_relative_to(root) else Path()
    made: list[Path] = []
    try:
        sides = []
        for name, ref, python in ((BASE, request.base, request.base_python), (HEAD, request.head, None)):
            sha = resolve_ref(root, ref) if ref is not None else None
            tree = root if sha is None else add_worktree(root, sha, scratch / name)
            if sha is not None:
                made.append(tree)
            sides.append(Side(
                name=name, ref=ref or "working tree", sha=sha, tree=tree, cwd=tree / relative_cwd,
                config=tree / config.relative_to(root) if inside else config,
                python=str(python or sys.executable), out=request.out.resolve() / name,
            ))  # fmt: skip
        yield sides[0], sides[1]
    finally:
        for tree in made:
            remove_worktree(root, tree)


def run_ab(request: ABRequest, say: Callable[[str], None] = print) -> ABComparison:
    """Run the A/B into ``request.out`` and return its comparison (also written there)."""
    if request.base is None and request.base_python is None:
        raise ConfigError("give --base REF (a commit to compare with), or --base-python PATH")
    out = request.out
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"{out} is not empty: choose another --out so earlier results are kept")
    root = repository_root(Path.cwd())
    request = replace(request, base=request.base if request.base is not None else request.head)
    with ExitStack() as stack:
        scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="segbench-ab-")))
        base, head = stack.enter_context(_sides(request, root, scratch))
        base = config_from_head_if_missing(base, head, say)
        config = _check_same_cells(base, head)
        passes = _passes(config, request.passes)
        out.mkdir(parents=True, exist_ok=True)
        schedule, readings = _interleave(base, head, passes, config, out, stack, say)
    _write_side_readings(schedule, readings, out)
    comparison = _judge(out, base, head, schedule, readings, request.settings)
    atomic_write_text(out / COMPARISON_MD, ab_markdown(comparison))
    atomic_write_text(out / COMPARISON_JSON, ab_json(comparison))
    return comparison


def _interleave(base: Side, head: Side, passes: int, config: dict[str, Any], out: Path, stack: ExitStack,
                say: Callable[[str], None]) -> tuple[list[SidePass], list[SentinelReading]]:  # fmt: skip
    """Start both sides, let each prepare, then run their passes in the balanced order with the sentinel
    read around every pass."""
    processes: dict[str, SideProcess] = {}
    for side in (base, head):
        say(f"{side.name}: {side.describe()}: exports and numerics check")
        started = time.perf_counter()
        processes[side.name] = process = SideProcess(side, passes, out / f"{side.name}.log")
        stack.callback(process.close)
        first = process.expect(READY)
        if first is None:
            raise ConfigError(f"the {side.name} side has nothing to time (no cells on this machine)")
        say(f"{side.name}: ready in {time.perf_counter() - started:.0f} s")
    devices = {str(b.get("device", "cpu")) for b in config.get("backends") or [] if isinstance(b, dict)}
    sentinels = [Sentinel(device) for device in sentinel_devices(devices)]
    writer = stack.enter_context(JsonlWriter(out / SENTINEL_FILE))
    readings: list[SentinelReading] = []

    def read(label: str) -> None:
        time.sleep(SETTLE_S)
        for sentinel in sentinels:
            reading = sentinel.read(label)
            writer.write(reading.to_dict())
            readings.append(reading)

    schedule: list[SidePass] = []
    read("before the first pass")
    for name, repeat in abba_order(passes):
        process = processes[name]
        start = time.time()
        process.go()
        process.expect(READY)
        schedule.append(SidePass(name, repeat, start, time.time()))
        read(f"after {name} pass {repeat + 1}")
        say(f"{name} pass {repeat + 1}/{passes}: {schedule[-1].end - start:.1f} s, sentinel "
            f"{readings[-len(sentinels)].median_ms:.2f} ms")  # fmt: skip
    for name, process in processes.items():  # the reports, once nothing is timed any more
        process.go()
        process.exit_code = process.expect(DONE)
        process.process.wait()
        say(f"{name}: run exit code {process.exit_code}")
    sides = {name: {**asdict(p.side), "exit_code": p.exit_code} for name, p in processes.items()}
    record = {"passes": passes, "order": [f"{s} {k + 1}" for s, k in abba_order(passes)],
              "schedule": [asdict(p) for p in schedule], "sides": sides}  # fmt: skip
    atomic_write_text(out / AB_FILE, json.dumps(record, indent=2, default=str) + "\n")
    return schedule, readings


def _write_side_readings(schedule: list[SidePass], readings: list[SentinelReading], out: Path) -> None:
    """Each side's run directory gets the readings that bracket its passes, tagged with its pass numbers,
    so ``segbench compare DIR/base DIR/head`` reads the sentinel as it does for any two runs."""
    streams: dict[str, list[SentinelReading]] = {}
    for reading in readings:
        streams.setdefault(reading.device, []).append(reading)
    for side in (BASE, HEAD):
        rows = []
        for run, stream in ((p, s) for p in schedule if p.side == side for s in streams.values()):
            for reading in [r for r in stream if r.time <= run.start][-1:]:
                rows.append(
                    {**reading.to_dict(), "repeat": run.repeat, "label": f"before pass {run.repeat + 1}"}
                )
            for reading in [r for r in stream if r.time >= run.end][:1]:
                rows.append({**reading.to_dict(), "repeat": None, "label": f"after pass {run.repeat + 1}"})
        with JsonlWriter(out / side / SENTINEL_FILE) as writer:
            for row in rows:
                writer.write(row)


def _judge(out: Path, base: Side, head: Side, schedule: list[SidePass], readings: list[SentinelReading],
           settings: CompareSettings) -> ABComparison:  # fmt: skip
    comparison = compare_sides(load_run(out / BASE), load_run(out / HEAD), schedule, readings, settings)
    comparison.sides = {side.name: side.describe() for side in (base, head)}
    return comparison
