"""What each ``segbench`` command does: parse its arguments into a call, make the call, print the result.

The work itself lives below, in the use cases (``segbench.bench.run``, ``segbench.bench.export_bundle``)
and ``segbench.reports``; exit codes: 0 ok, 1 a failed cell, check or comparison, 2 bad input, 3 a check
still inconclusive.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape

from segbench.errors import ConfigError

if TYPE_CHECKING:  # the commands import their use cases when they run: a fast --help
    from segbench.bench.run import RunRequest


def cmd_run(args: argparse.Namespace, console: Console) -> int:
    from segbench.bench.run import RunRequest
    from segbench.sweep import Cell

    only = Cell(*args.only_cell) if args.only_cell else None
    request = RunRequest(args.config, args.models or (), args.backends or (), args.executor, args.address,
                         args.out, resume=args.resume, only=only)  # fmt: skip
    if args.dry_run:
        return _print_plan(request, args.estimate_from, console)
    return _run(request, console, report=not args.no_report)


def _print_plan(request: RunRequest, estimate_from: Path | None, console: Console) -> int:
    """``--dry-run``: what the run would do, unit by unit, and how long its timing loops take; nothing is
    built or written."""
    from segbench.bench.plan import estimate_seconds, measured_latencies
    from segbench.bench.run import plan

    planned = plan(request)
    config, total = planned.config, planned.plan.total
    units, skipped_units = planned.plan.units, planned.plan.skipped_units
    for line in planned.plan.lines():
        console.print(escape(line), highlight=False)
    timing = request.timing
    skipped = sum(len(unit.cells) for unit in skipped_units) if timing else len(skipped_units)
    what = "cells" if timing else "checks"
    console.print(f"{len(units)} units, {total} {what} ({skipped} more {what} skipped here)",
                  highlight=False)  # fmt: skip
    if timing:
        earlier = measured_latencies(estimate_from) if estimate_from else None
        floor, estimate, measured = estimate_seconds(units, config, earlier)
        line = f"timing loops here: at least {floor:.0f} s (the warm-up and measurement durations)"
        if earlier is not None:
            line += f", about {estimate:.0f} s with {estimate_from}'s latencies for {measured} of {total}"
        if skipped_units:
            every, _, _ = estimate_seconds((*units, *skipped_units), config)
            line += f"; with every backend available, at least {every:.0f} s"
        console.print(f"{line}; exports, engine builds and numerics checks come on top", highlight=False)
    return 0


def _run(request: RunRequest, console: Console, report: bool) -> int:
    """Run the request with the console's progress, print its tables and the outcome line, then write
    its report; the run's exit code."""
    from segbench.bench.progress import ConsoleProgress
    from segbench.bench.run import run
    from segbench.reports.tables import numerics_table, outcome_line, results_table

    summary = run(request, listeners=[ConsoleProgress(console)])
    if request.timing:
        console.print(results_table(summary.results))
    if summary.numerics:
        console.print(numerics_table(summary.numerics))
    # The counts, then each failed cell and each failed or inconclusive check by name (plain text).
    outcome = outcome_line(summary.results if request.timing else [], summary.numerics, summary.out_dir)
    console.print(outcome, markup=False, highlight=False, soft_wrap=True)
    if report and request.timing:
        _write_report_after_run(summary.out_dir, console)
    return summary.exit_code


def _write_report_after_run(out_dir: Path, console: Console) -> None:
    """The report of a finished run. The results are already on disk: a report that cannot be written
    is a warning (``segbench report`` can retry), never a lost run."""
    from segbench.reports.report import REPORT_HTML, write_report
    from segbench.reports.rundata import load_run

    try:
        write_report(load_run(out_dir))
    except Exception as exc:
        console.print(f"[yellow]report not written:[/] {escape(f'{type(exc).__name__}: {exc}')}")
        return
    console.print(f"report: {out_dir / REPORT_HTML}")


