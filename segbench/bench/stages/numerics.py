"""The numerics stage: every backend x precision's task metrics and raw outputs against the PyTorch fp32
CPU baseline, evaluated with the runners the unit just timed.

The baseline is evaluated once per model, chunk by chunk as the evaluation set grows, and shared by
every backend; its own metrics are written as ``baseline`` rows. Task verdicts are equivalence tests
(:mod:`segbench.metrics.equivalence`), the set grown while one is inconclusive (:mod:`..numerics`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from segbench.backends import Runner
from segbench.backends.onnxruntime_backend import OnnxRuntimeConfig, OnnxRuntimeRunner
from segbench.backends.torch_backend import TorchConfig, TorchRunner
from segbench.bench.context import ModelState, RunContext, RunnerPool, StageFailed
from segbench.bench.numerics import grown_verdicts, joined
from segbench.bench.plan import Unit
from segbench.metrics.checker import sample_batches
from segbench.metrics.equivalence import MetricVerdict, baseline_rows, judge
from segbench.metrics.tasks import TASK_METRICS, Evaluation, evaluate_task
from segbench.metrics.tensors import compare_tensors, tensor_row
from segbench.models.base import SegmentationModel
from segbench.models.onnx_graph import OnnxGraphModel
from segbench.results.records import BASELINE, TENSOR, CheckRecord


def evaluate(
    ctx: RunContext,
    model: SegmentationModel,
    runner_for: Callable[[tuple[int, int]], Runner],
    samples: Sequence,
    raw_outputs: list[dict[str, Any]] | None = None,
) -> Evaluation:
    """Task metrics and their per-image statistics over ``samples`` through the shared pipeline;
    ``runner_for`` gives the runner for a batch's image size. The raw outputs (and inputs) of the first
    ``tensor_images`` images are appended to ``raw_outputs`` for the tensor-level check."""
    budget = ctx.config.numerics.tensor_images if raw_outputs is not None else 0

    def predict(images: np.ndarray) -> Any:
        nonlocal budget
        feeds = model.preprocess(images)
        outputs = runner_for(images.shape[1:3]).infer(feeds)
        if budget > 0 and raw_outputs is not None:
            raw_outputs.append({"feeds": feeds, "outputs": outputs})
            budget -= len(images)
        return model.postprocess(outputs, images.shape[1:3])

    if model.task == "none":  # an onnx: graph timed on random inputs: raw outputs, no task metric
        for batch in sample_batches(samples, ctx.config.numerics.batch_size):
            predict(np.stack([sample.image for sample in batch]))
        return Evaluation({}, NoMetrics([str(getattr(s, "name", i)) for i, s in enumerate(samples)]))
    return evaluate_task(model.task, predict, samples, ctx.config.numerics.batch_size, model.num_classes,
                         ctx.ignore_index, model.category_offset)  # fmt: skip


class NoMetrics:
    """The per-image statistics of a model with no task metric (``task: none``): the images alone."""

    def __init__(self, names: list[str]) -> None:
        self.names = names

    def __len__(self) -> int:
        return len(self.names)

    def metrics(self, weights: np.ndarray) -> dict[str, np.ndarray]:
        return {}

    def concat(self, other: NoMetrics) -> NoMetrics:
        return NoMetrics(self.names + other.names)


def baseline_runner(state: ModelState) -> Runner:
    """The reference every backend is checked against: PyTorch fp32 on the CPU, or for an ONNX file
    (no torch network) onnxruntime fp32 on the CPU running the file."""
    model = state.built
    if isinstance(model, OnnxGraphModel):
        return OnnxRuntimeRunner(model, OnnxRuntimeConfig(), "fp32", model.path)
    return TorchRunner(model, TorchConfig(), "fp32")


def baseline(ctx: RunContext, state: ModelState, step: int) -> Evaluation:
    """The PyTorch fp32 CPU baseline on the first ``steps[step]`` images, evaluated chunk by chunk once
    per model; the first chunk's metrics are written as the model's baseline rows."""
    evaluation_set = ctx.evaluation_set
    assert evaluation_set is not None, "the numerics stages run with numerics enabled, an evaluation set"
    steps = evaluation_set.steps
    while len(state.baseline_chunks) <= step:
        index = len(state.baseline_chunks)
        ctx.sink.status(f"{state.entry.name}: fp32 baseline on the CPU, {steps[index]} images")
        with baseline_runner(state) as runner:
            found = evaluate(ctx, state.built, lambda size: runner, evaluation_set.chunk(index),
                             state.baseline_outputs if not index else None)  # fmt: skip
        state.baseline_chunks.append(found)
        if index == 0 and state.entry.name not in ctx.done.baselines:
            for verdict in baseline_rows(found):
                ctx.sink.check(CheckRecord.of(state.baseline_subject(), verdict.to_dict(), role=BASELINE))
    return joined(state.baseline_chunks[: step + 1])


def prepare_baseline(ctx: RunContext, state: ModelState) -> bool:
    """Evaluate the baseline's first chunk (once); False, with the reason kept, when it cannot run."""
    if state.baseline_error is None and not state.baseline_chunks:
        try:
            baseline(ctx, state, 0)
        except Exception as exc:
            state.baseline_error = ctx.log.failure(f"{state.entry.name}: PyTorch fp32 baseline", exc)
    return state.baseline_error is None


