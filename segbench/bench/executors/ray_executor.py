"""Units on a Ray cluster (``executor: ray``): one Ray task per unit, the units side by side.

Each task runs on a worker of some node: it builds the model, exports (or finds) the graph through the
export cache (``cache_dir``, a path every node sees, else each node's own cache), opens the runners and
runs the unit's device stages with the local executor's code: its cells, then its largest-batch search,
both measured on that node. It yields each record as it exists (a Ray streaming generator), stamped with
its node's environment fingerprint and host name; the driver alone writes records through the sink. A
worker that dies fails the unit's unfinished cells with the reason (``crashed``), after ``retries``
re-dispatches of the unfinished work; the other units go on. Once every task has ended, each unit is
handed back to the pipeline, whose driver stages (numerics) then run on the driver, not side by side
with the timing of a cluster that may share its machine.

Ray is imported when a run asks for this executor, never on import: segbench without Ray is unchanged.
"""

from __future__ import annotations

import functools
import os
import socket
import tempfile
from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from segbench.bench.context import ModelState, RunContext, RunnerPool, build_model_state
from segbench.bench.executors.base import DeviceEvent, Executor, Passes, UnitDone
from segbench.bench.executors.local import device_records
from segbench.bench.plan import Cell, Unit
from segbench.bench.runlog import RunLog
from segbench.bench.workspace import Workspace
from segbench.cache_dir import CACHE_ENV
from segbench.config import BenchmarkConfig, ExecutorConfig, validate_config
from segbench.errors import ConfigError, describe_error, first_line
from segbench.plugins import PLUGINS_ENV, load_plugins
from segbench.results.jsonl import write_json
from segbench.results.layout import ENV_FILE, LOG_FILE, read_env
from segbench.results.records import CapacityRecord, CellRecord, Measurement, Provenance, Subject

PROBE_TIMEOUT_S = 5.0


def _ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ConfigError("executor ray: Ray is not installed (pip install 'segbench[ray]')") from None
    return ray


def _probe(address: str) -> None:
    """Fail fast on a host:port nobody answers: ray.init would retry for minutes."""
    if address == "auto":
        return  # Ray reads the local cluster's address file and fails at once when there is none
    parts = urlsplit(address if "://" in address else f"tcp://{address}")
    try:
        port = parts.port
    except ValueError:
        port = None
    if parts.hostname is None or port is None:
        raise ConfigError(f"executor ray: address {address!r} is not auto, host:port or ray://host:port")
    try:
        socket.create_connection((parts.hostname, port), timeout=PROBE_TIMEOUT_S).close()
    except OSError as exc:
        raise ConfigError(f"executor ray: cannot reach the Ray cluster at {address}: {exc}") from None


def connect(settings: ExecutorConfig) -> bool:
    """Join the cluster at ``settings.address`` (None: start a local one); True when this call
    connected (and so should disconnect), False when this process was connected already. An unreachable
    cluster is a ConfigError (one line, exit 2)."""
    ray = _ray()
    if ray.is_initialized():
        return False
    if settings.address is not None:
        _probe(settings.address)
    env_vars = {PLUGINS_ENV: os.environ[PLUGINS_ENV]} if os.environ.get(PLUGINS_ENV) else {}
    try:
        ray.init(address=settings.address, include_dashboard=False, log_to_driver=False,
                 logging_level="ERROR", runtime_env={"env_vars": env_vars} if env_vars else None)  # fmt: skip
    except Exception as exc:
        where = settings.address or "a new local cluster"
        reason = first_line(exc)
        raise ConfigError(f"executor ray: cannot reach the Ray cluster at {where}: {reason}") from None
    return True


def disconnect() -> None:
    _ray().shutdown()


# -- the worker's side ---------------------------------------------------------------------------------


class _StatusOnly:
    """The worker's sink: stages only send it status text (records travel back to the driver)."""

    def status(self, text: str) -> None:
        pass

    def note(self, text: str) -> None:
        pass


@functools.cache
def _node() -> dict[str, Any]:
    """This node's host name and environment (collected once per worker process)."""
    from segbench.env import collect_env

    env = collect_env()
    return {"host": socket.gethostname(), "fingerprint": env.get("fingerprint"), "env": env}


