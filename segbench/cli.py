"""The ``segbench`` command line.

Bad input (a malformed config, an unknown name, a missing file) prints one ``segbench: error:`` line
and exits with code 2; ``run`` exits 1 when a cell or a numerics check failed, 0 otherwise.
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime
from pathlib import Path
from typing import NoReturn

from rich.console import Console

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
    from segbench.bench.sweep import parse_size

    try:
        return parse_size(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="segbench", description="Benchmark, export and check segmentation models.")
    parser.add_argument("--version", action="version", version=f"segbench {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = commands.add_parser("run", help="run a benchmark YAML: timing grid + numerics check")
    run.add_argument("config", type=Path, help="benchmark YAML, e.g. benchmark.yaml")
    run.add_argument("--out", type=Path, help="output directory (default: runs/NAME-TIMESTAMP)")
    run.add_argument("--models", type=_names, help="comma-separated models to keep from the config")
    run.add_argument("--backends", type=_names, help="comma-separated backends to keep from the config")

    models = commands.add_parser("models", help="list the registered models")
    models.add_argument("--size", type=_size, default=(512, 512), help="input size for GFLOPs (HxW)")

    trtcheck = commands.add_parser("trtcheck", help="check an ONNX file against TensorRT's parser rules")
    trtcheck.add_argument("onnx", type=Path, help="the ONNX file")

    data = commands.add_parser("data", help="write the synthetic shapes dataset to disk")
    data.add_argument("--out", type=Path, required=True, help="directory to write into")
    data.add_argument("--num", type=int, default=16, help="number of images (default 16)")
    data.add_argument("--size", type=_size, default=(256, 256), help="image size HxW (default 256x256)")
    data.add_argument("--seed", type=int, default=0)
    data.add_argument("--split", choices=("train", "val"), default="val")
    return parser


def cmd_run(args: argparse.Namespace, console: Console) -> int:
    from segbench.bench.run import filter_config, run_benchmark
    from segbench.config import load_config

    config = load_config(args.config)
    filter_config(config, args.models, args.backends)
    out_dir = args.out or Path("runs") / f"{config.name}-{datetime.now():%Y%m%d-%H%M%S}"
    summary = run_benchmark(config, out_dir, console)
    return summary.exit_code


def _validation_figure(meta: dict) -> str | None:
    """The headline validation metric a packaged checkpoint records, e.g. ``mIoU 79.1``."""
    for key, label in (("val_miou", "mIoU"), ("val_segm_ap", "mask AP"), ("val_pq", "PQ")):
        if meta.get(key) is not None:
            return f"{label} {100 * meta[key]:.1f}"
    return None


def cmd_models(args: argparse.Namespace, console: Console) -> int:
    from segbench.models.registry import MODELS, model_stats, resolve_options
    from segbench.models.weights import RANDOM, TRAINED, checkpoint_metadata, trained_checkpoint_path
    from segbench.reports.tables import models_table

    height, width = args.size
    rows = []
    for spec in MODELS.values():
        # The full architecture at its defaults, then the shipped checkpoint's (reduced) variant.
        variants = [(RANDOM, {}, None)]
        path = trained_checkpoint_path(spec.name)
        if path.is_file():
            meta = checkpoint_metadata(path)
            variants.append((TRAINED, resolve_options(spec.name, TRAINED), _validation_figure(meta)))
        for weights, options, figure in variants:
            rows.append(
                {
                    **model_stats(spec.name, options, height, width),
                    "name": spec.name,
                    "task": spec.task,
                    "weights": weights,
                    "options": ", ".join(f"{k}={v}" for k, v in options.items()) or "defaults",
                    "validation": figure,
                    "description": spec.description,
                }
            )
    console.print(models_table(rows, height, width))
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


COMMANDS = {"run": cmd_run, "models": cmd_models, "data": cmd_data, "trtcheck": cmd_trtcheck}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    console = Console()
    try:
        return COMMANDS[args.command](args, console)
    except SegbenchError as exc:
        print(f"segbench: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("segbench: interrupted; results written so far are kept", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