def task_verdicts(
    ctx: RunContext, state: ModelState, unit: Unit, pool: RunnerPool, raw: list
) -> list[MetricVerdict]:
    """The task verdicts, the evaluation set grown while one is inconclusive (see ``grown_verdicts``)."""
    evaluation_set = ctx.evaluation_set
    assert evaluation_set is not None, "the numerics stages run with numerics enabled, an evaluation set"
    numerics, steps = ctx.config.numerics, evaluation_set.steps

    def evaluate_step(step: int) -> Evaluation:
        samples = evaluation_set.chunk(step)
        return evaluate(ctx, state.built, lambda size: pool.get(size)[0], samples, None if step else raw)

    def judged(found: Evaluation, base: Evaluation) -> list[MetricVerdict]:
        return judge(found, base, numerics.tolerances(unit.precision), numerics.floor(unit.precision),
                     numerics.confidence, numerics.bootstrap_resamples)  # fmt: skip

    def growing(step: int) -> None:
        ctx.sink.status(f"{unit.where} · inconclusive at {steps[step - 1]} images: evaluating {steps[step]}")

    if state.task == "none":  # tensor level only: the first chunk's raw outputs
        evaluate_step(0)
        return []
    return grown_verdicts(len(steps), evaluate_step, lambda step: baseline(ctx, state, step), judged, growing)


def is_baseline(unit: Unit) -> bool:
    """Whether the unit is the baseline configuration itself (nothing to check)."""
    reference = OnnxRuntimeConfig if unit.entry.onnx is not None else TorchConfig
    return (
        type(unit.backend) is reference
        and unit.backend.device == "cpu"
        and unit.precision == "fp32"
        and not unit.backend.variant()
    )


def check(ctx: RunContext, state: ModelState, unit: Unit, pool: RunnerPool) -> None:
    """Task-level and tensor-level verdicts of one unit against the baseline. The raw outputs of a check
    that failed at reduced precision are left on the pool for the diagnosis stage."""
    if not unit.check or is_baseline(unit):
        return
    subject = state.subject(unit.backend, unit.precision)
    if state.model is None:
        if not ctx.timing:  # a check-only run has no cells to say why there is no verdict
            ctx.sink.check(CheckRecord.failed(subject, "model", state.error))
        return
    if not prepare_baseline(ctx, state):
        for metric in TASK_METRICS.get(state.task, ("tensors",)):
            ctx.sink.check(CheckRecord.failed(subject, metric, state.baseline_error))
        return
    ctx.sink.status(f"{unit.where} · numerics")
    numerics = ctx.config.numerics
    base = baseline(ctx, state, 0)
    raw: list[dict[str, Any]] = []
    try:
        verdicts = task_verdicts(ctx, state, unit, pool, raw)
    except StageFailed as exc:
        error = str(exc)
    except Exception as exc:
        error = ctx.log.failure(f"{unit.where}: numerics check", exc)
    else:
        for verdict in verdicts:
            ctx.sink.check(CheckRecord.of(subject, verdict.to_dict()))
        tensors = compare_tensors(
            state.model.task,
            [batch["outputs"] for batch in state.baseline_outputs],
            [batch["outputs"] for batch in raw],
            numerics.tensor_limits(unit.precision),
        )
        ctx.sink.check(CheckRecord.of(subject, tensor_row(tensors), level=TENSOR))
        failed = not tensors.passed or any(v.passed is False for v in verdicts)
        if failed and unit.precision != "fp32":
            pool.failed_check_outputs = raw
        return
    tolerances = numerics.tolerances(unit.precision)
    if not base.metrics:  # task none: the tensor check is the check that could not run
        ctx.sink.check(CheckRecord.failed(subject, "tensors", error))
    for metric, base_value in base.metrics.items():
        ctx.sink.check(CheckRecord.failed(subject, metric, error, baseline=100 * base_value,
                                          tolerance=tolerances[metric]))  # fmt: skip
