"""The numerics check's evaluation set, and the growth of that set while a verdict is inconclusive.

The set starts at the configured image count and doubles up to ``numerics.max_images`` (or a folder's
or a COCO dataset's size); the images added at each step form a chunk, generated or read once and
evaluated once per pipeline, so a backend's evaluation on 128 images is its evaluation on 64 plus the
next chunk (the per-image statistics concatenate). See ``segbench.metrics.equivalence`` for the
verdicts themselves.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from segbench.config import BenchmarkConfig, CocoDatasetConfig, FolderDatasetConfig
from segbench.data.coco_dataset import CocoDataset
from segbench.data.readers import SemanticFolder
from segbench.data.shapes import ShapesDataset
from segbench.metrics.equivalence import MetricVerdict, next_image_count
from segbench.metrics.tasks import Evaluation
from segbench.results.verdicts import INCONCLUSIVE


class EvaluationSet:
    """The evaluation images (lazy) and the image counts a check may grow through."""

    def __init__(self, samples: Sequence, steps: list[int]) -> None:
        self.samples = samples
        self.steps = steps
        self._chunks: dict[int, list] = {}

    @classmethod
    def from_config(cls, config: BenchmarkConfig) -> EvaluationSet:
        """The configured count first, then doubled up to ``numerics.max_images`` (or the folder's size).
        Image ``i`` is the same whatever the count, so a larger set extends the smaller one."""
        numerics = config.numerics
        dataset = numerics.dataset
        samples: SemanticFolder | CocoDataset | ShapesDataset
        if isinstance(dataset, FolderDatasetConfig):
            samples = SemanticFolder(dataset.images, dataset.masks, ignore_index=dataset.ignore_index)
            first = min(len(samples), dataset.limit or len(samples))
            cap = min(len(samples), max(first, numerics.max_images))
        elif isinstance(dataset, CocoDatasetConfig):
            samples = CocoDataset(dataset.images, dataset.instances, dataset.panoptic, dataset.panoptic_masks)
            first = min(len(samples), dataset.limit or len(samples))
            cap = min(len(samples), max(first, numerics.max_images))
        else:
            # The scenes themselves: they carry semantic, instance and panoptic ground truth alike.
            first = dataset.num_images
            cap = max(first, numerics.max_images)
            samples = ShapesDataset(cap, dataset.height, dataset.width, seed=dataset.seed, split="val")
        steps = [first]
        while (grown := next_image_count(steps[-1], cap)) is not None:
            steps.append(grown)
        return cls(samples, steps)

    def chunk(self, step: int) -> list:
        """The images added at step ``step`` (all of the first count at step 0), loaded once."""
        if step not in self._chunks:
            start = self.steps[step - 1] if step else 0
            self._chunks[step] = [self.samples[i] for i in range(start, self.steps[step])]
        return self._chunks[step]


def joined(evaluations: Sequence[Evaluation]) -> Evaluation:
    """Evaluations of consecutive chunks as one evaluation of their union."""
    union = evaluations[0]
    for more in evaluations[1:]:
        union = union.extended(more)
    return union


def grown_verdicts(
    steps: int,
    evaluate: Callable[[int], Evaluation],
    baseline: Callable[[int], Evaluation],
    judge: Callable[[Evaluation, Evaluation], list[MetricVerdict]],
    on_grow: Callable[[int], None] = lambda step: None,
) -> list[MetricVerdict]:
    """Judge every metric on the first step's images; while some are inconclusive, evaluate the next
    chunk (``evaluate(step)``: the candidate on chunk ``step``; ``baseline(step)``: the baseline on every
    image up to that step) and judge again. A metric keeps the verdict of the step that decided it; one
    still inconclusive after the last step stays inconclusive."""
    found = [evaluate(0)]
    decided: dict[str, MetricVerdict] = {}
    for step in range(steps):
        if step:
            on_grow(step)
            found.append(evaluate(step))
        verdicts = judge(joined(found), baseline(step))
        decided.update(
            {v.metric: v for v in verdicts if v.metric not in decided and v.verdict != INCONCLUSIVE}
        )
        if len(decided) == len(verdicts):
            break
    return [decided.get(v.metric, v) for v in verdicts]