def unit_task(payload: dict[str, Any]) -> Iterator[tuple[str, Any] | tuple[str, Any, str]]:
    """One unit on a worker: ``("node", info)``, ``("subject", Subject)``, then ``("record", record, log
    text)`` per cell and per batch-search size. Runs the local executor's device stages on the node's own
    model and runners."""
    from segbench.backends import BACKENDS
    from segbench.bench.peak import measure_peaks

    node = _node()
    yield "node", node
    if payload["cache_dir"]:
        os.environ[CACHE_ENV] = payload["cache_dir"]
    load_plugins()
    config = validate_config(payload["config"], source="the driver's config")
    entry, backend = config.models[payload["model"]], config.backends[payload["backend"]]
    cells, served = (tuple(Cell(*cell) for cell in payload[key]) for key in ("cells", "served"))
    unit = Unit(entry, backend, BACKENDS[backend.name], payload["precision"], payload["repeat"], cells,
                False, payload["find_max_batch"], served)  # fmt: skip
    git_sha = node["env"].get("git_sha")
    provenance = Provenance(node["fingerprint"], payload["config_hash"], git_sha, node["host"])
    with tempfile.TemporaryDirectory(prefix="segbench-ray-") as tmp, RunLog(Path(tmp)) as log:
        # A status-only sink: the records go back to the driver, which writes them.
        peaks = measure_peaks({backend.device})[0]  # this node's own peak
        ctx = RunContext(config, Path(tmp), _StatusOnly(), log, True, provenance,  # type: ignore[arg-type]
                         exporter=payload["exporter"], peak_tflops=peaks)  # fmt: skip
        state = build_model_state(ctx, entry)
        yield "subject", state.subject(backend, unit.precision)
        log_path, seen = Path(tmp) / LOG_FILE, 0
        with RunnerPool(ctx, state, unit) as pool:
            for record in device_records(ctx, state, unit, pool):
                text = log_path.read_text(encoding="utf-8") if log_path.exists() else ""
                yield "record", record, text[seen:]
                seen = len(text)


# -- the driver's side ---------------------------------------------------------------------------------


@dataclass
class _Task:
    unit: Unit
    remaining: list[Cell]
    attempt: int = 0
    searched: bool = False  # a batch-search record came back (a retry does not search again)
    node: dict[str, Any] | None = None
    subject: Subject | None = None
    done: list[Cell] = field(default_factory=list)


