"""The evaluation set grows while a verdict is inconclusive, and stops once every metric is decided."""

import numpy as np

from segbench.bench.numerics import EvaluationSet, grown_verdicts, joined
from segbench.config import validate_config
from segbench.metrics.equivalence import judge
from segbench.metrics.semantic import SemanticStats
from segbench.metrics.tasks import Evaluation, _unit_metrics
from segbench.results.verdicts import FAIL, INCONCLUSIVE, PASS

STEPS = [8, 16, 32, 64]


def chunk_of(step: int, flipped: set[int], moved: int = 0) -> Evaluation:
    """The confusion matrices of the images added at ``step``; in the ``flipped`` images (by overall
    index) ``moved`` class-0 pixels (of about 20000) go to class 1."""
    start, stop = (STEPS[step - 1] if step else 0), STEPS[step]
    rng = np.random.default_rng(step)
    cms = rng.integers(0, 50, (stop - start, 3, 3))
    cms[:, range(3), range(3)] += 20000
    for offset, index in enumerate(range(start, stop)):
        if index in flipped:
            cms[offset, 0, 0] -= moved
            cms[offset, 0, 1] += moved
    stats = SemanticStats(cms, [f"img{i}" for i in range(start, stop)])
    return Evaluation(_unit_metrics(stats), stats)


def run_check(flipped: set[int], moved: int = 1000):
    evaluated: list[int] = []

    def evaluate(step: int) -> Evaluation:
        evaluated.append(step)
        return chunk_of(step, flipped, moved)

    def baseline(step: int) -> Evaluation:
        return joined([chunk_of(s, set()) for s in range(step + 1)])

    verdicts = grown_verdicts(len(STEPS), evaluate, baseline, lambda f, b: judge(f, b, 0.5, 0.99))
    return {v.metric: v for v in verdicts}, evaluated


def test_no_change_is_decided_on_the_first_chunk():
    verdicts, evaluated = run_check(set())
    assert evaluated == [0] and all(v.verdict == PASS and v.images == 8 for v in verdicts.values())


def test_one_changed_image_grows_the_set_until_decided():
    verdicts, evaluated = run_check({3})
    # One image of 8 moves the metrics by more than 8 images can tell; among more images it stops mattering.
    assert evaluated == [0, 1, 2]
    assert {(v.metric, v.verdict, v.images) for v in verdicts.values()} == {
        ("miou", PASS, 32),
        # Decided on 16 images: they keep that verdict and count while mIoU needs 32.
        ("pixel_accuracy", PASS, 16),
        ("mean_dice", PASS, 16),
    }
    assert all(v.changed == 1 for v in verdicts.values())


def test_still_inconclusive_at_the_cap_stays_inconclusive():
    verdicts, evaluated = run_check({3}, moved=4000)
    assert evaluated == [0, 1, 2, 3]
    miou = verdicts["miou"]
    assert (
        miou.verdict == INCONCLUSIVE and miou.passed is None and miou.images == 64 and miou.images_needed > 64
    )


def test_a_systematic_change_fails_without_growing():
    verdicts, evaluated = run_check(set(range(0, 64, 2)), moved=4000)  # every other image
    assert evaluated == [0] and all(v.verdict == FAIL and v.images == 8 for v in verdicts.values())


def test_the_set_doubles_up_to_the_cap_and_extends_itself():
    dataset = {"kind": "shapes", "num_images": 6, "height": 32, "width": 32}
    config = validate_config(
        {"name": "t", "models": [{"name": "unet"}], "backends": [{"name": "torch"}],
         "numerics": {"max_images": 20, "dataset": dataset}},
        source="test",
    )  # fmt: skip
    images = EvaluationSet.from_config(config)
    assert images.steps == [6, 12, 20]
    first, second = images.chunk(0), images.chunk(1)
    assert [s.index for s in first] == list(range(6)) and [s.index for s in second] == list(range(6, 12))
    assert images.chunk(1) is second  # loaded once
    # The images of a larger set start with those of the smaller one.
    small = EvaluationSet.from_config(config.model_copy(update={"numerics": config.numerics.model_copy(
        update={"max_images": 6})}))  # fmt: skip
    assert small.steps == [6] and np.array_equal(small.chunk(0)[5].image, first[5].image)
