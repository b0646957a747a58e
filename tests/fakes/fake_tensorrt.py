"""A stand-in for what segbench's TensorRT runtime needs of ``tensorrt`` at run time, on the CPU.

Engines come from the build seam's fake (``fake_tensorrt_build.py``) as JSON: :class:`FakeNetwork` says
what the "parsed graph" is. The default has one input ``images`` of shape (-1, 3, -1, -1) and the output
``logits`` = 2 * images; with ``data_dependent=True`` also ``num_detections`` (N,) int32 and ``boxes``
(K, 4) float32 whose K depends on the data: one row ``[n, v, v, v]`` per image n whose first pixel v is
positive. Execution reads and writes the memory behind the tensor addresses with ctypes, so it works with
CPU torch tensors only. Every call is appended to ``trt.calls`` as ``(method, *args)``.

Mirrored from NVIDIA's API reference: engines load only in the TensorRT version that built them,
``ICudaEngine.device_memory_size`` is gone in 11 (``device_memory_size_v2`` remains), shapes come back as
``Dims`` (not tuples), and an ``IOutputAllocator`` subclass must initialise its base. That the names exist
is checked against ``tensorrt-stubs`` (``tests/export/test_tensorrt_stubs.py``).
"""

from __future__ import annotations

import ctypes
import enum
import json
import math
import sys
import types
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

ENGINE_MAGIC = "segbench-fake-tensorrt-engine"
ALIGNMENT = 256
NUMPY_TYPES = {"FLOAT": np.float32, "HALF": np.float16, "INT32": np.int32, "INT64": np.int64}


@dataclass
class FakeNetwork:
    """What a fake build finds in any graph; :meth:`engine_bytes` serializes an engine of it."""

    input_name: str = "images"
    input_shape: tuple[int, ...] = (-1, 3, -1, -1)
    input_dtype: str = "FLOAT"
    data_dependent: bool = False
    device_memory: int = 3 << 20

    def engine_bytes(self, version: str, profile: Any, **built: Any) -> bytes:
        """The engine for TensorRT ``version``: a dynamic input gets ``profile``'s min / opt / max, a
        static one its own shape; ``built`` (precision, flags...) is kept for tests to read."""
        dynamic = any(d < 0 for d in self.input_shape)
        shapes = [list(getattr(profile, w)) for w in ("min", "opt", "max")] if dynamic else [
            list(self.input_shape)] * 3  # fmt: skip
        outputs = [["logits", list(self.input_shape), self.input_dtype]]
        if self.data_dependent:
            outputs += [["num_detections", [-1], "INT32"], ["boxes", [-1, 4], "FLOAT"]]
        spec = {
            "magic": ENGINE_MAGIC,
            "version": version,
            "inputs": [[self.input_name, list(self.input_shape), self.input_dtype]],
            "outputs": outputs,
            "profile": {self.input_name: shapes},
            "device_memory": self.device_memory,
            "built": built,
        }
        return json.dumps(spec).encode()


class Dims:
    """Like ``trt.Dims``: iterable and indexable, but not a tuple (code must convert it)."""

    def __init__(self, dims: Sequence[int]) -> None:
        self._dims = tuple(int(d) for d in dims)

    def __iter__(self):
        return iter(self._dims)

    def __len__(self) -> int:
        return len(self._dims)

    def __getitem__(self, index: int) -> int:
        return self._dims[index]


def _check_logger(logger: Any) -> None:
    if not callable(getattr(logger, "log", None)):
        raise TypeError(f"expected a tensorrt.ILogger, got {type(logger).__name__}")