def cmd_report(args: argparse.Namespace, console: Console) -> int:
    from segbench.reports.report import write_report
    from segbench.reports.rundata import load_run

    written = write_report(load_run(args.run_dir), args.out)
    console.print(f"wrote {len(written)} files to {args.out or args.run_dir}:")
    for path in written:
        console.print(f"  {path}")
    return 0


def cmd_merge(args: argparse.Namespace, console: Console) -> int:
    from segbench.results.merge import merge_runs

    merged = merge_runs(args.runs, args.out)
    console.print(f"merged {merged.parts} runs into {merged.out_dir}: {merged.cells} cell rows, "
                  f"{merged.checks} numerics rows, {len(merged.fingerprints)} environment fingerprint(s); "
                  f"segbench report {merged.out_dir} renders it", markup=False, highlight=False)  # fmt: skip
    return 0


def cmd_compare(args: argparse.Namespace, console: Console) -> int:
    """Exit 1 when a cell or a numerics check regressed; else 3 when a cell got no performance verdict
    (the machine changed or was disturbed); else 0. 2 on bad input."""
    from segbench.files import atomic_write_text
    from segbench.reports.compare import CompareSettings, compare_runs, comparison_json
    from segbench.reports.render import comparison_markdown
    from segbench.reports.rundata import load_run

    settings = CompareSettings(threshold=args.threshold, alpha=args.alpha, sentinel_bound=args.sentinel_bound,
                               allow_machine_change=args.allow_machine_change)  # fmt: skip
    comparison = compare_runs(load_run(args.baseline), load_run(args.current), settings)
    _print_comparison(comparison, console)
    for path, render in ((args.md, comparison_markdown), (args.json, comparison_json)):
        if path is None:
            continue
        try:
            atomic_write_text(path, render(comparison))
        except OSError as exc:
            raise ConfigError(f"cannot write {path}: {exc.strerror or exc}") from None
    return comparison.exit_code


def _print_comparison(comparison: Any, console: Console) -> None:
    from segbench.reports.render import (
        CELL_CHANGE_HEADERS,
        CHECK_CHANGE_HEADERS,
        TERMINAL_VERDICTS,
        cell_change_rows,
        check_change_rows,
        comparison_headline,
    )
    from segbench.reports.tables import text_table
    from segbench.reports.termtable import TEXT, WORDS, Col

    styles = {"fail": "red", "ok": "green", "inconclusive": "yellow", "info": None, "": None}
    if comparison.env_differences:
        keys = ("field", "baseline", "current")
        differences = [[str(d[k]) for k in keys] for d in comparison.env_differences]
        title = "Environment differences (performance changes may come from these)"
        columns = [Col("field", WORDS), Col("baseline", TEXT, drop=1), Col("current", TEXT, drop=2)]
        console.print(text_table(title, columns, differences))
    shown = [c for c in comparison.cells if c.verdict in TERMINAL_VERDICTS or c.memory_regression]
    for title, headers, rows in (
        ("Cells that changed", CELL_CHANGE_HEADERS, cell_change_rows(shown)),
        ("Accuracy regressions", CHECK_CHANGE_HEADERS, check_change_rows(comparison.accuracy_regressions)),
        ("Inconclusive checks", CHECK_CHANGE_HEADERS, check_change_rows(comparison.inconclusive_checks)),
    ):
        if rows:
            console.print(text_table(title, headers, [c for c, _ in rows], [styles[css] for _, css in rows]))
    for title, names in (
        ("new cells", comparison.new_cells),
        ("missing cells", comparison.missing_cells),
        ("new checks", comparison.new_checks),
        ("missing checks", comparison.missing_checks),
    ):
        if names:
            console.print(f"{title}: " + "; ".join(escape(n) for n in names))
    style = "red" if comparison.exit_code else "green"
    console.print(f"[{style}]{escape(comparison_headline(comparison))}[/]")


