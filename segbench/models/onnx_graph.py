"""An ONNX file as the model (``models: [{onnx: model.onnx, task: semantic|none}]``, ``segbench bench``).

There is no torch network: the graph backends (onnxruntime, TensorRT) run the file itself, and the
numerics baseline is onnxruntime fp32 on the CPU. Input and output names, the input's type and which
dimensions are dynamic come from the graph, never from a naming convention. ``task: none`` times the
graph on seeded random inputs of its input type and checks it at the tensor level only; ``task: semantic``
feeds normalised images and reads the first output as class scores.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from onnx import helper

from segbench.errors import ConfigError
from segbench.models.base import IMAGENET_MEAN, IMAGENET_STD, SegmentationModel

GRAPH_TASKS = ("semantic", "none")


def load_graph(path: Path) -> onnx.ModelProto:
    try:
        return onnx.load(str(path), load_external_data=False)
    except FileNotFoundError:
        raise ConfigError(f"ONNX file not found: {path}") from None
    except Exception as exc:  # protobuf's DecodeError and friends: not an ONNX graph
        raise ConfigError(f"cannot read {path} as ONNX: {type(exc).__name__}: {exc}") from None


def _dims(value: onnx.ValueInfoProto) -> list[int | None]:
    return [d.dim_value if d.HasField("dim_value") else None for d in value.type.tensor_type.shape.dim]


# ONNX float element types by the precision names segbench uses (fp64 weights count as fp32 here).
_FLOAT_TYPES = {
    onnx.TensorProto.FLOAT: "fp32",
    onnx.TensorProto.DOUBLE: "fp32",
    onnx.TensorProto.FLOAT16: "fp16",
    onnx.TensorProto.BFLOAT16: "bf16",
}


def graph_precision(graph: onnx.ModelProto) -> str:
    """The float precision a graph computes in: that of most of its float weight values (initializers
    and Constant tensors, counted by element), else, without float weights, its float inputs' type.

    The one rule for "is this an fp16 graph", wherever segbench asks. By element rather than "any weight":
    segbench's fp16 graphs keep a small fp32 keep-list (normalisations, reductions), and an fp32 graph
    may carry a stray fp16 constant; neither changes what the bulk of the graph computes in. Sizes come
    from the dims, so external data need not be loaded.
    """
    counts: dict[str, int] = {}
    tensors = list(graph.graph.initializer)
    for node in graph.graph.node:
        if node.op_type == "Constant":
            tensors += [a.t for a in node.attribute if a.type == onnx.AttributeProto.TENSOR]
    for tensor in tensors:
        name = _FLOAT_TYPES.get(tensor.data_type)
        if name is not None:
            counts[name] = counts.get(name, 0) + (int(np.prod(tensor.dims)) if tensor.dims else 1)
    if not counts:
        for value in graph.graph.input:
            name = _FLOAT_TYPES.get(value.type.tensor_type.elem_type)
            if name is not None:
                counts[name] = counts.get(name, 0) + 1
    # Ties go to fp32: a precision claim needs a majority.
    return max(("fp32", "fp16", "bf16"), key=lambda name: counts.get(name, 0))


class OnnxGraphModel(SegmentationModel):
    """What segbench needs of a model, read from an ONNX file; ``forward`` does not exist."""

    def __init__(
        self,
        path: str | Path,
        task: str = "none",
        num_classes: int = 1,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        channel_order: str = "rgb",
        seed: int = 0,
    ) -> None:
        super().__init__(num_classes, mean, std)
        if task not in GRAPH_TASKS:
            raise ConfigError(f"onnx: task must be one of {', '.join(GRAPH_TASKS)}, not {task!r}")
        self.path = Path(path)
        graph = load_graph(self.path)
        initializers = {init.name for init in graph.graph.initializer}
        inputs = [value for value in graph.graph.input if value.name not in initializers]
        if len(inputs) != 1:
            names = ", ".join(value.name for value in inputs) or "none"
            raise ConfigError(
                f"{self.path.name} has {len(inputs)} inputs ({names}): segbench feeds one image tensor "
                "[N, C, H, W]; benchmark such graphs with a plugin model"
            )
        dims = _dims(inputs[0])
        if len(dims) != 4:
            raise ConfigError(f"{self.path.name}: input {inputs[0].name} has rank {len(dims)}; segbench "
                              "feeds [N, C, H, W] images")  # fmt: skip
        element = inputs[0].type.tensor_type.elem_type
        self.input_dtype = np.dtype(helper.tensor_dtype_to_np_dtype(element))
        if task == "semantic" and (self.input_dtype.kind != "f" or dims[1] not in (3, None)):
            raise ConfigError(f"{self.path.name}: task semantic needs a float [N, 3, H, W] image input, the "
                              f"graph takes {self.input_dtype} {dims}")  # fmt: skip
        self.task = task
        self.input_names = (inputs[0].name,)
        self.output_names = tuple(value.name for value in graph.graph.output)
        self.channels = dims[1] or 3
        self.static_batch = dims[0]
        self.static_size = (dims[2], dims[3]) if dims[2] and dims[3] else None
        self.dynamic_spatial = self.static_size is None
        self.precision = graph_precision(graph)
        self.bgr = channel_order == "bgr"
        self.params = sum(int(np.prod(init.dims)) if init.dims else 1 for init in graph.graph.initializer)
        self.options = {"onnx": str(self.path), "task": task}
        self.weights = str(self.path)
        self._seed = seed

    def forward(self, images: torch.Tensor) -> Any:
        raise RuntimeError("an onnx: model has no torch forward: it runs on the graph backends only")

    def preprocess(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """Semantic: normalised images. ``none``: seeded random values of the graph's input type and
        shape (the image content means nothing to an unknown graph, only its size does)."""
        if self.task == "semantic":
            if self.bgr:
                images = images[..., ::-1]
            feeds = super().preprocess(images)
            return {self.input_names[0]: feeds[self.input_names[0]].astype(self.input_dtype)}
        batch, height, width = images.shape[:3]
        rng = np.random.default_rng([self._seed, batch, height, width])
        shape = (batch, self.channels, height, width)
        if self.input_dtype.kind == "f":
            values = rng.standard_normal(shape).astype(self.input_dtype)
        elif self.input_dtype.kind == "b":
            values = rng.integers(0, 2, shape).astype(bool)
        else:
            values = rng.integers(0, 256, shape).astype(self.input_dtype)
        return {self.input_names[0]: values}

    def postprocess(self, outputs: Mapping[str, np.ndarray], image_size: tuple[int, int]) -> Any:
        if self.task == "semantic":
            return np.argmax(outputs[self.output_names[0]], axis=1)
        return dict(outputs)
