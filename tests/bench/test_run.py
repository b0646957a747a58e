"""End-to-end runs through the CLI entry point on tiny models and sizes."""

import json
from pathlib import Path

import pytest
import torch

from segbench.cli import main
from segbench.errors import ConfigError
from segbench.models import registry
from segbench.models.base import SegmentationModel
from segbench.models.registry import ModelSpec
from segbench.results.jsonl import read_jsonl
from segbench.results.layout import NUMERICS_FILE, RESULTS_FILE
from tests.fakes.configs import write_config

# These tests are about exporting and caching: each starts from an empty export cache.
pytestmark = pytest.mark.fresh_export_cache

TINY = {
    "name": "tiny",
    "models": [
        {"name": "unet", "options": {"base_channels": 4}},
        {"name": "fcn8s", "options": {"width": 0.0625}, "timing": {"warmup": 0, "iterations": 3}},
    ],
    "backends": [{"name": "torch"}, {"name": "onnxruntime", "exporter": "torchscript"}],
    "sweep": {"input_sizes": ["32x32", "48x64"], "batch_sizes": [1, 2]},
    "timing": {"warmup": 1, "iterations": 2},
    "numerics": {"batch_size": 2, "dataset": {"kind": "shapes", "num_images": 4, "height": 64, "width": 64}},
}


def run_config(tmp_path, config):
    """``segbench run`` on ``config`` into ``tmp_path/out``: the exit code and both result files."""
    out = tmp_path / "out"
    code = main(["run", str(write_config(tmp_path, config)), "--out", str(out)])
    numerics = read_jsonl(out / NUMERICS_FILE) if (out / NUMERICS_FILE).exists() else []
    return code, read_jsonl(out / RESULTS_FILE), numerics


@pytest.mark.slow
def test_run_writes_every_cell_and_numerics(tmp_path, shared_export_cache):
    out = tmp_path / "out"
    code = main(["run", str(write_config(tmp_path, TINY)), "--out", str(out)])
    results = read_jsonl(out / RESULTS_FILE)
    numerics = read_jsonl(out / NUMERICS_FILE)
    assert code == 0, [r["error"] for r in results if r["status"] != "ok"]
    # 2 models x 2 backends x 2 sizes x 2 batch sizes
    assert len(results) == 16
    assert all(r["status"] == "ok" and r["error"] is None for r in results)
    for record in results:
        for key in ("mean", "p50", "p90", "p95", "p99", "std", "min", "max"):
            assert record["latency_ms"][key] > 0
        assert record["throughput_ips"] > 0
        assert record["peak_host_mb"] > 0
        assert record["peak_device_mb"] is None
        assert record["peak_device_nvml_process_mb"] is None and record["peak_device_nvml_device_mb"] is None
        assert len(record["env"]["fingerprint"]) == 12 and record["env"]["config_hash"]
        # fcn8s warms up 0 times (its own timing): no first iteration to report then.
        assert (record["first_iteration_ms"] is None) == (record["warmup"] == 0)
        # fcn8s carries its own timing; unet uses the top-level one.
        assert len(record["samples_ms"]) == (3 if record["model"] == "fcn8s" else 2)
        assert record["params"] > 0 and record["gflops"] > 0
    cells = {(r["model"], r["backend"], r["height"], r["width"], r["batch_size"]) for r in results}
    assert ("fcn8s", "onnxruntime", 48, 64, 2) in cells
    ort_cells = [r for r in results if r["backend"] == "onnxruntime"]
    assert all(r["backend_info"]["provider"] == "CPUExecutionProvider" for r in ort_cells)
    assert all(r["cold_start"]["export_s"] > 0 for r in ort_cells)
    for r in ort_cells:
        parity = r["artifact"]["parity"]
        assert parity and all(p["passed"] and p["argmax_agreement"] >= 0.999 for p in parity)
        # The graph lives in the export cache, under the key the result records.
        assert Path(r["artifact"]["path"]).is_file() and r["artifact"]["cache_key"] in r["artifact"]["path"]
    # Numerics: a baseline row and an onnxruntime row per model and metric; fp32 ORT matches PyTorch.
    roles = {(row["model"], row["backend"], row["role"]) for row in numerics}
    assert roles == {
        (m, b, role)
        for m in ("unet", "fcn8s")
        for b, role in [("torch", "baseline"), ("onnxruntime", "candidate")]
    }
    candidates = [row for row in numerics if row["role"] == "candidate" and row["level"] == "task"]
    assert len(candidates) == 6 and all(row["passed"] for row in candidates)
    assert all(abs(row["delta"]) < 0.5 and row["tolerance"] == 0.5 for row in candidates)
    assert all(row["relative_floor"] == 0.99 for row in candidates)
    # The equivalence test: the deviation's interval over the 4 scenes lies inside the band.
    for row in candidates:
        assert row["verdict"] == "pass" and row["images"] == 4 and row["images_needed"] is None
        assert row["band_low"] <= row["ci_low"] <= row["delta"] <= row["ci_high"] <= row["band_high"]
    # The tensor-level check, one per backend: argmax agreement and cosine of the logits.
    tensors = [row for row in numerics if row["level"] == "tensor"]
    assert len(tensors) == 2 and all(row["passed"] for row in tensors)
    for row in tensors:
        checks = row["tensors"]["checks"]
        assert checks["argmax_agreement"]["value"] > 0.999 and checks["cosine:logits"]["value"] > 0.99999
    env = json.loads((out / "env.json").read_text())
    assert env["config_name"] == "tiny" and "torch" in env["packages"] and env["cpu_count"] >= 1