def _adhoc_check_config(args: argparse.Namespace) -> Any:
    """A one-model, one-backend config from ``segbench check --model M --backend B ...``."""
    from segbench.config import validate_config

    if not (args.model and args.backend):
        raise ConfigError("give a config file, or --model and --backend")
    backend: dict[str, Any] = {"name": args.backend, "precisions": [args.precision]}
    if args.device:
        backend["device"] = args.device
    if args.artifact:
        backend["artifact"] = str(args.artifact)
    if args.allow_mismatch:
        backend["allow_mismatch"] = True
    height, width = args.size
    data = {
        "name": f"check-{args.model}-{args.backend}",
        "models": [{"name": args.model, "weights": args.weights, "options": dict(args.options)}],
        "backends": [backend],
        "numerics": {
            "dataset": {"kind": "shapes", "num_images": args.images, "height": height, "width": width},
            "max_images": max(args.images, args.max_images),
        },
    }
    return validate_config(data, source="command line")


def cmd_bench(args: argparse.Namespace, console: Console) -> int:
    """One ONNX file over a sweep on the graph backends; exit codes as ``run``'s."""
    from segbench.bench.onnx_file import bench_config
    from segbench.bench.run import RunRequest
    from segbench.config import validate_config

    data = bench_config(args.onnx, args.sizes, args.batch_sizes, args.backends or ["onnxruntime"],
                        args.precisions or ["fp32"], args.task, args.num_classes)  # fmt: skip
    request = RunRequest(validate_config(data, source="command line"), out=args.out)
    return _run(request, console, report=not args.no_report)


def cmd_check(args: argparse.Namespace, console: Console) -> int:
    """Exit 0 when every verdict passes, 1 when one fails (for CI), 3 when one stays inconclusive at the
    image cap, 2 on bad input."""
    from segbench.bench.run import RunRequest

    adhoc = (args.model, args.backend, args.device, args.artifact)
    if args.config is not None:
        if any(value is not None for value in adhoc):
            raise ConfigError("--model/--backend/--device/--artifact are for use without a config file")
        request = RunRequest(args.config, args.models or (), args.backends or (), out=args.out, timing=False)
    else:
        request = RunRequest(_adhoc_check_config(args), out=args.out, timing=False)
    if args.dry_run:
        return _print_plan(request, None, console)
    return _run(request, console, report=False)


def cmd_eval(args: argparse.Namespace, console: Console) -> int:
    """Print the metrics of prediction files as JSON (fractions in [0, 1])."""
    from segbench.metrics.files import evaluate_files

    result = evaluate_files(
        args.task,
        args.gt,
        args.pred,
        gt_dir=args.gt_dir,
        pred_dir=args.pred_dir,
        num_classes=args.num_classes,
        ignore_index=args.ignore_index,
    )
    print(json.dumps(result, indent=2, allow_nan=False))
    return 0


def cmd_env(args: argparse.Namespace, console: Console) -> int:
    from segbench.env import collect_env, environment_rows
    from segbench.reports.tables import text_table

    env = collect_env()
    if args.json:
        print(json.dumps(env, indent=2, default=str))
        return 0
    title = f"Environment (fingerprint {env['fingerprint']})"
    console.print(text_table(title, ("what", "value"), environment_rows(env)))
    return 0


def cmd_models(args: argparse.Namespace, console: Console) -> int:
    """The registry as a table, or with ``--json`` as JSON (one object per model)."""
    from segbench.reports.models import model_registry, registry_rows
    from segbench.reports.tables import models_table

    height, width = args.size
    entries = model_registry(height, width)
    if args.json:
        try:
            print(json.dumps({"size": [height, width], "models": entries}, indent=2, default=str), flush=True)
        except BrokenPipeError:  # `segbench models --json | head`: the reader has what it wanted
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    console.print(models_table(registry_rows(entries), height, width))
    return 0


def cmd_data(args: argparse.Namespace, console: Console) -> int:
    from segbench.data import ShapesDataset, write_shapes_dataset

    if args.num < 1:
        raise ConfigError(f"--num must be positive, got {args.num}")
    height, width = args.size
    if min(height, width) < 32:
        raise ConfigError(f"--size must be at least 32x32, got {height}x{width}")
    dataset = ShapesDataset(args.num, height, width, seed=args.seed, split=args.split)
    root = write_shapes_dataset(args.out, dataset)
    console.print(
        f"wrote {args.num} {height}x{width} images with semantic, instance and panoptic labels to {root}"
    )
    return 0