class RayExecutor(Executor):
    name = "ray"

    def __init__(self, config: BenchmarkConfig) -> None:
        super().__init__(config)
        self._connected = False
        self.nodes: dict[tuple[str, str | None], dict[str, Any]] = {}
        self.ctx: RunContext | None = None

    def open(self, units: Sequence[Unit]) -> None:
        """Join the cluster when some unit has device work (a check-only run needs none)."""
        if any(unit.cells or unit.find_max_batch for unit in units):
            self._connected = connect(self.settings) or self._connected

    def run(
        self, ctx: RunContext, units: Sequence[Unit], workspace: Workspace, passes: Passes
    ) -> Generator[DeviceEvent, None, None]:
        self.ctx = ctx
        yield from self._stream([unit for unit in units if unit.cells or unit.find_max_batch])
        for unit in units:  # numerics after all timing: the driver's work never overlaps the cluster's
            yield UnitDone(unit)

    def _stream(self, units: Sequence[Unit]) -> Iterator[CellRecord | CapacityRecord]:
        if not units:
            return
        ray, ctx = _ray(), self._ctx
        remote = ray.remote(unit_task)
        pending: dict[Any, _Task] = {}
        for unit in units:
            task = _Task(unit, list(unit.cells))
            pending[self._submit(remote, task)] = task
        while pending:
            ctx.sink.status(f"{len(pending)} unit(s) running on the Ray cluster")
            ready, _ = ray.wait(list(pending), num_returns=1)
            for stream in ready:
                task = pending.pop(stream)
                try:
                    item = ray.get(next(stream))
                except StopIteration:
                    yield from self._ended(task, "the worker ended without timing these cells")
                    continue
                except Exception as exc:  # the worker died, or its task raised outside any cell
                    retry = self._failed(task, exc)
                    if retry is not None:
                        pending[self._submit(remote, retry)] = retry
                        continue
                    yield from self._ended(task, _reason(exc), status=_status(exc))
                    continue
                pending[stream] = task
                record = self._receive(task, item)
                if record is not None:
                    yield record

    @property
    def _ctx(self) -> RunContext:
        assert self.ctx is not None, "run() sets the context before any task is sent"
        return self.ctx

    def _submit(self, remote: Any, task: _Task) -> Any:
        settings, unit, ctx = self.settings, task.unit, self._ctx
        cuda = unit.backend.device == "cuda"
        # Retries are the driver's (only the unfinished cells go again), so Ray's own are off.
        options: dict[str, Any] = {
            "num_cpus": settings.num_cpus,
            "num_gpus": settings.num_gpus if cuda else 0,
            "max_retries": 0,
            "num_returns": "streaming",
        }
        if cuda and settings.accelerator_type:
            options["accelerator_type"] = settings.accelerator_type
        payload = {
            "config": ctx.config.model_dump(mode="json"),
            "model": next(i for i, entry in enumerate(ctx.config.models) if entry is unit.entry),
            "backend": next(i for i, backend in enumerate(ctx.config.backends) if backend is unit.backend),
            "precision": unit.precision,
            "repeat": unit.repeat,
            "cells": [(c.height, c.width, c.batch) for c in task.remaining],
            "find_max_batch": unit.find_max_batch and not task.searched,
            "served": [(c.height, c.width, c.batch) for c in unit.served],
            "config_hash": ctx.provenance.config_hash,
            "exporter": ctx.exporter,
            "cache_dir": str(settings.cache_dir) if settings.cache_dir else None,
        }
        return remote.options(**options).remote(payload)

    def _receive(self, task: _Task, item: tuple) -> CellRecord | CapacityRecord | None:
        kind = item[0]
        if kind == "node":
            task.node = item[1]
            self._note_node(item[1])
        elif kind == "subject":
            task.subject = item[1]
        elif kind == "record":
            record, text = item[1], item[2]
            if text.strip():  # the worker's failures, with their tracebacks
                self._ctx.log.block(f"{task.unit.where} on {self._host(task)}: the worker's log", text)
            if isinstance(record, CapacityRecord):
                task.searched = True
                return record
            cell = Cell(record.height, record.width, record.batch_size)
            task.remaining.remove(cell)
            task.done.append(cell)
            return record
        return None

    def _failed(self, task: _Task, exc: BaseException) -> _Task | None:
        """Log why the task stopped; the task to re-dispatch (its unfinished cells), if retries are left."""
        where = f"{task.unit.where} on {self._host(task)}"
        self._ctx.log.block(f"{where}: the Ray task stopped", str(exc))
        search = task.unit.find_max_batch and not task.searched
        if task.attempt >= self.settings.retries or not (task.remaining or search):
            return None
        self._ctx.sink.note(f"{where}: {_reason(exc)}; retrying its {len(task.remaining)} cell(s)"
                            + (" and its batch search" if search else ""))  # fmt: skip
        unit = replace(task.unit, cells=tuple(task.remaining), find_max_batch=search)
        return _Task(unit, list(task.remaining), task.attempt + 1)

    def _ended(self, task: _Task, reason: str, status: str = "failed") -> Iterator[CellRecord]:
        """A failed record for each cell the task did not time (a batch search it did not finish is said
        in the log: a capacity row states a found batch, and there is none)."""
        if task.unit.find_max_batch and not task.searched:
            self._ctx.log.info(f"{task.unit.where} on {self._host(task)}: no batch search: {reason}")
        if not task.remaining:
            return
        subject = task.subject or self._subject(task.unit)
        env = self._ctx.provenance
        if task.node is not None:
            node = task.node
            env = Provenance(node["fingerprint"], env.config_hash, node["env"].get("git_sha"), node["host"])
        for cell in task.remaining:
            failed = Measurement.failed(reason, status=status)
            record = CellRecord(subject=subject, height=cell.height, width=cell.width, batch_size=cell.batch,
                                measurement=failed, repeat=task.unit.repeat, env=env)  # fmt: skip
            yield record
        task.remaining.clear()

    def _subject(self, unit: Unit) -> Subject:
        """The cells' subject when the worker died before sending its own (options as the driver
        resolves them without building the model)."""
        from segbench.models.registry import get_spec

        options = self._ctx.config.model_options(unit.entry)
        state = ModelState(unit.entry, get_spec(unit.entry.name).task, options)
        return state.subject(unit.backend, unit.precision)

    def _host(self, task: _Task) -> str:
        return task.node["host"] if task.node else "an unknown node"

    def _note_node(self, node: dict[str, Any]) -> None:
        """A node seen for the first time: said once, and listed in env.json ``nodes`` (its environment),
        so a report can name the machine behind each fingerprint."""
        key = (node["host"], node["fingerprint"])
        if key in self.nodes:
            return
        self.nodes[key] = node
        self._ctx.log.info(f"ray node {node['host']}: fingerprint {node['fingerprint']}")
        path = self._ctx.out_dir / ENV_FILE
        env = read_env(self._ctx.out_dir) or {}  # the pipeline wrote it before any record
        listed = {(n.get("host"), n.get("fingerprint")) for n in env.get("nodes", [])}
        if key not in listed:  # a resumed run keeps the nodes of its earlier sessions
            env["nodes"] = [*env.get("nodes", []), {**node["env"], "host": node["host"]}]
            write_json(path, env)

    def close(self) -> None:
        if self._connected:
            disconnect()
            self._connected = False


def _reason(exc: BaseException) -> str:
    """One line for every unfinished cell of a task that stopped."""
    name = type(exc).__name__
    if name in ("WorkerCrashedError", "NodeDiedError", "ActorDiedError", "OwnerDiedError"):
        return f"the Ray worker died: {describe_error(exc)}"
    cause = getattr(exc, "cause", None)  # a RayTaskError carries the worker's own exception
    return f"the Ray task failed: {describe_error(cause if isinstance(cause, BaseException) else exc)}"


def _status(exc: BaseException) -> str:
    return "crashed" if type(exc).__name__ in ("WorkerCrashedError", "NodeDiedError") else "failed"
