"""Raw-output parity of an exported graph against PyTorch, and how it is shown to the user.

Each checked input shape gets a ``ParityReport`` whose ``checks`` are the quantities its verdict was
judged on, each with its bound and direction: the max absolute error of every float output against
``atol + rtol * max|torch|``, the argmax agreement of a semantic model's logits, the share of confident
detections an instance model reproduces. Other numbers in the report (the max elementwise relative
error, which explodes wherever PyTorch's output is near zero; a detector's worst box error) are
informational and are printed as such, never beside the verdict.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from segbench.errors import first_line
from segbench.metrics.tensors import detection_agreement
from segbench.models.base import SegmentationModel


@dataclass(frozen=True)
class ParityTolerance:
    """How close a graph's raw outputs must stay to PyTorch's: ``max|err| <= atol + rtol * max|torch|``
    for float outputs, and the share of argmax pixels (semantic) or confident detections (instance)
    that must agree."""

    atol: float
    rtol: float
    argmax_agreement: float
    detection_agreement: float


# fp16 graphs round every activation to 11 significant bits: errors of about 1e-3 relative per layer add
# up, so their bound is looser; the task metrics (the numerics check) judge whether that matters.
PARITY_TOLERANCES = {
    "fp32": ParityTolerance(atol=1e-4, rtol=1e-3, argmax_agreement=0.999, detection_agreement=0.99),
    "fp16": ParityTolerance(atol=1e-2, rtol=2e-2, argmax_agreement=0.99, detection_agreement=0.95),
}
# When an ONNX detection reproduces a PyTorch one (see ``segbench.metrics.tensors.detection_agreement``).
DETECTION_MATCH = {"min_score": 0.3, "score_tol": 0.01, "box_iou": 0.95}


@dataclass(frozen=True)
class ParityCheck:
    """One quantity a parity verdict is judged on: ``value DIRECTION bound`` must hold."""

    name: str  # e.g. "argmax agreement", "max abs err (logits)"
    value: float
    bound: float
    direction: str  # ">=" (agreements) or "<=" (errors)
    passed: bool
    percent: bool = False  # a share, shown as a percentage


@dataclass(frozen=True)
class ParityReport:
    """Raw-output agreement between PyTorch and ONNX Runtime on one input shape."""

    shape: tuple[int, ...]
    max_abs_err: float
    max_rel_err: float  # informational: max elementwise |err| / |torch|, huge wherever torch is near 0
    argmax_agreement: float | None  # semantic models: share of pixels with the same argmax class
    passed: bool
    # Instance models: share of confident PyTorch detections that ONNX Runtime reproduces.
    detection_agreement: float | None = None
    checks: tuple[ParityCheck, ...] = ()  # what ``passed`` was judged on
    error: str | None = None  # why no output could be compared (the graph did not run, shapes differ)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ParityReport:
        checks = tuple(ParityCheck(**check) for check in data.get("checks", ()))
        return cls(**{**data, "shape": tuple(data["shape"]), "checks": checks})


def _report(
    shape: tuple[int, ...],
    checks: list[ParityCheck],
    max_abs: float,
    max_rel: float,
    argmax: float | None = None,
    detections: float | None = None,
) -> ParityReport:
    passed = all(check.passed for check in checks)
    return ParityReport(shape, max_abs, max_rel, argmax, passed, detections, tuple(checks))


def _failed(shape: tuple[int, ...], error: str) -> ParityReport:
    return ParityReport(shape, float("inf"), float("inf"), None, False, error=error)


def parity_inputs(model: SegmentationModel, batch: int, height: int, width: int, seed: int) -> np.ndarray:
    """Preprocessed synthetic scenes: realistic inputs, so detectors see objects rather than noise."""
    from segbench.data.shapes import scene_images

    return model.preprocess(scene_images(batch, height, width, seed))[model.input_names[0]]


def cpu_session(path: str | Path, emulate_low_precision: bool = False, options: Any = None) -> Any:
    """An onnxruntime CPU session for the graph at ``path``.

    With ``emulate_low_precision``, an fp16 graph runs as its emulation (``segbench.export.fp16_diagnosis.
    emulate_low_precision``): onnxruntime's CPU provider would run whole fp16 regions in fp32 from
    fp16 weights, hiding activation rounding and overflow; the emulation rounds every fp16 tensor after
    the node that produces it, as fp16 storage on a GPU does.
    """
    import onnx
    import onnxruntime as ort

    if not emulate_low_precision or Path(f"{path}.data").is_file():  # (a >2 GB graph is run as it is)
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    from segbench.export.fp16_emulation import emulate_low_precision as emulate

    graph = emulate(onnx.load(str(path)))
    return ort.InferenceSession(graph.SerializeToString(), options, providers=["CPUExecutionProvider"])


def check_parity(
    model: SegmentationModel,
    onnx_path: str | Path,
    shapes: list[tuple[int, int, int]],
    seed: int = 0,
    tolerance: ParityTolerance = PARITY_TOLERANCES["fp32"],
    emulate_low_precision: bool = False,
) -> list[ParityReport]:
    """Compare raw outputs of PyTorch and ONNX Runtime (CPU) for each ``(batch, height, width)``.

    Dense outputs must satisfy ``max|onnx - torch| <= atol + rtol * max|torch|`` for every float output
    (integer outputs must match exactly), and for semantic models a share of pixels (99.9% in fp32) must
    keep their argmax class. Instance models are compared as detections (see ``detection_agreement``).
    A graph that cannot run at a shape (e.g. one specialised to its traced size) fails that shape.
    """
    session = cpu_session(onnx_path, emulate_low_precision)
    names = list(model.output_names)
    reports = []
    for index, (batch, height, width) in enumerate(shapes):
        shape = (batch, 3, height, width)
        x = parity_inputs(model, batch, height, width, seed + index)
        with torch.no_grad():
            raw = model(torch.from_numpy(x))
        expected = [t.numpy() for t in (raw if isinstance(raw, tuple) else (raw,))]
        try:
            actual = session.run(names, {model.input_names[0]: x})
        except Exception as exc:
            reports.append(_failed(shape, f"onnxruntime cannot run the graph: {first_line(exc)}"))
            continue
        wrong = [f"{n} {a.shape} vs {b.shape}" for n, a, b in zip(names, actual, expected, strict=True)
                 if a.shape != b.shape]  # fmt: skip
        if wrong:
            reports.append(_failed(shape, f"output shapes differ from PyTorch's: {', '.join(wrong)}"))
            continue
        if model.task == "instance":
            want, got = (dict(zip(names, outputs, strict=True)) for outputs in (expected, actual))
            reproduced, worst = detection_agreement(want, got, **DETECTION_MATCH)
            bound = tolerance.detection_agreement
            check = ParityCheck("detections reproduced", reproduced, bound, ">=", reproduced >= bound, True)
            reports.append(_report(shape, [check], worst, 0.0, detections=reproduced))
            continue
        checks = []
        max_abs = max_rel = 0.0
        for name, got, want in zip(names, actual, expected, strict=True):
            if not np.issubdtype(want.dtype, np.floating):
                differing = int(np.count_nonzero(got != want))
                checks.append(ParityCheck(f"elements differing ({name})", differing, 0, "<=", differing == 0))
                continue
            abs_err = np.abs(got - want)
            worst = float(abs_err.max()) if abs_err.size else 0.0
            max_abs = max(max_abs, worst)
            if abs_err.size:
                max_rel = max(max_rel, float((abs_err / np.maximum(np.abs(want), 1e-6)).max()))
            bound = tolerance.atol + tolerance.rtol * (float(np.abs(want).max()) if want.size else 0.0)
            checks.append(ParityCheck(f"max abs err ({name})", worst, bound, "<=", worst <= bound))
        agreement = None
        if model.task == "semantic":
            agreement = float((actual[0].argmax(1) == expected[0].argmax(1)).mean())
            bound = tolerance.argmax_agreement
            checks.append(ParityCheck("argmax agreement", agreement, bound, ">=", agreement >= bound, True))
        reports.append(_report(shape, checks, max_abs, max_rel, argmax=agreement))
    return reports


def parity_shapes(
    model: SegmentationModel, static_size: tuple[int, int] | None = None, static_batch: int | None = None
) -> list[tuple[int, int, int]]:
    """Shapes for the parity check: batch 1 and 3 (the trace used 2) unless the batch is static; for
    dynamic graphs, sizes off the traced one and off the size divisor too."""
    batches = (static_batch, static_batch) if static_batch else (1, 3)
    if static_size:
        return [(batches[0], *static_size), (batches[1], *static_size)][: 1 if static_batch else 2]
    divisor = max(model.size_divisor, 8)
    return [(batches[0], 2 * divisor + 5, 3 * divisor - 3), (batches[1], 5 * divisor, 2 * divisor)]


def shape_text(shape: tuple[int, ...]) -> str:
    return "x".join(str(d) for d in shape)


def _number(value: float, digits: int, percent: bool) -> str:
    if not percent or not math.isfinite(value):
        return f"{value:.{digits}g}"
    # Shares are floored, so a value shown as 100% really is 100% and one shown at the bound reaches it.
    return f"{math.floor(100 * value * 10**digits) / 10**digits:.{digits}f}%"


def check_text(check: ParityCheck) -> tuple[str, str]:
    """``check``'s value and ``DIRECTION bound`` as text, with as many digits as it takes for the printed
    comparison to read as it was judged (``0.0614 <= 0.0614`` next to FAIL would not)."""
    for digits in range(3, 10):
        value = _number(check.value, digits, check.percent)
        bound = f"{100 * check.bound:g}%" if check.percent else f"{check.bound:.{digits}g}"
        shown, limit = (float(text.rstrip("%")) for text in (value, bound))
        holds = shown >= limit if check.direction == ">=" else shown <= limit
        if holds == check.passed:
            break
    return value, f"{check.direction}{bound}"  # spelled as every report spells a bound: "<=0.227"


def parity_failure(reports: list[ParityReport], precision: str) -> str | None:
    """One line naming the first failing shape of ``reports`` and what failed there, or None when all
    passed."""
    failed = [r for r in reports if not r.passed]
    if not failed:
        return None
    worst = failed[0]
    if worst.error:
        reason = worst.error
    else:
        reason = "; ".join(
            f"{check.name} {value}, needs {bound}"
            for check in worst.checks
            if not check.passed
            for value, bound in [check_text(check)]
        )
    return f"{precision} ONNX parity failed at input {shape_text(worst.shape)}: {reason}"


def parity_notes(reports: list[ParityReport], tolerance: ParityTolerance | None) -> list[str]:
    """What the judged bounds mean, then the informational (not judged) numbers of ``reports``."""
    notes = []
    names = {check.name for report in reports for check in report.checks}
    if tolerance and any(name.startswith("max abs err") for name in names):
        scale = "max|PyTorch output| at that input"
        notes.append(f"max abs err bound: {tolerance.atol:g} + {tolerance.rtol:g} x {scale}.")
    if "detections reproduced" in names:
        notes.append(
            f"detections reproduced: PyTorch detections scoring >= {DETECTION_MATCH['min_score']:g} that "
            f"ONNX Runtime also finds (same label, score within {DETECTION_MATCH['score_tol']:g}, box IoU "
            f">= {DETECTION_MATCH['box_iou']:g})."
        )
    compared = [r for r in reports if r.error is None]
    detections = [r for r in compared if r.detection_agreement is not None]
    dense = [r for r in compared if r.detection_agreement is None and r.checks]
    if dense:
        values = ", ".join(f"{r.max_rel_err:.3g} at {shape_text(r.shape)}" for r in dense)
        notes.append(
            f"Not judged: max elementwise relative error {values} (|err| / |PyTorch|, large wherever "
            "PyTorch's output is near zero)."
        )
    if detections:
        values = ", ".join(f"{r.max_abs_err:.3g} at {shape_text(r.shape)}" for r in detections)
        notes.append(f"Not judged: largest box coordinate error (pixels) of reproduced detections {values}.")
    return notes
