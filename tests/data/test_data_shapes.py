"""Synthetic shapes dataset: determinism, shapes/dtypes and scene content."""

from __future__ import annotations

import numpy as np
import pytest

from segbench.data import CATEGORIES, CLASSES, IGNORE_INDEX, NUM_CLASSES, ShapesDataset, ShapesSample
from segbench.data.shapes import STUFF_CLASSES, THING_CLASSES


def assert_same_sample(a: ShapesSample, b: ShapesSample) -> None:
    assert a.index == b.index
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.semantic, b.semantic)
    assert [i.category for i in a.instances] == [i.category for i in b.instances]
    for ia, ib in zip(a.instances, b.instances, strict=True):
        np.testing.assert_array_equal(ia.mask, ib.mask)


def test_constants() -> None:
    assert CLASSES == ("sky", "ground", "water", "circle", "rectangle", "triangle")
    assert NUM_CLASSES == 6
    assert IGNORE_INDEX == 255
    assert [c.id for c in CATEGORIES] == [1, 2, 3, 4, 5, 6]
    assert [c.name for c in CATEGORIES] == list(CLASSES)
    assert [c.isthing for c in CATEGORIES] == [False] * len(STUFF_CLASSES) + [True] * len(THING_CLASSES)
    assert len({c.color for c in CATEGORIES}) == len(CATEGORIES)


def test_same_key_gives_identical_samples() -> None:
    a = ShapesDataset(4, seed=11, split="train")
    b = ShapesDataset(4, seed=11, split="train")
    for i in range(4):
        assert_same_sample(a[i], b[i])


def test_sample_independent_of_access_order() -> None:
    sequential = list(ShapesDataset(6, height=64, width=80, seed=5))
    fresh = ShapesDataset(6, height=64, width=80, seed=5)
    for i in (4, 1, 5, 0):
        assert_same_sample(fresh[i], sequential[i])
    assert_same_sample(fresh[-1], sequential[5])
    assert_same_sample(fresh[-6], sequential[0])


def test_different_seed_split_or_index_differ() -> None:
    base = ShapesDataset(2, seed=0, split="val")
    variants = [
        base[0],
        base[1],
        ShapesDataset(1, seed=1, split="val")[0],
        ShapesDataset(1, seed=0, split="train")[0],
    ]
    for i in range(len(variants)):
        for j in range(i + 1, len(variants)):
            assert not np.array_equal(variants[i].image, variants[j].image), (i, j)


def test_dataset_size_does_not_change_samples() -> None:
    assert_same_sample(ShapesDataset(3, seed=2)[2], ShapesDataset(50, seed=2)[2])


@pytest.mark.parametrize(("height", "width"), [(64, 96), (257, 131), (32, 32), (40, 300)])
def test_any_size_gives_right_shapes_and_dtypes(height: int, width: int) -> None:
    ds = ShapesDataset(3, height=height, width=width, seed=1)
    for sample in ds:
        assert sample.image.shape == (height, width, 3)
        assert sample.image.dtype == np.uint8
        assert sample.semantic.shape == (height, width)
        assert sample.semantic.dtype == np.uint8
        for inst in sample.instances:
            assert inst.mask.shape == (height, width)
            assert inst.mask.dtype == bool


