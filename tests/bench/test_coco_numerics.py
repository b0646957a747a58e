"""The numerics check on a COCO-format dataset on disk: the scenes written as COCO files score exactly
as the same scenes generated in memory, so any COCO dataset can stand in for the synthetic one."""

from __future__ import annotations

import pytest

from segbench.bench.pipeline import run_benchmark
from segbench.data import ShapesDataset, write_shapes_dataset
from segbench.errors import ConfigError
from segbench.models import registry
from segbench.models.registry import ModelSpec
from tests.fakes import fake_backend
from tests.fakes.configs import tiny_config


def tiny_mask2former(num_classes: int = 6):
    from segbench.models.mask2former import mask2former

    return mask2former(num_classes, "resnet-tiny", num_queries=6, hidden_dim=32, encoder_layers=1,
                       decoder_layers=2, stuff_classes=(0, 1, 2))  # fmt: skip


@pytest.fixture
def m2f(monkeypatch):
    monkeypatch.setitem(registry.MODELS, "m2f", ModelSpec("m2f", "panoptic", tiny_mask2former, "test"))
    with fake_backend.registered():
        yield


def check_config(dataset: dict) -> object:
    numerics = {"batch_size": 2, "max_images": 4, "dataset": dataset}
    return tiny_config(numerics=numerics, name="coco", models=[{"name": "m2f"}])


@pytest.mark.slow
def test_a_coco_dataset_on_disk_scores_as_the_scenes_in_memory(tmp_path, m2f):
    root = write_shapes_dataset(tmp_path / "coco", ShapesDataset(4, 64, 64, seed=0, split="val"))
    on_disk = {"kind": "coco", "images": str(root / "images"), "panoptic": str(root / "panoptic.json"),
               "instances": str(root / "instances.json"), "num_classes": 6}  # fmt: skip
    in_memory = {"kind": "shapes", "num_images": 4, "height": 64, "width": 64}
    found = {}
    for name, dataset in (("disk", on_disk), ("memory", in_memory)):
        summary = run_benchmark(check_config(dataset), tmp_path / name, timing=False)
        found[name] = {(c.role, c.metric): (c.value, c.verdict) for c in summary.checks if c.level == "task"}
        assert summary.exit_code == 0
    assert found["disk"] == found["memory"]
    assert {metric for _, metric in found["disk"]} == {"pq", "sq", "rq"}


def test_a_coco_dataset_needs_the_labels_of_the_models_task(tmp_path, m2f):
    root = write_shapes_dataset(tmp_path / "coco", ShapesDataset(2, 64, 64))
    images, instances = str(root / "images"), str(root / "instances.json")
    with pytest.raises(ConfigError, match="the coco dataset has no panoptic labels"):
        check_config({"kind": "coco", "images": images, "instances": instances, "num_classes": 6})
    with pytest.raises(ConfigError, match="needs instances: JSON, panoptic: JSON, or both"):
        check_config({"kind": "coco", "images": str(root / "images"), "num_classes": 6})
