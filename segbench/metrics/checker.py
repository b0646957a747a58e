"""The numerics checker's data plumbing: batches of evaluation samples through a prediction function.

It knows nothing of backends: the caller passes a ``predict(images) -> label maps`` function (the same
preprocess -> backend forward -> postprocess pipeline the benchmark times) and gets metric values back;
:mod:`segbench.metrics.equivalence` turns a candidate and a baseline into verdicts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence

import numpy as np

from segbench.metrics.semantic import confusion_matrix, semantic_metrics

Predict = Callable[[np.ndarray], np.ndarray]


def sample_batches(samples: Sequence, batch_size: int) -> Iterator[list]:
    """Consecutive samples with same-size ``.image`` in groups of up to ``batch_size``."""
    batch: list = []
    for sample in samples:
        if batch and (len(batch) == batch_size or sample.image.shape != batch[0].image.shape):
            yield batch
            batch = []
        batch.append(sample)
    if batch:
        yield batch


def semantic_batches(samples: Sequence, batch_size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Stack consecutive same-size samples (``.image``, ``.label``) into batches of up to ``batch_size``."""
    for batch in sample_batches(samples, batch_size):
        yield np.stack([s.image for s in batch]), np.stack([s.label for s in batch])


def evaluate_semantic(
    predict: Predict,
    batches: Iterable[tuple[np.ndarray, np.ndarray]],
    num_classes: int,
    ignore_index: int = 255,
) -> dict[str, float]:
    """mIoU, pixel accuracy and mean Dice (fractions) of ``predict`` over all batches."""
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    for images, labels in batches:
        pred = predict(images)
        cm += confusion_matrix(pred, labels, num_classes, ignore_index)
    return semantic_metrics(cm)