@pytest.mark.slow
def test_filters_narrow_the_grid(tmp_path):
    out = tmp_path / "out"
    code = main(
        [
            "run",
            str(write_config(tmp_path, TINY)),
            "--out",
            str(out),
            "--models",
            "unet",
            "--backends",
            "torch",
        ]
    )
    results = read_jsonl(out / RESULTS_FILE)
    assert code == 0
    assert {(r["model"], r["backend"]) for r in results} == {("unet", "torch")}
    assert len(results) == 4


class FailsAtWidth48(SegmentationModel):
    """A model that cannot handle one input width, standing in for an unsupported op or OOM."""

    def __init__(self, num_classes: int = 6):
        super().__init__(num_classes)
        self.conv = torch.nn.Conv2d(3, num_classes, 1)

    def forward(self, images):
        if images.shape[-1] == 48:
            raise RuntimeError("kernel not implemented for width 48")
        return self.conv(images)


@pytest.mark.slow
def test_a_failing_cell_is_recorded_and_the_run_goes_on(tmp_path, monkeypatch):
    monkeypatch.setitem(
        registry.MODELS, "flaky", ModelSpec("flaky", "semantic", FailsAtWidth48, "test model")
    )
    config = {
        **TINY,
        "models": [{"name": "flaky"}, {"name": "unet", "options": {"base_channels": 4}}],
        "backends": [{"name": "torch"}],
        "sweep": {"input_sizes": ["32x32", "32x48", "32x64"], "batch_sizes": [1]},
    }
    code, results, _ = run_config(tmp_path, config)
    assert code == 1
    statuses = [(r["model"], r["width"], r["status"]) for r in results]
    assert statuses == [
        ("flaky", 32, "ok"),
        ("flaky", 48, "failed"),
        ("flaky", 64, "ok"),
        ("unet", 32, "ok"),
        ("unet", 48, "ok"),
        ("unet", 64, "ok"),
    ]
    failed = results[1]
    assert failed["error"] == "RuntimeError: kernel not implemented for width 48"
    assert failed["latency_ms"] is None and failed["throughput_ips"] is None


