"""Per-cell process isolation: a cell that kills its process or hangs fails alone, the run goes on."""

import sys
import textwrap

import pytest
import yaml

from segbench.cli import PLUGINS_ENV, main
from segbench.models import registry
from segbench.results.jsonl import read_jsonl
from segbench.results.layout import LOG_FILE, RESULTS_FILE

PLUGIN = '''
import os
import time

import torch

from segbench.models.base import SegmentationModel
from segbench.models.registry import MODELS, ModelSpec


class Fragile(SegmentationModel):
    """Aborts its process at width 40 (as a segfault or a poisoned CUDA context would) and hangs at 56."""

    def __init__(self, num_classes: int = 6):
        super().__init__(num_classes)
        self.conv = torch.nn.Conv2d(3, num_classes, 1)

    def forward(self, images):
        if images.shape[-1] == 40:
            os._exit(134)
        if images.shape[-1] == 56:
            time.sleep(3600)
        return self.conv(images)


MODELS["fragile"] = ModelSpec("fragile", "semantic", Fragile, "test model for process isolation")
'''


@pytest.mark.slow
def test_a_crashing_and_a_hanging_cell_fail_alone(tmp_path, monkeypatch):
    (tmp_path / "fragile_plugin.py").write_text(textwrap.dedent(PLUGIN))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))  # for the per-cell child processes
    monkeypatch.setenv(PLUGINS_ENV, "fragile_plugin")
    monkeypatch.delitem(sys.modules, "fragile_plugin", raising=False)
    config = {
        "name": "isolated",
        "models": [{"name": "fragile"}],
        "backends": [{"name": "torch"}],
        "sweep": {"input_sizes": ["32x40", "32x56", "32x64"], "batch_sizes": [1]},
        "timing": {"warmup": 0, "iterations": 2},
        "numerics": {"enabled": False},
        "isolation": {"subprocess": True, "timeout_s": 30},  # a child starts in 5-10 s on a loaded 2-core VM
    }
    path = tmp_path / "bench.yaml"
    path.write_text(yaml.safe_dump(config))
    out = tmp_path / "out"
    try:
        assert main(["run", str(path), "--out", str(out)]) == 1
    finally:
        registry.MODELS.pop("fragile", None)  # the plugin's entry goes with the test
    rows = {row["width"]: row for row in read_jsonl(out / RESULTS_FILE)}
    assert rows[64]["status"] == "ok" and rows[64]["isolated"]  # the run went on after both
    assert rows[40]["status"] == "crashed" and "exited with code 134" in rows[40]["error"]
    assert rows[56]["status"] == "timeout" and "timed out after 30 s" in rows[56]["error"]
    # The child's row is stamped as the parent's: one run, one config.
    assert rows[64]["env"]["config_hash"] == rows[40]["env"]["config_hash"]
    assert "the child exited with code 134" in (out / LOG_FILE).read_text()  # with its stderr
    assert [row["width"] for row in read_jsonl(out / RESULTS_FILE)] == [40, 56, 64]


def test_a_plugin_that_cannot_be_imported_is_bad_input(monkeypatch, capsys):
    monkeypatch.setenv(PLUGINS_ENV, "no_such_plugin_module")
    assert main(["models"]) == 2
    assert "cannot import no_such_plugin_module" in capsys.readouterr().err
