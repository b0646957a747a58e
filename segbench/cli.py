"""The ``segbench`` command line.

Bad input (a malformed config, an unknown name, a missing file) prints one ``segbench: error:`` line
and exits with code 2; ``run`` exits 1 when a cell or a numerics check failed, 0 otherwise.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from datetime import datetime
from pathlib import Path
from typing import Any, NoReturn

from rich.console import Console
from rich.markup import escape

from segbench import __version__
from segbench.errors import ConfigError, SegbenchError

EXIT_BAD_INPUT = 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # argparse prints the whole usage block; one line naming the problem is easier to act on.
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _names(value: str) -> list[str]:
    return [name.strip() for name in value.split(",") if name.strip()]


def _size(value: str) -> tuple[int, int]:
    from segbench.sweep import parse_size

    try:
        return parse_size(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _batches(value: str) -> list[int]:
    try:
        batches = [int(v) for v in _names(value)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid batch sizes {value!r}: use e.g. 1,4") from None
    if not batches or min(batches) < 1:
        raise argparse.ArgumentTypeError(f"batch sizes must be positive integers, got {value!r}")
    return batches


def _sizes(value: str) -> list[tuple[int, int]]:
    return [_size(v) for v in _names(value)] or [_size("")]


def _positive(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value!r}")
    return number


def _threshold(value: str) -> float:
    from segbench.reports.compare import parse_threshold

    try:
        return parse_threshold(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _probability(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        number = -1.0
    if not 0 < number < 1:
        raise argparse.ArgumentTypeError(f"expected a probability between 0 and 1, got {value!r}")
    return number


def _option(value: str) -> tuple[str, object]:
    """``KEY=VALUE`` with the value read as YAML (``width=0.5``, ``backbone=vgg16``, ``bilinear=true``)."""
    import yaml

    key, sep, text = value.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {value!r}")
    try:
        return key.strip(), yaml.safe_load(text)
    except yaml.YAMLError:
        raise argparse.ArgumentTypeError(f"cannot read the value of {value!r}") from None


def _add_weights_and_options(parser: argparse.ArgumentParser, when: str = "") -> None:
    """``--weights`` and repeatable ``--option KEY=VALUE``: the model a command builds."""
    parser.add_argument(
        "--weights", default="trained", help=f"{when}random | trained | PATH (default: trained)"
    )
    parser.add_argument(
        "--option", dest="options", type=_option, action="append", default=[], metavar="KEY=VALUE",
        help=f"{when}a constructor option, repeatable (e.g. --option width=0.5)",
    )  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="segbench", description="Benchmark, export and check segmentation models.")
    parser.add_argument("--version", action="version", version=f"segbench {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = commands.add_parser("run", help="run a benchmark YAML: timing grid + numerics check")
    run.add_argument("config", type=Path, help="benchmark YAML, e.g. benchmark.yaml")
    run.add_argument("--out", type=Path, help="output directory (default: runs/NAME-TIMESTAMP)")
    run.add_argument("--models", type=_names, help="comma-separated models to keep from the config")
    run.add_argument("--backends", type=_names, help="comma-separated backends to keep from the config")
    run.add_argument(
        "--resume",
        action="store_true",
        help="finish the run in --out: skip the cells and checks it already has",
    )
    run.add_argument("--dry-run", action="store_true", help="print the plan (units, cells, checks) and exit")
    run.add_argument(
        "--no-report", action="store_true",
        help="skip writing the report files (CSV, Parquet, Markdown, HTML, plots) at the end",
    )  # fmt: skip

    report = commands.add_parser(
        "report", help="re-render a run's report (CSV, Parquet, Markdown, HTML, plots) from its results"
    )
    report.add_argument("run_dir", type=Path, help="a run directory (holding results.jsonl)")
    report.add_argument("--out", type=Path, help="where to write (default: the run directory)")

    compare = commands.add_parser(
        "compare", help="compare two runs cell by cell; exit 1 on a performance or accuracy regression"
    )
    compare.add_argument("baseline", type=Path, help="the baseline run directory")
    compare.add_argument("current", type=Path, help="the run directory to judge")
    compare.add_argument(
        "--threshold", type=_threshold, default=0.05, metavar="PCT",
        help="p50 latency (and peak memory) change that counts, e.g. 5%% or 0.05 (default 5%%)",
    )  # fmt: skip
    compare.add_argument(
        "--alpha", type=_probability, default=0.01,
        help="significance level of the Mann-Whitney U test, Benjamini-Hochberg adjusted (default 0.01)",
    )  # fmt: skip
    compare.add_argument("--md", type=Path, metavar="FILE", help="also write the comparison as Markdown")
    compare.add_argument("--json", type=Path, metavar="FILE", help="also write the comparison as JSON")

    check = commands.add_parser(
        "check", help="numerics only: every backend's task metric and raw outputs against PyTorch fp32"
    )
    check.add_argument("config", type=Path, nargs="?", help="benchmark YAML (or use --model/--backend)")
    check.add_argument("--out", type=Path, help="output directory (default: runs/check-NAME-TIMESTAMP)")
    check.add_argument("--models", type=_names, help="comma-separated models to keep from the config")
    check.add_argument("--backends", type=_names, help="comma-separated backends to keep from the config")
    check.add_argument("--dry-run", action="store_true", help="print the checks it would run and exit")
    check.add_argument("--model", help="without a config: the model to check")
    check.add_argument("--backend", help="without a config: the backend to check (torch, onnxruntime, ...)")
    check.add_argument("--device", choices=("cpu", "cuda"), help="without a config: the backend's device")
    check.add_argument("--precision", default="fp32", help="without a config: fp32 | fp16 | bf16")
    check.add_argument("--artifact", type=Path, help="without a config: a pre-exported .onnx / .engine file")
    _add_weights_and_options(check, "without a config: ")
    check.add_argument("--images", type=_positive, default=16, help="without a config: evaluation scenes")
    check.add_argument(
        "--max-images",
        type=_positive,
        default=256,
        help="without a config: the most scenes to grow to while a verdict is inconclusive (default 256)",
    )
    check.add_argument("--size", type=_size, default=(256, 256), help="without a config: scene size HxW")

    evaluate = commands.add_parser("eval", help="evaluate prediction files against ground truth (JSON out)")
    evaluate.add_argument("--task", required=True, choices=("semantic", "instance", "panoptic"))
    evaluate.add_argument("--gt", type=Path, required=True, help="label PNG folder / COCO JSON")
    evaluate.add_argument("--pred", type=Path, required=True, help="label PNG folder / COCO results JSON")
    evaluate.add_argument("--gt-dir", type=Path, help="panoptic: the ground-truth PNG folder")
    evaluate.add_argument("--pred-dir", type=Path, help="panoptic: the prediction PNG folder")
    evaluate.add_argument("--num-classes", type=_positive, help="semantic: class count (default: inferred)")
    evaluate.add_argument("--ignore-index", type=int, default=255, help="semantic: void label (default 255)")

    env = commands.add_parser("env", help="this machine and its software, as every run records them")
    env.add_argument("--json", action="store_true", help="print env.json's content instead of a table")

    models = commands.add_parser("models", help="list the registered models")
    models.add_argument("--size", type=_size, default=(512, 512), help="input size for GFLOPs (HxW)")
    models.add_argument("--json", action="store_true", help="print the registry as JSON instead of a table")

    trtcheck = commands.add_parser("trtcheck", help="check an ONNX file against TensorRT's parser rules")
    trtcheck.add_argument("onnx", type=Path, help="the ONNX file")

    export = commands.add_parser(
        "export", help="export a model to ONNX (cached, parity-checked), optionally build a TensorRT engine"
    )
    export.add_argument("model", help="a registered model (segbench models)")
    _add_weights_and_options(export)
    export.add_argument("--opset", type=int, default=18, help="ONNX opset (default 18)")
    export.add_argument("--exporter", choices=("dynamo", "torchscript"), help="default: the model's choice")
    export.add_argument(
        "--out", type=Path, default=Path("exports"), help="output directory (default: exports)"
    )
    export.add_argument("--static", type=_size, metavar="HxW", help="fix height and width (default: dynamic)")
    export.add_argument("--batch", type=_positive, metavar="N", help="fix the batch size (default: dynamic)")
    export.add_argument(
        "--fp16", action="store_true", help="an fp16 graph (fp32 keep-list, fp32 inputs/outputs)"
    )
    export.add_argument("--simplify", action="store_true", help="simplify the graph with onnxslim")
    export.add_argument(
        "--trt", action="store_true", help="also build a TensorRT engine (needs segbench[trt])"
    )
    export.add_argument(
        "--check-only", action="store_true",
        help="with --trt: only run the TensorRT readiness check on the export (no TensorRT or GPU needed)",
    )  # fmt: skip
    export.add_argument(
        "--sizes", type=_sizes, metavar="HxW,...",
        help="input sizes the engine's optimization profile covers (default: --static, else 256x256,512x512)",
    )  # fmt: skip
    export.add_argument(
        "--batch-sizes", type=_batches, metavar="N,...",
        help="batch sizes the profile covers (default: --batch, else 1,4)",
    )  # fmt: skip
    export.add_argument("--workspace-mb", type=_positive, help="TensorRT workspace limit in MiB")
    export.add_argument("--cache-dir", type=Path, help="export/engine cache (default: $SEGBENCH_CACHE_DIR "
                        "or ~/.cache/segbench)")  # fmt: skip

    data = commands.add_parser("data", help="write the synthetic shapes dataset to disk")
    data.add_argument("--out", type=Path, required=True, help="directory to write into")
    data.add_argument("--num", type=int, default=16, help="number of images (default 16)")
    data.add_argument("--size", type=_size, default=(256, 256), help="image size HxW (default 256x256)")
    data.add_argument("--seed", type=int, default=0)
    data.add_argument("--split", choices=("train", "val"), default="val")
    return parser


def cmd_run(args: argparse.Namespace, console: Console) -> int:
    from segbench.bench.plan import filter_config
    from segbench.config import load_config

    config = load_config(args.config)
    filter_config(config, args.models, args.backends)
    if args.resume and args.out is None:
        raise ConfigError("--resume needs --out: the directory of the run to finish")
    if args.dry_run:
        return _print_plan(config, args.out, console, timing=True, resume=args.resume)
    out_dir = args.out or Path("runs") / f"{config.name}-{datetime.now():%Y%m%d-%H%M%S}"
    summary = _run(config, out_dir, console, timing=True, resume=args.resume)
    if not args.no_report:
        _write_report_after_run(out_dir, console)
    return summary.exit_code


def _print_plan(config: Any, out_dir: Path | None, console: Console, timing: bool, resume: bool) -> int:
    """``--dry-run``: what the run would do, unit by unit; nothing is built or written."""
    from segbench.bench.pipeline import plan_run

    plan, _ = plan_run(config, out_dir, timing, resume)
    for line in plan.lines():
        console.print(escape(line), highlight=False)
    what = f"{plan.total} cells" if timing else f"{plan.total} checks"
    console.print(f"{len(plan.units)} units, {what}", highlight=False)
    return 0


def _run(config: Any, out_dir: Path, console: Console, timing: bool, resume: bool = False) -> Any:
    """Run the pipeline with the console's progress, then print its tables and the outcome line."""
    from segbench.bench.pipeline import run_benchmark
    from segbench.bench.progress import ConsoleProgress
    from segbench.reports.tables import numerics_table, outcome_line, results_table

    summary = run_benchmark(config, out_dir, timing, resume, listeners=[ConsoleProgress(console)])
    if timing:
        console.print(results_table(summary.results))
    if summary.numerics:
        console.print(numerics_table(summary.numerics))
    # The counts, then each failed cell and each failed or inconclusive check by name (plain text).
    outcome = outcome_line(summary.results if timing else [], summary.numerics, out_dir)
    console.print(outcome, markup=False, highlight=False, soft_wrap=True)
    return summary


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