@pytest.mark.slow
def test_a_failed_export_fails_only_that_backend(tmp_path, monkeypatch):
    class Unexportable(FailsAtWidth48):
        def forward(self, images):
            if torch.jit.is_tracing() or torch.compiler.is_compiling():
                raise RuntimeError("no ONNX symbolic for this op")
            return self.conv(images)

    monkeypatch.setitem(registry.MODELS, "noexport", ModelSpec("noexport", "semantic", Unexportable, "test"))
    config = {
        **TINY,
        "models": [{"name": "noexport"}],
        "sweep": {"input_sizes": ["32x32"], "batch_sizes": [1, 2]},
    }
    code, results, numerics = run_config(tmp_path, config)
    assert code == 1
    assert [(r["backend"], r["status"]) for r in results] == [
        ("torch", "ok"),
        ("torch", "ok"),
        ("onnxruntime", "failed"),
        ("onnxruntime", "failed"),
    ]
    assert "no ONNX symbolic" in results[2]["error"]
    ort_checks = [row for row in numerics if row["backend"] == "onnxruntime"]
    assert ort_checks and not any(row["passed"] for row in ort_checks)
    assert "no ONNX symbolic" in ort_checks[0]["error"]


def test_existing_results_are_never_overwritten(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / RESULTS_FILE).write_text('{"kept": true}\n')
    code = main(["run", str(write_config(tmp_path, TINY)), "--out", str(out)])
    assert code == 2
    assert "already exists" in capsys.readouterr().err
    assert (out / RESULTS_FILE).read_text() == '{"kept": true}\n'


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the behaviour on a machine without a GPU")
def test_gpu_entries_are_skipped_without_a_gpu(tmp_path):
    config = {
        **TINY,
        "models": [TINY["models"][0]],
        "backends": [{"name": "torch"}, {"name": "torch", "device": "cuda", "precisions": ["fp16"]}],
    }
    code, results, _ = run_config(tmp_path, config)
    assert code == 0
    assert {r["device"] for r in results} == {"cpu"}
    env = json.loads((tmp_path / "out" / "env.json").read_text())
    assert env["skipped_backends"] == [
        {"backend": "torch", "device": "cuda", "reason": "no CUDA device visible to torch"}
    ]


@pytest.mark.slow
def test_numerics_on_a_dataset_folder(tmp_path):
    from segbench.data import ShapesDataset, write_shapes_dataset

    root = write_shapes_dataset(tmp_path / "data", ShapesDataset(3, 64, 48, seed=5))
    dataset = {
        "kind": "folder",
        "images": str(root / "images"),
        "masks": str(root / "semantic"),
        "num_classes": 6,
    }
    config = {**TINY, "models": [TINY["models"][0]], "numerics": {"dataset": dataset}}
    config["sweep"] = {"input_sizes": ["32x32"], "batch_sizes": [1]}
    out = tmp_path / "out"
    assert main(["run", str(write_config(tmp_path, config)), "--out", str(out)]) == 0
    numerics = read_jsonl(out / NUMERICS_FILE)
    metrics = {row["metric"] for row in numerics if row["level"] == "task"}
    assert metrics == {"miou", "pixel_accuracy", "mean_dice"}
    assert all(row["passed"] for row in numerics)


