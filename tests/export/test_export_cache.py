"""The content-addressed export cache: keys, reuse, rebuilds and atomic writes."""

import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace

import onnx
import pytest

from segbench.cache_dir import cache_key
from segbench.export import artifacts
from segbench.export.artifacts import ExportRequest, cached_export, copy_graph, export_key
from segbench.export.cache import META_FILE, atomic_directory, state_dict_digest
from segbench.export.onnx import ExportError, check_parity, save_onnx
from segbench.files import atomic_write_bytes
from segbench.models import build_model

# These tests are about exporting and caching: each starts from an empty export cache.
pytestmark = pytest.mark.fresh_export_cache

UNET = {"base_channels": 4, "num_classes": 3}


@pytest.fixture(scope="module")
def unet():
    return build_model("unet", options=UNET)


def test_cache_key_is_stable_and_order_free():
    assert cache_key({"a": 1, "b": [1, 2]}) == cache_key({"b": (1, 2), "a": 1})
    assert cache_key({"a": 1}) != cache_key({"a": 2})


def test_every_key_field_changes_the_key(unet):
    base = export_key(unet, "unet", ExportRequest(exporter="dynamo"))
    variants = [
        export_key(unet, "unet", ExportRequest(exporter="dynamo", opset=17)),
        export_key(unet, "unet", ExportRequest(exporter="torchscript")),
        export_key(unet, "unet", ExportRequest(exporter="dynamo", static_size=(64, 64))),
        export_key(unet, "unet", ExportRequest(exporter="dynamo", static_batch=1)),
        export_key(unet, "unet", ExportRequest(exporter="dynamo", simplify=True)),
        export_key(unet, "unet", ExportRequest(exporter="dynamo", precision="fp16")),
        export_key(build_model("unet", options=UNET, seed=1), "unet", ExportRequest(exporter="dynamo")),
        export_key(
            build_model("unet", options={**UNET, "num_classes": 4}), "unet", ExportRequest(exporter="dynamo")
        ),
        {**base, "versions": {**base["versions"], "torch": "0.0"}},
        {**base, "model": "unet2"},
    ]
    keys = {cache_key(fields) for fields in variants}
    assert cache_key(base) not in keys and len(keys) == len(variants)
    # The same model rebuilt from the same seed has the same weights digest, hence the same key.
    assert cache_key(
        export_key(build_model("unet", options=UNET), "unet", ExportRequest(exporter="dynamo"))
    ) == (cache_key(base))


def test_weights_digest_sees_one_changed_value(unet):
    state = {k: v.clone() for k, v in unet.state_dict().items()}
    before = state_dict_digest(state)
    name = next(k for k, v in state.items() if v.is_floating_point())
    state[name].view(-1)[0] += 1e-3
    assert state_dict_digest(state) != before


@pytest.mark.slow
def test_second_export_reuses_the_cached_graph(unet, tmp_path):
    first = cached_export(unet, "unet", ExportRequest(exporter="torchscript"), tmp_path)
    assert not first.cached and first.path.is_file() and first.cache_key in str(first.path)
    mtime = first.path.stat().st_mtime_ns
    second = cached_export(unet, "unet", ExportRequest(exporter="torchscript"), tmp_path)
    assert second.cached and second.path == first.path and second.path.stat().st_mtime_ns == mtime
    assert second.parity == first.parity
    changed = cached_export(unet, "unet", ExportRequest(exporter="torchscript", opset=17), tmp_path)
    assert not changed.cached and changed.path != first.path
    assert onnx.load(str(changed.path)).opset_import[0].version == 17


@pytest.mark.slow
def test_an_incomplete_entry_is_not_trusted(unet, tmp_path):
    first = cached_export(unet, "unet", ExportRequest(exporter="torchscript"), tmp_path)
    (first.path.parent / META_FILE).unlink()  # as if the export died before its metadata was written
    again = cached_export(unet, "unet", ExportRequest(exporter="torchscript"), tmp_path)
    assert not again.cached and (again.path.parent / META_FILE).is_file()


def test_a_killed_export_leaves_nothing_behind(unet, tmp_path, monkeypatch):
    def dies_half_way(model, path, *args, **kwargs):
        path.write_bytes(b"half a graph")
        raise KeyboardInterrupt  # what a kill looks like from inside the process

    monkeypatch.setattr(artifacts, "export_and_verify", dies_half_way)
    with pytest.raises(KeyboardInterrupt):
        cached_export(unet, "unet", ExportRequest(exporter="torchscript"), tmp_path)
    leftovers = list((tmp_path / "onnx").rglob("*"))
    assert leftovers == []
    monkeypatch.undo()
    assert not cached_export(unet, "unet", ExportRequest(exporter="torchscript"), tmp_path).cached