def cmd_compare(args: argparse.Namespace, console: Console) -> int:
    """Exit 1 when a cell or a numerics check regressed, 0 otherwise, 2 on bad input."""
    from segbench.files import atomic_write_text
    from segbench.reports.compare import CompareSettings, compare_runs, comparison_json
    from segbench.reports.render import comparison_markdown
    from segbench.reports.rundata import load_run

    settings = CompareSettings(threshold=args.threshold, alpha=args.alpha)
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


def cmd_check(args: argparse.Namespace, console: Console) -> int:
    """Exit 0 when every verdict passes, 1 when one fails (for CI), 3 when one stays inconclusive at the
    image cap, 2 on bad input."""
    from segbench.bench.plan import filter_config
    from segbench.config import load_config

    adhoc = (args.model, args.backend, args.device, args.artifact)
    if args.config is not None:
        if any(value is not None for value in adhoc):
            raise ConfigError("--model/--backend/--device/--artifact are for use without a config file")
        config = load_config(args.config)
        filter_config(config, args.models, args.backends)
    else:
        config = _adhoc_check_config(args)
    if args.dry_run:
        return _print_plan(config, args.out, console, timing=False, resume=False)
    out_dir = args.out or Path("runs") / f"check-{config.name}-{datetime.now():%Y%m%d-%H%M%S}"
    return _run(config, out_dir, console, timing=False).exit_code


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
    from segbench.export.bundle import BundleRequest, export_bundle
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


COMMANDS = {
    "run": cmd_run,
    "report": cmd_report,
    "compare": cmd_compare,
    "check": cmd_check,
    "eval": cmd_eval,
    "env": cmd_env,
    "models": cmd_models,
    "data": cmd_data,
    "trtcheck": cmd_trtcheck,
    "export": cmd_export,
}


PLUGINS_ENV = "SEGBENCH_PLUGINS"


def load_plugins() -> None:
    """Import the modules named in ``$SEGBENCH_PLUGINS`` (comma-separated): they register extra models
    (a ``MODELS`` entry) or backends (a ``register_backend`` call) without editing segbench, in every
    process a run starts, per-cell child processes included. This runs before any config is validated,
    so a plugin's backend is part of the YAML schema."""
    for name in _names(os.environ.get(PLUGINS_ENV, "")):
        try:
            importlib.import_module(name)
        except Exception as exc:
            raise ConfigError(f"${PLUGINS_ENV}: cannot import {name}: {type(exc).__name__}: {exc}") from None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    console = Console()
    try:
        load_plugins()
        return COMMANDS[args.command](args, console)
    except SegbenchError as exc:
        print(f"segbench: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("segbench: interrupted; results written so far are kept", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
