"""``segbench bench MODEL.onnx``: one ONNX file over a sweep on the graph backends, as trtexec's
``--onnx`` does, through the same pipeline, records and reports as a YAML run."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from segbench.errors import ConfigError
from segbench.models.onnx_graph import OnnxGraphModel

# The --backends spellings: a graph backend entry each.
BACKEND_ENTRIES: dict[str, dict[str, Any]] = {
    "onnxruntime": {"name": "onnxruntime"},
    "onnxruntime:cuda": {"name": "onnxruntime", "device": "cuda"},
    "onnxruntime:tensorrt": {"name": "onnxruntime", "device": "cuda", "tensorrt": True},
    "tensorrt": {"name": "tensorrt"},
}


def bench_config(
    path: Path,
    sizes: Sequence[tuple[int, int]] | None = None,
    batch_sizes: Sequence[int] | None = None,
    backends: Sequence[str] = ("onnxruntime",),
    precisions: Sequence[str] = ("fp32",),
    task: str = "none",
    num_classes: int | None = None,
    images: int = 8,
) -> dict[str, Any]:
    """The YAML a ``segbench bench`` call stands for. Sizes and batches default to the graph's static
    ones, else 256x256 and 512x512 at batch 1 and 4. Numerics compare every backend with onnxruntime
    fp32 on the CPU (tensor level; task level too with ``task: semantic``)."""
    graph = OnnxGraphModel(path, task, num_classes or 1)
    unknown = [name for name in backends if name not in BACKEND_ENTRIES]
    if unknown:
        raise ConfigError(f"--backends: unknown {', '.join(unknown)}; valid: {', '.join(BACKEND_ENTRIES)}")
    if graph.static_size and sizes and any(tuple(size) != graph.static_size for size in sizes):
        height, width = graph.static_size
        raise ConfigError(f"--sizes: {path.name} takes {height}x{width} only (its input is static)")
    if graph.static_batch and batch_sizes and any(batch != graph.static_batch for batch in batch_sizes):
        raise ConfigError(f"--batch-sizes: {path.name} takes batch {graph.static_batch} only")
    sizes = list(sizes or ([graph.static_size] if graph.static_size else [(256, 256), (512, 512)]))
    batch_sizes = list(batch_sizes or ([graph.static_batch] if graph.static_batch else [1, 4]))
    model: dict[str, Any] = {"onnx": str(path), "task": task}
    if num_classes is not None:
        model["num_classes"] = num_classes
    entries = [{**BACKEND_ENTRIES[name], "precisions": list(precisions)} for name in backends]
    height, width = sizes[0]
    # The baseline is onnxruntime fp32 on the CPU: with nothing else to compare, there is no check.
    compared = any(entry != {"name": "onnxruntime", "precisions": ["fp32"]} for entry in entries)
    return {
        "name": f"bench-{path.stem}",
        "models": [model],
        "backends": entries,
        "sweep": {"input_sizes": [[h, w] for h, w in sizes], "batch_sizes": batch_sizes},
        "numerics": {
            "enabled": compared,
            "batch_size": min(batch_sizes),
            "dataset": {"kind": "shapes", "num_images": images, "height": max(height, 32),
                        "width": max(width, 32)},
            "max_images": images,
        },
    }  # fmt: skip
