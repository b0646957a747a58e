"""Rich tables for the terminal: benchmark cells, numerics verdicts, the model registry."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from rich.markup import escape
from rich.table import Table


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def backend_label(row: dict[str, Any]) -> str:
    """``torch`` or ``torch (channels_last=True)``: the backend plus its non-default options."""
    options = row.get("backend_options") or {}
    suffix = ", ".join(f"{k}={v}" for k, v in options.items())
    return f"{row['backend']} ({suffix})" if suffix else row["backend"]


def results_table(results: Iterable[dict[str, Any]]) -> Table:
    table = Table(
        title="Benchmark (end-to-end: preprocess + forward + postprocess, ms)", title_justify="left"
    )
    results = list(results)
    repeated = any(r.get("repeat", 0) > 0 for r in results)
    for column in ("model", "backend", "device", "prec", "size", "batch", *(("pass",) if repeated else ())):
        table.add_column(column)
    for column in ("p50", "p90", "mean", "img/s", "peak host MB"):
        table.add_column(column, justify="right")
    table.add_column("status")
    for r in results:
        latency = r.get("latency_ms") or {}
        ok = r["status"] == "ok"
        table.add_row(
            r["model"],
            backend_label(r),
            r["device"],
            r["precision"],
            f"{r['height']}x{r['width']}",
            str(r["batch_size"]),
            *((str(r.get("repeat", 0) + 1),) if repeated else ()),
            _ms(latency.get("p50")),
            _ms(latency.get("p90")),
            _ms(latency.get("mean")),
            "-" if r.get("throughput_ips") is None else f"{r['throughput_ips']:.1f}",
            "-" if r.get("peak_host_mb") is None else f"{r['peak_host_mb']:.0f}",
            "[green]ok[/]" if ok else f"[red]failed[/] {escape(r.get('error') or '')}",
        )
    return table


def _paired(row: dict[str, Any]) -> str:
    paired = row.get("paired")
    if not paired or paired.get("mean") is None:
        return ""
    return f"{paired['mean']:+.3f} [{paired['ci_low']:+.3f}, {paired['ci_high']:+.3f}]"


def numerics_table(rows: Iterable[dict[str, Any]]) -> Table:
    """Task-level rows (metric points against the baseline, with the per-image paired mean delta and its
    95% bootstrap interval) and tensor-level rows (the judged raw-output check, as a fraction)."""
    table = Table(title="Numerics against the PyTorch fp32 baseline (points)", title_justify="left")
    for column in ("model", "backend", "device", "prec", "metric"):
        table.add_column(column)
    for column in ("value", "baseline", "delta", "tol", "paired Δ [95% CI]"):
        table.add_column(column, justify="right")
    table.add_column("verdict")
    for row in rows:
        if row["role"] == "baseline":
            verdict = "[cyan]baseline[/]"
        elif row["passed"] is None:
            verdict = "[cyan]info[/]" + (f" {escape(row['error'])}" if row.get("error") else "")
        elif row["passed"]:
            verdict = "[green]pass[/]"
        else:
            verdict = "[red]FAIL[/]" + (f" {escape(row['error'])}" if row.get("error") else "")
        tensor = row.get("level") == "tensor"
        value = row["value"]
        table.add_row(
            row["model"],
            backend_label(row),
            row["device"],
            row["precision"],
            escape(row["metric"]),
            "-" if value is None else (f"{value:.5f}" if tensor else f"{value:.2f}"),
            "-" if row["baseline"] is None else f"{row['baseline']:.2f}",
            "-" if row["delta"] is None else f"{row['delta']:+.3f}",
            ""
            if row["role"] == "baseline" or row["tolerance"] is None
            else (
                f"{'<=' if row.get('bound') == 'max' else '>='}{row['tolerance']:.5f}"
                if tensor
                else f"{row['tolerance']:.2f}"
            ),
            _paired(row),
            verdict,
        )
    return table


def models_table(rows: Iterable[dict[str, Any]], height: int, width: int) -> Table:
    table = Table(title=f"Models (GFLOPs at 1x3x{height}x{width})", title_justify="left")
    for column in ("name", "task", "weights", "options"):
        table.add_column(column)
    for column in ("params (M)", "GFLOPs", "validation"):
        table.add_column(column, justify="right")
    table.add_column("description")
    for row in rows:
        table.add_row(
            row["name"],
            row["task"],
            row["weights"],
            row["options"],
            f"{row['params'] / 1e6:.2f}",
            "-" if row["gflops"] is None else f"{row['gflops']:.2f}",
            row["validation"] or "-",
            row["description"],
        )
    return table


def readiness_table(report: Any) -> Table:
    """A TensorRT readiness report: the ops the graph uses, then each finding."""
    ops = ", ".join(f"{op} x{count}" for op, count in sorted(report.op_counts.items()))
    table = Table(title=f"TensorRT readiness of {report.path} (opset {report.opset})", caption=ops)
    for column in ("severity", "where", "finding"):
        table.add_column(column)
    for finding in report.findings:
        style = {"error": "red", "warning": "yellow"}.get(finding.severity, "cyan")
        table.add_row(f"[{style}]{finding.severity}[/]", escape(finding.where), escape(finding.message))
    return table


def parity_table(export: Any) -> Table:
    """An export's raw-output parity against PyTorch, one row per checked input shape."""
    table = Table(
        title=f"{export.precision} ONNX vs PyTorch at shapes other than the traced one", title_justify="left"
    )
    for column in ("input", "max abs err", "max rel err", "agreement", "verdict"):
        table.add_column(column, justify="left" if column == "input" else "right")
    for report in export.parity:
        if report.detection_agreement is not None:
            agreement = f"{100 * report.detection_agreement:.1f}% detections"
        elif report.argmax_agreement is not None:
            agreement = f"{100 * report.argmax_agreement:.3f}% argmax"
        else:
            agreement = "-"
        table.add_row(
            "x".join(str(d) for d in report.shape),
            f"{report.max_abs_err:.3g}",
            f"{report.max_rel_err:.3g}",
            agreement,
            "[green]pass[/]" if report.passed else "[red]FAIL[/]",
        )
    return table