def test_atomic_write_keeps_the_old_file_when_the_write_fails(tmp_path, monkeypatch):
    target = atomic_write_bytes(tmp_path / "engine.bin", b"old")

    def fail(*args):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_bytes(target, b"new")
    monkeypatch.undo()
    assert target.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["engine.bin"]


def test_atomic_directory_appears_only_when_complete(tmp_path):
    with pytest.raises(RuntimeError), atomic_directory(tmp_path / "entry") as tmp:
        (tmp / "model.onnx").write_bytes(b"x")
        raise RuntimeError("failed check")
    assert list(tmp_path.iterdir()) == []
    with atomic_directory(tmp_path / "entry") as tmp:
        (tmp / META_FILE).write_text("{}")
    assert [p.name for p in tmp_path.iterdir()] == ["entry"]


def test_per_size_model_needs_a_static_size(tmp_path):
    model = build_model(
        "mask2former",
        options={"num_classes": 6, "backbone": "resnet-tiny", "num_queries": 6, "hidden_dim": 32,
                 "encoder_layers": 1, "decoder_layers": 2},
    )  # fmt: skip
    with pytest.raises(ExportError, match="per input size: give a static size"):
        cached_export(model, "mask2former", ExportRequest(), tmp_path)
    with pytest.raises(ExportError, match="no bf16 ONNX graphs"):
        cached_export(model, "mask2former", ExportRequest(static_size=(64, 64), precision="bf16"), tmp_path)


@pytest.mark.slow
def test_external_data_graph_round_trips(unet, tmp_path):
    export = cached_export(unet, "unet", ExportRequest(exporter="torchscript"), tmp_path / "cache")
    graph = onnx.load(str(export.path))
    path = save_onnx(graph, tmp_path / "big" / "unet.onnx", external_data=True)
    data = path.with_name("unet.onnx.data")
    assert data.is_file() and path.stat().st_size < data.stat().st_size
    assert all(check.passed for check in check_parity(unet, path, [(2, 64, 48)]))
    # Copying renames the data file with the graph, since the graph names it.
    cached = artifacts.OnnxExport(path, 18, "torchscript", 0.0, [])
    copied = copy_graph(cached, tmp_path / "out" / "renamed.onnx")
    assert copied.with_name("renamed.onnx.data").is_file()
    assert all(check.passed for check in check_parity(unet, copied, [(1, 32, 32)]))


def test_static_batch_export(unet, tmp_path):
    export = cached_export(unet, "unet", ExportRequest(exporter="torchscript", static_batch=1), tmp_path)
    dims = onnx.load(str(export.path)).graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_value == 1 and dims[2].dim_param == "height"
    assert export.parity and all(report.shape[0] == 1 for report in export.parity)


@pytest.mark.slow
def test_simplified_export_keeps_parity(shared_graph):
    options = {"width": 0.0625, "num_classes": 5}  # tests/export/test_onnx_export.py's: a shared graph
    plain, slim = shared_graph("fcn8s", options), shared_graph("fcn8s", options, simplify=True)
    assert slim.simplified and slim.path != plain.path
    assert all(report.passed for report in slim.parity)
    count = len(onnx.load(str(slim.path)).graph.node)
    assert count <= len(onnx.load(str(plain.path)).graph.node)


@contextmanager
def umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize(("mask", "file_mode", "dir_mode"), [(0o022, 0o644, 0o755), (0o027, 0o640, 0o750)])
def test_atomic_writes_get_the_permissions_the_umask_gives(tmp_path, mask, file_mode, dir_mode):
    # Not tempfile's private 0600 / 0700, which a rename would keep; not a fixed 0644 either.
    with umask(mask):
        written = atomic_write_bytes(tmp_path / "engine.bin", b"x")
        with atomic_directory(tmp_path / "entry") as tmp:
            (tmp / META_FILE).write_text("{}")
        plain = tmp_path / "plain"
        plain.write_bytes(b"x")
    assert mode(written) == mode(plain) == file_mode
    assert mode(tmp_path / "entry") == dir_mode


def test_exported_graphs_and_their_data_get_normal_permissions(unet, tmp_path):
    with umask(0o022):
        export = cached_export(unet, "unet", ExportRequest(exporter="torchscript"), tmp_path / "cache")
        copied = copy_graph(export, tmp_path / "out" / "unet.onnx")
        big = save_onnx(onnx.load(str(export.path)), tmp_path / "big" / "unet.onnx", external_data=True)
        big_copy = copy_graph(replace(export, path=big), tmp_path / "out" / "big.onnx")
    files = [export.path, export.path.parent / META_FILE, copied, big, big_copy]
    files += [path.with_name(f"{path.name}.data") for path in (big, big_copy)]
    assert {str(path): mode(path) for path in files} == {str(path): 0o644 for path in files}
    assert mode(export.path.parent) == 0o755
