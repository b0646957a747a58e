"""Planning is pure: config (and what a resumed run wrote) -> units and cells, printable by --dry-run."""

from __future__ import annotations

from pathlib import Path

import yaml

from segbench.bench.plan import Cell, build_plan, cell_key, estimate_seconds, measured_latencies
from segbench.bench.resume import FinishedWork
from segbench.cli import main
from segbench.config import validate_config

CONFIG = {
    "name": "plan",
    "models": [{"name": "unet", "options": {"base_channels": 4}},
               {"name": "fcn8s", "timing": {"repeats": 2}}],
    "backends": [{"name": "torch"}, {"name": "onnxruntime", "precisions": ["fp32", "fp16"]},
                 {"name": "torch", "channels_last": True, "model": "unet"}],
    "sweep": {"input_sizes": ["32x32", "64x64"], "batch_sizes": [1, 2]},
    "numerics": {"batch_size": 4, "dataset": {"kind": "shapes", "num_images": 4, "height": 64, "width": 64}},
}  # fmt: skip


def test_units_come_pass_by_pass_model_by_model():
    plan = build_plan(validate_config(CONFIG))
    first = [(u.repeat, u.entry.name, u.backend.name, u.precision) for u in plan.units if u.repeat == 0]
    assert first == [
        (0, "unet", "torch", "fp32"),
        (0, "unet", "onnxruntime", "fp32"),
        (0, "unet", "onnxruntime", "fp16"),
        (0, "unet", "torch", "fp32"),  # the channels_last entry is for unet only
        (0, "fcn8s", "torch", "fp32"),
        (0, "fcn8s", "onnxruntime", "fp32"),
        (0, "fcn8s", "onnxruntime", "fp16"),
    ]
    # Only fcn8s repeats its timing; the second pass has no checks.
    second = [u for u in plan.units if u.repeat == 1]
    assert {u.entry.name for u in second} == {"fcn8s"} and not any(u.check for u in second)
    unit = plan.units[0]
    assert unit.cells == (Cell(32, 32, 1), Cell(32, 32, 2), Cell(64, 64, 1), Cell(64, 64, 2))
    # Runners are sized for the cells and the numerics batches (4 and a remainder of 1) alike.
    assert Cell(64, 64, 4) in unit.served and unit.check
    assert plan.total == 7 * 4 + 3 * 4


def test_a_check_only_plan_has_one_step_per_unit_and_no_cells():
    plan = build_plan(validate_config(CONFIG), timing=False)
    assert len(plan.units) == 7 and plan.total == 7
    assert all(unit.cells == () and unit.check for unit in plan.units)


def test_a_resumed_plan_leaves_out_what_was_written():
    config = validate_config(CONFIG)
    full = build_plan(config)
    done = FinishedWork()
    unit = full.units[0]
    key = (unit.entry.name, unit.backend.name, "{}", unit.backend.device, unit.precision)
    done.cells = {(*key, (c.height, c.width, c.batch), 0) for c in unit.cells[:3]}
    done.checks = {key}
    resumed = build_plan(config, done=done)
    assert resumed.units[0].cells == unit.cells[3:] and not resumed.units[0].check
    # What is left still serves the whole grid: an engine's profile is the inline run's.
    assert set(unit.cells) <= set(resumed.units[0].served)
    done.cells |= {(*key, (c.height, c.width, c.batch), 0) for c in unit.cells}
    assert build_plan(config, done=done).units[0].backend.name == "onnxruntime"  # nothing left: dropped


def test_dry_run_prints_the_plan_and_writes_nothing(tmp_path, capsys):
    path = tmp_path / "bench.yaml"
    path.write_text(yaml.safe_dump(CONFIG))
    out = tmp_path / "out"
    assert main(["run", str(path), "--out", str(out), "--dry-run"]) == 0
    printed = capsys.readouterr().out
    assert "unet · onnxruntime/cpu/fp16: pass 1: 4 cells" in printed and "numerics check" in printed
    assert "10 units, 40 cells" in printed
    assert not out.exists()
    assert main(["check", str(path), "--dry-run"]) == 0
    assert "7 units, 7 checks" in capsys.readouterr().out


def test_the_executor_comes_from_the_config(tmp_path, capsys):
    from segbench.bench.executors import executor_name
    from segbench.bench.executors.base import isolated

    # Isolation is the local executor's option; the names from before it was (inline, subprocess) still
    # read as the local executor without and with it.
    for extra, isolation in (({}, False), ({"isolation": {"subprocess": True}}, True),
                             ({"executor": "subprocess"}, True), ({"executor": "inline"}, False),
                             ({"executor": {"kind": "local"}}, False)):  # fmt: skip
        config = validate_config({**CONFIG, **extra})
        assert (executor_name(config), isolated(config)) == ("local", isolation), extra
    path = tmp_path / "bench.yaml"
    path.write_text(yaml.safe_dump({**CONFIG, "executor": "cluster"}))
    assert main(["run", str(path), "--out", str(tmp_path / "out"), "--dry-run"]) == 2
    err = capsys.readouterr().err.strip()
    valid = "local, ray"
    assert err == f"segbench: error: executor: unknown executor 'cluster'; valid executors: {valid}"