def cmd_trtcheck(args: argparse.Namespace, console: Console) -> int:
    """Exit 0 when the graph is ready for TensorRT's ONNX parser, 1 when it is not."""
    import onnx

    from segbench.export.tensorrt_readiness import TENSORRT_VERSION, check_tensorrt_readiness
    from segbench.reports.tables import readiness_table

    if not args.onnx.is_file():
        raise ConfigError(f"ONNX file not found: {args.onnx}")
    try:
        report = check_tensorrt_readiness(args.onnx)
    except (
        onnx.onnx_cpp2py_export.checker.ValidationError,
        onnx.defs.SchemaError,
        OSError,
        ValueError,
    ) as exc:
        raise ConfigError(f"cannot read {args.onnx} as ONNX: {exc}") from None
    except Exception as exc:  # protobuf raises its own DecodeError for files that are not ONNX at all
        raise ConfigError(f"cannot read {args.onnx} as ONNX: {type(exc).__name__}") from None
    console.print(readiness_table(report))
    verdict = "[green]ready[/]" if report.ready else "[red]not ready[/]"
    console.print(
        f"{args.onnx}: {verdict} for TensorRT {TENSORRT_VERSION}'s ONNX parser (static check, no build)"
    )
    return 0 if report.ready else 1


def cmd_export(args: argparse.Namespace, console: Console) -> int:
    """Export (or reuse) the model's verified ONNX graph; with --trt, check it and build an engine.

    Exit 0 on success; 1 when the export fails its checks, when --trt finds the graph not ready for
    TensorRT's parser, or when the engine build fails; 2 on bad input or when TensorRT or a GPU is
    missing for a build.
    """
    from segbench.bench.export_bundle import BundleRequest, export_bundle
    from segbench.export.tensorrt_readiness import TENSORRT_VERSION
    from segbench.reports.tables import parity_table, readiness_table

    request = BundleRequest(
        model=args.model,
        weights=args.weights,
        options=dict(args.options),
        opset=args.opset,
        exporter=args.exporter,
        static_size=args.static,
        batch=args.batch,
        fp16=args.fp16,
        simplify=args.simplify,
        trt=args.trt,
        check_only=args.check_only,
        sizes=args.sizes,
        batch_sizes=args.batch_sizes,
        workspace_mb=args.workspace_mb,
        cache_dir=args.cache_dir,
        out=args.out,
    )
    with console.status(f"exporting {args.model}") as spinner:
        outcome = export_bundle(request, status=spinner.update)
    export, readiness, profile = outcome.export, outcome.readiness, outcome.profile
    if export is None or readiness is None or profile is None:
        console.print(f"[red]export failed:[/] {escape(str(outcome.export_error))}")
        return outcome.exit_code
    how = "reused from the cache" if export.cached else f"exported in {export.export_s:.1f} s"
    console.print(
        f"{outcome.onnx_path}: {how} (key {export.cache_key}, {export.exporter}, opset {export.opset})"
    )
    console.print(parity_table(export))
    if args.trt or not readiness.ready:
        console.print(readiness_table(readiness))
    verdict = "[green]ready[/]" if readiness.ready else "[red]not ready[/]"
    covered = f", profile {profile.min}..{profile.max}" if args.trt else ""
    console.print(f"TensorRT {TENSORRT_VERSION} parser readiness (static check{covered}): {verdict}")
    if outcome.engine_error is not None:
        console.print(f"[red]TensorRT build failed:[/] {escape(outcome.engine_error)}")
    elif outcome.engine is not None:
        engine = outcome.engine
        how = f"built in {engine.build_s:.1f} s" if engine.built else "reused from the cache"
        console.print(
            f"{outcome.engine_path}: TensorRT {engine.trt_version} engine on {engine.gpu_name}, {how}"
        )
    return outcome.exit_code