def make_fake_tensorrt(version: str = "10.8.0") -> types.ModuleType:
    """A fresh fake ``tensorrt`` runtime for ``version`` (majors 10 and 11 differ as documented)."""
    major = int(version.split(".")[0])
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version
    trt.calls = []

    def record(name: str, *args: Any) -> None:
        trt.calls.append((name, *args))

    trt.TensorIOMode = enum.Enum("TensorIOMode", {"NONE": 0, "INPUT": 1, "OUTPUT": 2})
    names = ("FLOAT", "HALF", "INT8", "INT32", "BOOL", "UINT8", "FP8", "BF16", "INT64")
    trt.DataType = enum.Enum("DataType", {name: i for i, name in enumerate(names)})
    trt.MemoryPoolType = enum.IntEnum("MemoryPoolType", {"WORKSPACE": 0, "DLA_MANAGED_SRAM": 1})
    trt.Dims = Dims

    class Logger:
        def log(self, severity: Any, msg: str) -> None:
            pass

    trt.Logger = Logger
    trt.init_libnvinfer_plugins = lambda logger, namespace: _check_logger(logger) or True

    class IOutputAllocator:
        def __init__(self) -> None:
            self._fake_base_initialised = True

    trt.IOutputAllocator = IOutputAllocator

    class ICudaEngine:
        def __init__(self, spec: dict[str, Any]) -> None:
            self.spec = spec
            io = [(n, tuple(s), d, trt.TensorIOMode.INPUT) for n, s, d in spec["inputs"]]
            io += [(n, tuple(s), d, trt.TensorIOMode.OUTPUT) for n, s, d in spec["outputs"]]
            self._names = [n for n, *_ in io]
            self.io = {n: (s, d, m) for n, s, d, m in io}

        num_io_tensors = property(lambda self: len(self._names))
        device_memory_size_v2 = property(lambda self: self.spec["device_memory"])

        def get_tensor_name(self, index: int) -> str:
            return self._names[index]

        def get_tensor_mode(self, name: str) -> Any:
            return self.io[name][2]

        def get_tensor_shape(self, name: str) -> Dims:
            return Dims(self.io[name][0])

        def get_tensor_dtype(self, name: str) -> Any:
            return getattr(trt.DataType, self.io[name][1])

        def get_tensor_profile_shape(self, name: str, profile_index: int) -> list[Dims]:
            return [Dims(s) for s in self.spec["profile"][name]]

        def create_execution_context(self) -> IExecutionContext:
            return IExecutionContext(self)

    if major < 11:
        ICudaEngine.device_memory_size = property(lambda self: self.spec["device_memory"])

    class IExecutionContext:
        def __init__(self, engine: ICudaEngine) -> None:
            self.engine, self.input = engine, engine.spec["inputs"][0][0]
            self.input_shapes: dict[str, tuple[int, ...]] = {}
            self.addresses: dict[str, int] = {}
            self.allocators: dict[str, Any] = {}

        def _is(self, name: str, mode: Any) -> bool:
            return name in self.engine.io and self.engine.io[name][2] == mode

        def set_input_shape(self, name: str, shape: Any) -> bool:
            if not self._is(name, trt.TensorIOMode.INPUT) or not all(type(d) is int for d in shape):
                raise TypeError(f"set_input_shape({name!r}, {shape!r}): an input name and Python ints")
            dims = tuple(shape)
            record("set_input_shape", name, dims)
            declared = self.engine.io[name][0]
            lo, _, hi = self.engine.spec["profile"][name]
            fits = len(dims) == len(declared) and all(
                (d < 0 or d == s) and a <= s <= b for d, s, a, b in zip(declared, dims, lo, hi, strict=True)
            )
            if fits:
                self.input_shapes[name] = dims
            return fits

        def set_tensor_address(self, name: str, memory: int) -> bool:
            if name not in self.engine.io or type(memory) is not int or memory == 0:
                raise TypeError(f"set_tensor_address({name!r}, {memory!r}): an I/O name and a non-null int")
            record("set_tensor_address", name, memory)
            self.addresses[name] = memory
            return True

        def _output_shape(self, name: str) -> tuple[int, ...]:
            images, declared = self.input_shapes.get(self.input), self.engine.io[name][0]
            if images is None or name == "boxes":  # boxes: known only once the data is
                return declared
            return images if name == "logits" else (images[0],)

        def get_tensor_shape(self, name: str) -> Dims:
            if self._is(name, trt.TensorIOMode.INPUT):
                return Dims(self.input_shapes.get(name, self.engine.io[name][0]))
            return Dims(self._output_shape(name))

        def set_output_allocator(self, name: str, output_allocator: Any) -> bool:
            if not getattr(output_allocator, "_fake_base_initialised", False):
                raise TypeError("IOutputAllocator subclasses must call IOutputAllocator.__init__(self)")
            record("set_output_allocator", name)
            self.allocators[name] = output_allocator
            return True

        def execute_async_v3(self, stream_handle: int) -> bool:
            if type(stream_handle) is not int:
                raise TypeError(f"execute_async_v3 takes the stream handle as an int, got {stream_handle!r}")
            record("execute_async_v3", stream_handle)
            needs_address = [self.input] + [
                n for n, (_, _, m) in self.engine.io.items() if m == trt.TensorIOMode.OUTPUT
                and n not in self.allocators]  # fmt: skip
            if self.input not in self.input_shapes or any(n not in self.addresses for n in needs_address):
                raise RuntimeError("every input needs a shape, and every I/O tensor an address or allocator")
            shape, dtype = self.input_shapes[self.input], np.dtype(NUMPY_TYPES[self.engine.io[self.input][1]])
            raw = (ctypes.c_char * (math.prod(shape) * dtype.itemsize)).from_address(
                self.addresses[self.input]
            )
            images = np.frombuffer(raw, dtype=dtype).reshape(shape).copy()
            first = images.reshape(images.shape[0], -1)[:, 0].astype(np.float32)
            results = {"logits": images * 2}
            if "boxes" in self.engine.io:
                results["num_detections"] = (first > 0).astype(np.int32)
                rows = [[float(n), v, v, v] for n, v in enumerate(first.tolist()) if v > 0]
                results["boxes"] = np.asarray(rows, dtype=np.float32).reshape(-1, 4)
            for name, value in results.items():
                value = np.ascontiguousarray(value)
                if name in self.allocators:  # data-dependent: the allocator gives the memory, then the shape
                    allocator = self.allocators[name]
                    pointer = allocator.reallocate_output_async(
                        name, 0, value.nbytes, ALIGNMENT, stream_handle
                    )
                    if type(pointer) is not int or pointer == 0 or pointer % ALIGNMENT:
                        raise RuntimeError(
                            f"reallocate_output_async returned an unusable pointer {pointer!r}"
                        )
                    self.addresses[name] = pointer
                    allocator.notify_shape(name, Dims(value.shape))
                ctypes.memmove(self.addresses[name], value.ctypes.data, value.nbytes)
            return True

    class Runtime:
        def __init__(self, logger: Any) -> None:
            _check_logger(logger)

        def deserialize_cuda_engine(self, serialized_engine: bytes) -> ICudaEngine | None:
            record("deserialize_cuda_engine")
            try:
                spec = json.loads(bytes(serialized_engine))
            except ValueError:
                return None
            if not isinstance(spec, dict) or spec.get("magic") != ENGINE_MAGIC or spec["version"] != version:
                return None  # like TensorRT: engines only load in the version that built them
            return ICudaEngine(spec)

    trt.Runtime = Runtime
    return trt


def calls_named(trt: types.ModuleType, name: str) -> list[tuple]:
    """The recorded calls of one method, in order, without the method name."""
    return [call[1:] for call in trt.calls if call[0] == name]


def install_fake_tensorrt(monkeypatch: Any, version: str = "10.8.0") -> types.ModuleType:
    """A fresh fake as ``sys.modules["tensorrt"]`` for one test (what ``import_tensorrt`` finds)."""
    trt = make_fake_tensorrt(version)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    return trt