def test_missing_dataset_folder_is_bad_input(tmp_path, capsys):
    dataset = {
        "kind": "folder",
        "images": str(tmp_path / "no-images"),
        "masks": str(tmp_path),
        "num_classes": 6,
    }
    config = {**TINY, "numerics": {"dataset": dataset}}
    out = tmp_path / "out"
    assert main(["run", str(write_config(tmp_path, config)), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("segbench: error:") and str(tmp_path / "no-images") in err
    assert len(err.splitlines()) == 1
    assert not out.exists()


@pytest.mark.slow
def test_per_size_model_runs_one_graph_per_input_size(tmp_path, monkeypatch, export_cache):
    from segbench.models.mask2former import mask2former

    def tiny_mask2former(num_classes: int = 6):
        return mask2former(
            num_classes, "resnet-tiny", num_queries=6, hidden_dim=32, encoder_layers=1, decoder_layers=2,
            stuff_classes=(0, 1, 2),
        )  # fmt: skip

    monkeypatch.setitem(registry.MODELS, "m2f", ModelSpec("m2f", "panoptic", tiny_mask2former, "test"))
    config = {
        **TINY,
        "models": [{"name": "m2f"}],
        "sweep": {"input_sizes": ["64x64", "64x96"], "batch_sizes": [1, 2]},
        "numerics": {
            "batch_size": 2,
            "dataset": {"kind": "shapes", "num_images": 2, "height": 96, "width": 96},
        },
    }
    code, results, numerics = run_config(tmp_path, config)
    assert code == 0, [r["error"] for r in results if r["status"] != "ok"]
    ort = [r for r in results if r["backend"] == "onnxruntime"]
    # One graph per input size, shared by both batch sizes, each checked at batch 1 and 3.
    graphs = {(r["height"], r["width"]): r["artifact"]["path"] for r in ort}
    assert len(set(graphs.values())) == 2
    assert all(r["artifact"]["static_size"] == [r["height"], r["width"]] for r in ort)
    assert all(p["shape"][2:] == [r["height"], r["width"]] for r in ort for p in r["artifact"]["parity"])
    # The numerics ran at the dataset's size through a third graph (all three in the export cache),
    # with PQ/SQ/RQ verdicts.
    assert len(list((export_cache / "onnx").glob("m2f-fp32-*/model.onnx"))) == 3
    assert {row["metric"] for row in numerics if row["level"] == "task"} == {"pq", "sq", "rq"}
    assert all(row["passed"] for row in numerics if row["role"] == "candidate")


@pytest.mark.slow
def test_mask_rcnn_runs_on_both_backends_with_instance_numerics(tmp_path):
    from segbench.models import build_model
    from segbench.models.weights import save_checkpoint

    options = {
        "num_classes": 7,
        "backbone": "resnet10",
        "fpn_channels": 32,
        "representation_size": 64,
        "mask_channels": 32,
        "max_detections": 10,
    }
    model = build_model("mask_rcnn", options=options)
    # Random class weights score every box alike, and NMS ties then decide what survives; spread the
    # scores (zero-mean weights, a strong background bias) so both backends face a well-posed problem.
    classifier = model.roi_heads.box_predictor.cls_score
    with torch.no_grad():
        classifier.weight.copy_(
            0.2 * torch.randn(classifier.weight.shape, generator=torch.Generator().manual_seed(5))
        )
        classifier.bias.copy_(torch.tensor([7.0, 0, 0, 0, 0, 0, 0]))
    weights = tmp_path / "mask_rcnn.safetensors"
    save_checkpoint(model, weights, options)
    config = {
        **TINY,
        "models": [{"name": "mask_rcnn", "weights": str(weights)}],
        "sweep": {"input_sizes": ["96x96"], "batch_sizes": [1, 2]},
        "backends": [{"name": "torch"}, {"name": "onnxruntime"}],
        "numerics": {
            "batch_size": 2,
            "dataset": {"kind": "shapes", "num_images": 2, "height": 96, "width": 96},
        },
    }
    code, results, numerics = run_config(tmp_path, config)
    assert code == 0, [r["error"] for r in results if r["status"] != "ok"]
    assert [(r["backend"], r["batch_size"]) for r in results] == [
        ("torch", 1),
        ("torch", 2),
        ("onnxruntime", 1),
        ("onnxruntime", 2),
    ]
    assert all(r["task"] == "instance" for r in results)
    # The detector exports with the TorchScript exporter (NMS), one graph for every size.
    assert results[2]["artifact"]["exporter"] == "torchscript"
    assert {row["metric"] for row in numerics if row["level"] == "task"} == {"bbox_ap", "segm_ap"}
    tolerances = {
        row["metric"]: row["tolerance"]
        for row in numerics
        if row["role"] == "candidate" and row["level"] == "task"
    }
    assert tolerances == {"bbox_ap": 0.2, "segm_ap": 1.0}
    assert all(row["passed"] for row in numerics)


@pytest.mark.slow
def test_pre_exported_artifact_and_fp16_graphs_are_benchmarked_and_checked(tmp_path, shared_export_cache,
                                                                          tiny_unet_graph):  # fmt: skip
    graph = tiny_unet_graph()  # "my own graph": the export of the model the artifact entry names
    config = {
        **TINY,
        "models": [{"name": "unet", "options": {"base_channels": 4}}],
        "backends": [
            {"name": "onnxruntime", "precisions": ["fp16"]},
            {"name": "onnxruntime", "artifact": str(graph.path)},
        ],
        "sweep": {"input_sizes": ["32x32"], "batch_sizes": [1]},
    }
    code, results, numerics = run_config(tmp_path, config)
    assert code == 0, [r["error"] for r in results if r["status"] != "ok"]
    fp16, mine = results
    assert fp16["precision"] == "fp16" and fp16["artifact"]["precision"] == "fp16"
    assert fp16["artifact"]["fp16"]["fp16_nodes"] > 0
    assert mine["backend_options"] == {"artifact": str(graph.path)}
    assert mine["artifact"]["user_artifact"] and mine["artifact"]["path"] == str(graph.path)
    assert mine["artifact"]["parity"][0]["passed"] and mine["cold_start"]["export_s"] is None
    checked = {
        (row["precision"], str(row["backend_options"]))
        for row in numerics
        if row["role"] == "candidate" and row["level"] == "task"
    }
    assert checked == {("fp16", "{}"), ("fp32", str({"artifact": str(graph.path)}))}
    assert all(row["passed"] for row in numerics)


@pytest.mark.slow
def test_runners_get_the_shapes_they_will_serve(tmp_path, monkeypatch, shared_export_cache):
    """Engines derive their optimization profile from these: every cell plus the numerics batches."""
    from segbench.backends.onnxruntime_backend import OnnxRuntimeRunner

    seen = []
    activate = OnnxRuntimeRunner.activate

    def recording_activate(self):
        seen.append(self.input_shapes)
        activate(self)

    monkeypatch.setattr(OnnxRuntimeRunner, "activate", recording_activate)
    config = {
        **TINY,
        "models": [{"name": "unet", "options": {"base_channels": 4}}],
        "backends": [{"name": "onnxruntime"}],
        "sweep": {"input_sizes": ["32x32", "48x64"], "batch_sizes": [1, 2]},
    }
    assert main(["run", str(write_config(tmp_path, config)), "--out", str(tmp_path / "out")]) == 0
    assert seen == [[(1, 3, 32, 32), (1, 3, 48, 64), (1, 3, 64, 64), (2, 3, 32, 32), (2, 3, 48, 64),
                     (2, 3, 64, 64)]]  # fmt: skip


@pytest.mark.slow
def test_a_failing_fp16_check_says_which_layers_to_keep_in_fp32(tmp_path, monkeypatch):
    """A U-Net whose first convolution's outputs pass fp16's range: the fp16 graph fails its check,
    and the diagnosis row names that convolution as where the divergence starts."""
    from segbench.models.unet import unet

    def overflowing_unet(num_classes: int = 6):
        model = unet(num_classes, base_channels=4)
        first = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
        with torch.no_grad():
            first.weight.mul_(3e4)  # the BN after it is in eval mode: activations stay ~1e5
        return model

    monkeypatch.setitem(
        registry.MODELS, "hot_unet", ModelSpec("hot_unet", "semantic", overflowing_unet, "test")
    )
    config = {
        **TINY,
        "models": [{"name": "hot_unet"}],
        "backends": [{"name": "onnxruntime", "precisions": ["fp16"]}],
    }
    path = write_config(tmp_path, config)
    assert main(["check", str(path), "--out", str(tmp_path / "out")]) == 1
    rows = read_jsonl(tmp_path / "out" / NUMERICS_FILE)
    diagnosis = next(row for row in rows if row["level"] == "diagnosis")
    assert diagnosis["passed"] is None and diagnosis["error"] is None
    first = diagnosis["diagnosis"]["first_divergent"]
    assert first["op_type"] == "Conv" and first["nonfinite"] > 0
    assert first["node"] in diagnosis["diagnosis"]["suggest_fp32"]


class OutOfMemoryPast5(FailsAtWidth48):
    """Stands in for a device that runs out of memory past batch 5."""

    def forward(self, images):
        if images.shape[0] > 5:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return self.conv(images)


@pytest.mark.slow
def test_largest_batch_search_is_recorded(tmp_path, monkeypatch):
    monkeypatch.setitem(registry.MODELS, "oom5", ModelSpec("oom5", "semantic", OutOfMemoryPast5, "test"))
    config = {
        **TINY,
        "models": [{"name": "oom5"}, {"name": "unet", "options": {"base_channels": 4}}],
        "backends": [{"name": "torch"}],
        "sweep": {
            "input_sizes": ["32x32"],
            "batch_sizes": [1, 2],
            "find_max_batch": True,
            "max_batch_limit": 16,
        },
        "numerics": {"enabled": False},
    }
    out = tmp_path / "out"
    assert main(["run", str(write_config(tmp_path, config)), "--out", str(out)]) == 0
    capacity = {row["model"]: row for row in read_jsonl(out / "capacity.jsonl")}
    assert capacity["oom5"]["max_batch"] == 5 and capacity["oom5"]["fails_at"] == 6
    assert "out of memory" in capacity["oom5"]["error"] and not capacity["oom5"]["limit_reached"]
    assert capacity["unet"]["max_batch"] == 16 and capacity["unet"]["limit_reached"]


@pytest.mark.slow
def test_repeats_measure_the_grid_in_passes_and_reports_pool_them(tmp_path):
    from segbench.reports.rundata import load_run

    config = {**TINY, "models": TINY["models"][:1], "backends": TINY["backends"][:1]}
    config["timing"] = {"warmup": 1, "iterations": 3, "repeats": 3}
    code, results, numerics = run_config(tmp_path, config)
    assert code == 0
    # 4 cells x 3 passes, pass by pass: every cell once before any cell a second time.
    assert [r["repeat"] for r in results] == [0] * 4 + [1] * 4 + [2] * 4
    assert [(r["height"], r["batch_size"]) for r in results[:4]] == [
        (r["height"], r["batch_size"]) for r in results[4:8]
    ]
    assert sum(r["role"] == "candidate" for r in numerics) == 0  # torch alone: only the baseline
    assert {r["role"] for r in numerics} == {"baseline"} and len(numerics) == 3  # checked once
    cells = load_run(tmp_path / "out").cells
    assert len(cells) == 4 and set(cells["repeats"]) == {3}
    first = cells.iloc[0]
    passes = [r for r in results if (r["height"], r["batch_size"]) == (first["height"], first["batch_size"])]
    assert first["samples_ms"] == [v for r in passes for v in r["samples_ms"]]
    assert first["repeat_p50_ms"] == [r["latency_ms"]["p50"] for r in passes]
    assert first["iterations"] == 9
    assert (tmp_path / "out" / "report.html").exists()


@pytest.mark.slow
def test_a_run_writes_its_report_unless_told_not_to(tmp_path):
    config = {**TINY, "models": TINY["models"][1:], "backends": TINY["backends"][:1]}
    config.update(sweep={"input_sizes": ["32x32"], "batch_sizes": [1]}, numerics={"enabled": False})
    out = tmp_path / "out"
    assert main(["run", str(write_config(tmp_path, config)), "--out", str(out), "--no-report"]) == 0
    assert not (out / "report.md").exists() and not (out / "results.csv").exists()
    assert main(["report", str(out)]) == 0
    assert (out / "report.md").exists() and (out / "results.parquet").exists()


def test_the_run_use_case_narrows_a_copy_and_says_where_it_wrote(tmp_path):
    from segbench.bench.run import RunRequest, plan, run
    from tests.fakes import fake_backend
    from tests.fakes.configs import tiny_config

    with fake_backend.registered():
        config = tiny_config([{"name": "fake"}, {"name": "fake_graph"}])
        request = RunRequest(config, backends=["fake"], out=tmp_path / "run")
        planned = plan(request)
        assert {unit.backend.name for unit in planned.plan.units} == {"fake"}
        assert planned.out_dir == tmp_path / "run" and not planned.out_dir.exists()  # a plan writes nothing
        summary = run(request)
    assert summary.out_dir == tmp_path / "run" and len(summary.cells) == 3
    assert [b.name for b in config.backends] == ["fake", "fake_graph"]  # the caller's config is untouched
    with pytest.raises(ConfigError, match="--resume needs --out"):
        run(RunRequest(config, resume=True))
    with pytest.raises(ConfigError, match="--address needs --executor ray"):
        plan(RunRequest(config, address="auto"))