def test_the_gpu_benchmark_plans_on_a_cpu_machine_with_every_skip_named(capsys):
    root = Path(__file__).resolve().parents[2]
    assert main(["run", str(root / "examples" / "benchmark-gpu.yaml"), "--dry-run"]) == 0
    printed = " ".join(capsys.readouterr().out.split())  # the console wraps long lines
    assert "fcn8s · torch/cuda/fp32 [skipped here: no CUDA device visible to torch]" in printed
    assert "0 units, 0 cells (400 more cells skipped here)" in printed
    assert "with every backend available, at least 600 s" in printed
    # Each onnxruntime TensorRT-provider entry says which profile its engines get and what its fp32 is.
    rcnn = printed.split(
        "mask_rcnn · onnxruntime/cuda/fp32 [skipped here: this onnxruntime build has no Tens"
    )
    assert "TensorRT provider profile: an engine per shape, no explicit profile (the graph splits: " \
           "NonMaxSuppression, RoiAlign stay off TensorRT)" in rcnn[1].split(" · ")[0]  # fmt: skip
    assert "one explicit profile, b1 512x512 to b8 1024x1024" in printed
    assert "fp32 runs at TF32: the TensorRT provider has no TF32 switch" in printed
    assert "CUDA provider: TF32 off (use_tf32)" in printed


def test_the_tensorrt_providers_plan_notes_follow_the_graph_and_the_yaml(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    inputs = [helper.make_tensor_value_info("images", TensorProto.FLOAT, [None, 3, None, None])]
    outputs = [helper.make_tensor_value_info("out", TensorProto.INT64, None)]
    graph = helper.make_graph([helper.make_node("NonZero", ["images"], ["out"])], "g", inputs, outputs)
    path = tmp_path / "split.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    trt = {"name": "onnxruntime", "device": "cuda", "tensorrt": True, "precisions": ["fp32"]}
    own_profile = {**trt, "tensorrt_options": {"trt_profile_min_shapes": "images:1x3x32x32",
                                               "trt_profile_opt_shapes": "images:1x3x32x32",
                                               "trt_profile_max_shapes": "images:1x3x32x32"}}  # fmt: skip
    config = validate_config({
        "name": "notes",
        "models": [{"onnx": str(path), "name": "split"}, {"name": "unet"},
                   {"module": "torchvision.models.segmentation:lraspp_mobilenet_v3_large", "task": "semantic",
                    "num_classes": 21, "name": "mine"}],
        "backends": [trt, own_profile],
        "sweep": {"input_sizes": ["32x32"], "batch_sizes": [1, 2]},
        "numerics": {"enabled": False},
    })  # fmt: skip
    plan = build_plan(config)
    notes = {(u.entry.name, "tensorrt_options" in u.backend.model_fields_set): u.notes
             for u in (*plan.units, *plan.skipped_units)}  # fmt: skip
    assert notes["split", False][0].endswith("the graph splits: NonZero stay off TensorRT)")
    assert notes["unet", False][0] == "TensorRT provider profile: one explicit profile, b1 32x32 to b2 32x32"
    assert notes["mine", False][0].startswith("TensorRT provider profile: decided at export")
    assert notes["unet", True][0] == "TensorRT provider profile: the YAML's explicit profile"
    assert all("TF32" in n[1] for n in notes.values())


def test_the_estimate_counts_time_floors_and_measured_latencies():
    config = validate_config({**CONFIG, "timing": {"warmup": 2, "iterations": 10, "warmup_s": 0.5,
                                                   "min_duration_s": 1.0}})  # fmt: skip
    plan = build_plan(config)
    unit = plan.units[0]
    measured = {cell_key(unit, unit.cells[0]): 200.0, cell_key(unit, unit.cells[1]): 10.0}
    floor, estimate, count = estimate_seconds(plan.units, config, measured)
    cells = sum(len(u.cells) for u in plan.units if u.entry.timing is None)
    # fcn8s has its own timing entry (repeats only): its cells use the model's defaults, floors 0.
    assert floor == cells * 1.5 and count == 2
    # 200 ms: 2 x 0.2 s warm-up (0.5 s floor wins) + 10 x 0.2 s; 10 ms: both floors.
    assert estimate == floor - 1.5 + (0.5 + 2.0)


def test_measured_latencies_read_an_earlier_run():
    root = Path(__file__).resolve().parents[2]
    found = measured_latencies(root / "reports" / "cpu-default")
    key = ("unet", "torch", "{}", "cpu", "fp32", 256, 256, 1)
    assert key in found and found[key] > 0


def test_an_isolated_child_times_its_one_cell_and_serves_the_whole_grid():
    """The subprocess executor's child gets the unit's whole sweep and --only-cell: it times one cell, and
    its TensorRT profile covers every cell, as the inline run's does (issue 21: one engine per cell
    otherwise, tuned unlike the inline one)."""
    config = validate_config(CONFIG)
    full = build_plan(config).units[0]
    child = build_plan(config, only=Cell(64, 64, 2))
    assert {u.cells for u in child.units} == {(Cell(64, 64, 2),)}
    assert child.units[0].served == full.served