def test_sequence_protocol() -> None:
    ds = ShapesDataset(3, height=32, width=32)
    assert len(ds) == 3
    assert [s.index for s in ds] == [0, 1, 2]
    assert [s.name for s in ds[1:]] == ["000001", "000002"]
    assert ds[np.int64(2)].index == 2
    with pytest.raises(IndexError):
        ds[3]
    with pytest.raises(IndexError):
        ds[-4]
    assert len(ShapesDataset(0)) == 0
    assert list(ShapesDataset(0)) == []


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"num_images": -1}, "num_images"),
        ({"num_images": 1, "height": 31}, "height"),
        ({"num_images": 1, "width": 16}, "width"),
        ({"num_images": 1, "split": "test"}, "split"),
        ({"num_images": 1, "max_instances": 0}, "max_instances"),
        ({"num_images": 1, "seed": -1}, "seed"),
    ],
)
def test_invalid_arguments(kwargs: dict, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        ShapesDataset(**kwargs)


@pytest.fixture(scope="module")
def samples() -> list[ShapesSample]:
    return list(ShapesDataset(20, height=128, width=128, seed=0))


def test_semantic_values_in_range(samples: list[ShapesSample]) -> None:
    allowed = set(range(NUM_CLASSES)) | {IGNORE_INDEX}
    for sample in samples:
        assert set(np.unique(sample.semantic).tolist()) <= allowed


def test_scenes_have_stuff_and_things(samples: list[ShapesSample]) -> None:
    for sample in samples:
        present = set(np.unique(sample.semantic).tolist())
        # The horizon always lies inside the image: sky and ground are in every scene.
        assert {0, 1} <= present, sample.name
    assert sum(bool(s.instances) for s in samples) >= 16
    assert sum(2 in np.unique(s.semantic) for s in samples) >= 5  # water appears regularly
    seen = {inst.category for s in samples for inst in s.instances}
    assert seen == {3, 4, 5}


def test_instance_masks_disjoint_and_consistent_with_semantic(samples: list[ShapesSample]) -> None:
    for sample in samples:
        h, w = sample.semantic.shape
        min_area = max(16, int(np.ceil(0.0015 * h * w)))
        coverage = np.zeros((h, w), np.int32)
        for inst in sample.instances:
            assert inst.category in (3, 4, 5)
            assert inst.area >= min_area
            assert np.all(sample.semantic[inst.mask] == inst.category)
            coverage += inst.mask
        assert coverage.max(initial=0) <= 1, f"{sample.name}: overlapping instance masks"
        # Thing labels in the semantic map are exactly the union of the kept instances.
        np.testing.assert_array_equal(
            (sample.semantic >= 3) & (sample.semantic != IGNORE_INDEX), coverage == 1
        )


def test_bbox_and_area_describe_the_mask(samples: list[ShapesSample]) -> None:
    for sample in samples:
        for inst in sample.instances:
            x, y, bw, bh = inst.bbox
            assert all(isinstance(v, float) for v in inst.bbox)
            x0, y0, x1, y1 = int(x), int(y), int(x + bw), int(y + bh)
            assert inst.area == int(inst.mask.sum())
            assert inst.mask[y0:y1, x0:x1].sum() == inst.area  # everything inside the box
            # ... and the box is tight: each border row/column touches the mask.
            assert inst.mask[y0].any() and inst.mask[y1 - 1].any()
            assert inst.mask[:, x0].any() and inst.mask[:, x1 - 1].any()


def test_occlusion_is_common(samples: list[ShapesSample]) -> None:
    instances = [inst for s in samples for inst in s.instances]
    for inst in instances:
        assert inst.unoccluded_area is not None
        assert inst.area <= inst.unoccluded_area
    # In at least half of the scenes some kept instance lost part of its shape to a later one.
    occluded_scenes = sum(any(i.area < i.unoccluded_area for i in s.instances) for s in samples)
    assert occluded_scenes >= len(samples) // 2

    # Independent of unoccluded_area: two different instances touching (4-neighbours) means the
    # shapes overlap or abut, which random placement alone would rarely produce.
    def touching(a: np.ndarray, b: np.ndarray) -> bool:
        return bool(
            (a[1:] & b[:-1]).any()
            or (a[:-1] & b[1:]).any()
            or (a[:, 1:] & b[:, :-1]).any()
            or (a[:, :-1] & b[:, 1:]).any()
        )

    images_with_contact = sum(
        any(touching(p.mask, q.mask) for i, p in enumerate(s.instances) for q in s.instances[i + 1 :])
        for s in samples
    )
    assert images_with_contact >= len(samples) // 2


def test_dropped_fragments_are_ignored() -> None:
    # Many instances on a small canvas make sub-threshold fragments certain to occur.
    ds = ShapesDataset(10, height=64, width=64, seed=4, max_instances=12)
    ignored = 0
    for sample in ds:
        ignore = sample.semantic == IGNORE_INDEX
        ignored += int(ignore.sum())
        for inst in sample.instances:
            assert not (inst.mask & ignore).any()
    assert ignored > 0


def test_stuff_textures_are_distinguishable(samples: list[ShapesSample]) -> None:
    waters = 0
    for sample in samples:
        img = sample.image.astype(np.float32)
        sky = img[sample.semantic == 0].mean(axis=0)
        ground = img[sample.semantic == 1].mean(axis=0)
        assert sky[2] > sky[0] + 40, sample.name  # blue sky
        assert ground[2] < min(ground[0], ground[1]), sample.name  # brown/green ground
        water = sample.semantic == 2
        # Horizontal ripples: neighbours differ much more across rows than along a row.
        vertical = water[1:] & water[:-1]
        horizontal = water[:, 1:] & water[:, :-1]
        if vertical.sum() > 200 and horizontal.sum() > 200:
            waters += 1
            dv = np.abs(img[1:] - img[:-1]).sum(-1)[vertical].mean()
            dh = np.abs(img[:, 1:] - img[:, :-1]).sum(-1)[horizontal].mean()
            assert dv > 1.5 * dh, sample.name
    assert waters >= 3
