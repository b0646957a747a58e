"""The ``segbench`` argument parser: commands, options and their value types (a bad value is one
error line and exit code 2, never a traceback)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import NoReturn

from segbench import __version__

EXIT_BAD_INPUT = 2
DEFAULT_SENTINEL_BOUND = 0.25  # segbench.reports.noise.DEFAULT_BOUND (not imported: it would load pandas)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # argparse prints the whole usage block; one line naming the problem is easier to act on.
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def names(value: str) -> list[str]:
    return [name.strip() for name in value.split(",") if name.strip()]


def _size(value: str) -> tuple[int, int]:
    from segbench.sweep import parse_size

    try:
        return parse_size(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _batches(value: str) -> list[int]:
    try:
        batches = [int(v) for v in names(value)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid batch sizes {value!r}: use e.g. 1,4") from None
    if not batches or min(batches) < 1:
        raise argparse.ArgumentTypeError(f"batch sizes must be positive integers, got {value!r}")
    return batches


def _sizes(value: str) -> list[tuple[int, int]]:
    return [_size(v) for v in names(value)] or [_size("")]


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


def _verdict_options(parser: argparse.ArgumentParser, change: str, test: str) -> None:
    """A performance verdict's two settings: the change that matters, and the test's level."""
    parser.add_argument(
        "--threshold", type=_threshold, default=0.05, metavar="PCT",
        help=f"{change} change that counts, e.g. 5%% or 0.05 (default 5%%)",
    )  # fmt: skip
    parser.add_argument(
        "--alpha", type=_probability, default=0.01,
        help=f"significance level of the {test}, Benjamini-Hochberg adjusted (default 0.01)",
    )  # fmt: skip


def _sentinel_bound(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--sentinel-bound", type=_threshold, default=DEFAULT_SENTINEL_BOUND, metavar="PCT",
        help="how far the noise sentinel may move between two compared passes before they count as "
             "disturbed: no performance verdict from them (default 25%%)",
    )  # fmt: skip


def _machine_options(parser: argparse.ArgumentParser) -> None:
    """How compare treats the machine: the sentinel's bound, and runs on other hardware."""
    _sentinel_bound(parser)
    parser.add_argument(
        "--allow-machine-change", action="store_true",
        help="judge latencies even when the runs' hardware differs (CPU model or count, GPU model, driver, "
             "power limit); by default they get no verdict and compare exits 3",
    )  # fmt: skip


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
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser, metavar="COMMAND")

    run = commands.add_parser("run", help="run a benchmark YAML: timing grid + numerics check")
    run.add_argument("config", type=Path, help="benchmark YAML, e.g. benchmark.yaml")
    run.add_argument("--out", type=Path, help="output directory (default: runs/NAME-TIMESTAMP)")
    run.add_argument("--models", type=names, help="comma-separated models to keep from the config")
    run.add_argument("--backends", type=names, help="comma-separated backends to keep from the config")
    run.add_argument(
        "--resume",
        action="store_true",
        help="finish the run in --out: skip the cells and checks it already has",
    )
    run.add_argument("--dry-run", action="store_true", help="print the plan (units, cells, checks) and exit")
    # An isolated child's one cell (HEIGHT WIDTH BATCH), timed alone while its unit serves its whole grid.
    run.add_argument("--only-cell", type=int, nargs=3, help=argparse.SUPPRESS)
    run.add_argument(
        "--estimate-from", type=Path, metavar="RUN_DIR",
        help="with --dry-run: estimate the timing loops from an earlier run's latencies",
    )  # fmt: skip
    run.add_argument(
        "--no-report", action="store_true",
        help="skip writing the report files (CSV, Parquet, Markdown, HTML, plots) at the end",
    )  # fmt: skip
    run.add_argument(
        "--executor", metavar="NAME",
        help="where the timing and batch search run (local, ray); overrides executor: in the YAML",
    )  # fmt: skip
    run.add_argument(
        "--address", metavar="ADDR",
        help="with --executor ray: the cluster (auto, host:port, ray://host:port; default: a local one)",
    )  # fmt: skip

    merge = commands.add_parser(
        "merge", help="join runs of one config made separately (one per machine) into one run directory"
    )
    merge.add_argument("runs", type=Path, nargs="+", metavar="RUN_DIR", help="the run directories to join")
    merge.add_argument("--out", type=Path, required=True, help="the merged run's directory")

    report = commands.add_parser(
        "report", help="re-render a run's report (CSV, Parquet, Markdown, HTML, plots) from its results"
    )
    report.add_argument("run_dir", type=Path, help="a run directory (holding results.jsonl)")
    report.add_argument("--out", type=Path, help="where to write (default: the run directory)")

    compare = commands.add_parser(
        "compare",
        help="compare two runs cell by cell; exit 1 on a regression, 3 when the machine changed or was "
        "disturbed",
    )
    compare.add_argument("baseline", type=Path, help="the baseline run directory")
    compare.add_argument("current", type=Path, help="the run directory to judge")
    _verdict_options(compare, "p50 latency (and peak memory)", "one-sided Mann-Whitney U test")
    compare.add_argument("--md", type=Path, metavar="FILE", help="also write the comparison as Markdown")
    compare.add_argument("--json", type=Path, metavar="FILE", help="also write the comparison as JSON")
    _machine_options(compare)

    ab = commands.add_parser(
        "ab", help="A/B two commits (or two Python environments) on this machine, passes interleaved; exit 1 "
        "on a regression, 3 when the machine was disturbed",
    )  # fmt: skip
    ab.add_argument("config", type=Path, help="benchmark YAML (each side reads it from its own commit)")
    ab.add_argument("--base", metavar="REF", help="the commit to compare with (a branch, tag or sha)")
    ab.add_argument("--head", metavar="REF", help="the commit to judge (default: the working tree)")
    ab.add_argument("--out", type=Path, required=True, help="where base/, head/ and the comparison go")
    ab.add_argument(
        "--base-python", type=Path, metavar="PATH",
        help="run the base side with this Python (another environment: other torch or onnxruntime "
             "versions); --base then defaults to the head's commit",
    )  # fmt: skip
    ab.add_argument(
        "--passes", type=_positive, help="interleaved pass pairs (default: the config's timing.repeats)"
    )
    _verdict_options(ab, "latency (the passes' fastest iterations, paired)", "paired t-test")
    _sentinel_bound(ab)
    side = commands.add_parser("ab-side")  # started by ab, one per side: no help, so not listed
    side.add_argument("config", type=Path)
    side.add_argument("--out", type=Path, required=True)
    side.add_argument("--repeats", type=_positive, required=True)

    check = commands.add_parser(
        "check", help="numerics only: every backend's task metric and raw outputs against PyTorch fp32"
    )
    check.add_argument("config", type=Path, nargs="?", help="benchmark YAML (or use --model/--backend)")
    check.add_argument("--out", type=Path, help="output directory (default: runs/check-NAME-TIMESTAMP)")
    check.add_argument("--models", type=names, help="comma-separated models to keep from the config")
    check.add_argument("--backends", type=names, help="comma-separated backends to keep from the config")
    check.add_argument("--dry-run", action="store_true", help="print the checks it would run and exit")
    check.set_defaults(estimate_from=None)
    check.add_argument("--model", help="without a config: the model to check")
    check.add_argument("--backend", help="without a config: the backend to check (torch, onnxruntime, ...)")
    check.add_argument("--device", choices=("cpu", "cuda"), help="without a config: the backend's device")
    check.add_argument("--precision", default="fp32", help="without a config: fp32 | fp16 | bf16")
    check.add_argument("--artifact", type=Path, help="without a config: a pre-exported .onnx / .engine file")
    check.add_argument(
        "--allow-mismatch", action="store_true",
        help="without a config: run an --artifact that fails parity against the model (warned, recorded)",
    )  # fmt: skip
    _add_weights_and_options(check, "without a config: ")
    check.add_argument("--images", type=_positive, default=16, help="without a config: evaluation scenes")
    check.add_argument(
        "--max-images",
        type=_positive,
        default=256,
        help="without a config: the most scenes to grow to while a verdict is inconclusive (default 256)",
    )
    check.add_argument("--size", type=_size, default=(256, 256), help="without a config: scene size HxW")

    bench = commands.add_parser(
        "bench", help="benchmark any ONNX file on the graph backends (like trtexec --onnx), with numerics"
    )
    bench.add_argument("onnx", type=Path, help="the ONNX file (one image input [N, C, H, W])")
    bench.add_argument("--sizes", type=_sizes, metavar="HxW,...", help="default: the graph's, else 256,512")
    bench.add_argument("--batch-sizes", type=_batches, metavar="N,...", help="default: the graph's, else 1,4")
    bench.add_argument(
        "--backends", type=names, metavar="B,...",
        help="onnxruntime, onnxruntime:cuda, onnxruntime:tensorrt, tensorrt (default: onnxruntime)",
    )  # fmt: skip
    bench.add_argument(
        "--precisions", type=names, metavar="P,...", help="the graph's precision (default fp32)"
    )
    bench.add_argument(
        "--task", choices=("none", "semantic"), default="none",
        help="none: random inputs, timing and tensor-level numerics; semantic: images, argmax, mIoU",
    )  # fmt: skip
    bench.add_argument("--num-classes", type=_positive, help="semantic: the output's class count")
    bench.add_argument("--out", type=Path, help="output directory (default: runs/bench-NAME-TIMESTAMP)")
    bench.add_argument("--no-report", action="store_true", help="skip writing the report files")

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
    data.add_argument("--seed", type=int, default=0,
                      help="generator seed: the same seed, split and size give the same images (default 0)")
    data.add_argument("--split", choices=("train", "val"), default="val",
                      help="which split's images: the two never share one (default val)")  # fmt: skip
    return parser
