"""A stand-in for NVIDIA's ``tensorrt`` module, for tests on machines without TensorRT or a GPU.

It implements the part of the documented TensorRT 10 / 11 Python API that Polygraphy's loaders
(``NetworkFromOnnxPath``, ``CreateConfig``, ``EngineBytesFromNetwork``, ``EngineFromBytes``) and segbench's
runtime (``TensorRTEngine``) call, checking arguments the way the real bindings constrain them and raising
``TypeError`` / ``ValueError`` on misuse. Every call is appended to ``trt.calls`` as ``(method, *args)``.
That the names exist in the real API is checked separately, against ``tensorrt-stubs``.

Major-version differences mirrored from NVIDIA's API reference:

* 11: ``BuilderFlag`` has no ``FP16`` / ``BF16``, every network is strongly typed, and
  ``ICudaEngine.device_memory_size`` is gone (``device_memory_size_v2`` remains).
* 10: ``FP16`` / ``BF16`` exist; setting them on a strongly typed network makes the build fail.
* Both: a new builder config has ``TF32`` set (TensorRT's default).

The "network" parsed from any existing file has one input ``images`` of shape (-1, 3, -1, -1) (see
:class:`FakeControls`) and the output ``logits`` = 2 * images. With ``data_dependent=True`` it also has
``num_detections`` (N,) int32 and ``boxes`` (K, 4) float32 whose K depends on the data: one row
``[n, v, v, v]`` for each image n whose first pixel v = images[n, 0, 0, 0] is positive. Engines are
serialized as JSON; execution reads and writes the host memory behind the tensor addresses with ctypes,
so it works with CPU torch tensors only.
"""

from __future__ import annotations

import ctypes
import enum
import json
import math
import os
import types
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

ENGINE_MAGIC = "segbench-fake-tensorrt-engine"
TIMING_HEADER = b"FAKE-TIMING-CACHE\n"
ALIGNMENT = 256
NUMPY_TYPES = {"FLOAT": np.float32, "HALF": np.float16, "INT32": np.int32, "INT64": np.int64}


@dataclass
class FakeControls:
    """Knobs a test turns to make the fake behave one way or another."""

    input_name: str = "images"
    input_shape: tuple[int, ...] = (-1, 3, -1, -1)
    input_dtype: str = "FLOAT"
    # A second input, e.g. ("scale", (-1,)), to test that every dynamic input must be covered.
    extra_input: tuple[str, tuple[int, ...]] | None = None
    data_dependent: bool = False
    parse_errors: list[str] = field(default_factory=list)
    build_fails: bool = False
    device_memory: int = 3 << 20


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

    def __repr__(self) -> str:
        return f"Dims{self._dims}"


def _int_shape(value: Any, what: str) -> tuple[int, ...]:
    if not isinstance(value, (tuple, list, Dims)):
        raise TypeError(f"{what} must be a tuple, list or Dims, got {type(value).__name__}")
    dims = tuple(value)
    if not all(type(d) is int for d in dims):
        raise TypeError(f"{what} must hold Python ints, got {dims!r}")
    return dims


def _bytes_like(value: Any, what: str) -> bytes:
    if not isinstance(value, (bytes, bytearray, memoryview)):
        raise TypeError(f"{what} must be a buffer (bytes), got {type(value).__name__}")
    return bytes(value)


def _check_logger(logger: Any) -> None:
    # Polygraphy keeps one logger per process, made from whichever tensorrt module it met first.
    if not callable(getattr(logger, "log", None)):
        raise TypeError(f"expected a tensorrt.ILogger, got {type(logger).__name__}")


def make_fake_tensorrt(version: str = "10.8.0", controls: FakeControls | None = None) -> types.ModuleType:
    """A fresh fake ``tensorrt`` module for ``version`` (major 10 and 11 differ as documented)."""
    major = int(version.split(".")[0])
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version
    trt.calls = []
    trt.fake = controls if controls is not None else FakeControls()

    def record(name: str, *args: Any) -> None:
        trt.calls.append((name, *args))

    # -- enums and logging -------------------------------------------------------------------------
    builder_flags = {"DEBUG": 2, "GPU_FALLBACK": 3, "REFIT": 4, "TF32": 6}
    if major < 11:
        builder_flags.update(FP16=0, INT8=1, BF16=17)
    trt.NetworkDefinitionCreationFlag = enum.IntEnum("NetworkDefinitionCreationFlag", {"STRONGLY_TYPED": 1})
    trt.BuilderFlag = enum.IntEnum("BuilderFlag", builder_flags)
    trt.MemoryPoolType = enum.IntEnum("MemoryPoolType", {"WORKSPACE": 0, "DLA_MANAGED_SRAM": 1})
    trt.DeviceType = enum.IntEnum("DeviceType", {"GPU": 0, "DLA": 1})
    trt.TensorIOMode = enum.Enum("TensorIOMode", {"NONE": 0, "INPUT": 1, "OUTPUT": 2})
    names = ("FLOAT", "HALF", "INT8", "INT32", "BOOL", "UINT8", "FP8", "BF16", "INT64")
    trt.DataType = enum.Enum("DataType", {name: i for i, name in enumerate(names)})
    trt.Dims = Dims
    severity = enum.Enum("Severity", ["INTERNAL_ERROR", "ERROR", "WARNING", "INFO", "VERBOSE"])

    class ILogger:
        Severity = severity

        def log(self, severity: Any, msg: str) -> None:
            raise NotImplementedError

    class Logger(ILogger):
        INTERNAL_ERROR, ERROR, WARNING, INFO, VERBOSE = severity

    trt.ILogger, trt.Logger = ILogger, Logger

    def init_libnvinfer_plugins(logger: Any, namespace: str) -> bool:
        _check_logger(logger)
        return True

    trt.init_libnvinfer_plugins = init_libnvinfer_plugins

    # -- network and parser ------------------------------------------------------------------------
    class ITensor:
        is_shape_tensor = False

        def __init__(self, name: str, shape: Sequence[int], dtype: Any) -> None:
            self.name, self.shape, self.dtype = name, Dims(shape), dtype

    class INetworkDefinition:
        def __init__(self, flags: int) -> None:
            strongly = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
            self.strongly_typed = major >= 11 or bool(flags & strongly)
            self._inputs: list[ITensor] = []
            self._outputs: list[ITensor] = []

        num_inputs = property(lambda self: len(self._inputs))
        num_outputs = property(lambda self: len(self._outputs))

        def get_input(self, index: int) -> ITensor:
            return self._inputs[index]

        def get_flag(self, flag: Any) -> bool:
            return flag == trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED and self.strongly_typed

        def __iter__(self):  # the layers; the fake network has none a caller needs to see
            return iter(())

    class OnnxParser:
        def __init__(self, network: INetworkDefinition, logger: Any) -> None:
            if not isinstance(network, INetworkDefinition):
                raise TypeError("OnnxParser(network, logger) needs an INetworkDefinition")
            _check_logger(logger)
            self.network = network
            self._errors: list[str] = []

        num_errors = property(lambda self: len(self._errors))

        def get_error(self, index: int) -> str:
            return f"In node 0 (fake): UNSUPPORTED_NODE: {self._errors[index]}"

        def parse_from_file(self, model: str) -> bool:
            if type(model) is not str:
                raise TypeError(f"parse_from_file(model) takes a str path, got {type(model).__name__}")
            record("parse_from_file", model)
            if not os.path.isfile(model):
                self._errors.append(f"Failed to open file: {model}")
                return False
            if trt.fake.parse_errors:
                self._errors.extend(trt.fake.parse_errors)
                return False
            controls, net = trt.fake, self.network
            dtype = getattr(trt.DataType, controls.input_dtype)
            net._inputs.append(ITensor(controls.input_name, controls.input_shape, dtype))
            if controls.extra_input is not None:
                net._inputs.append(ITensor(*controls.extra_input, trt.DataType.FLOAT))
            net._outputs.append(ITensor("logits", controls.input_shape, dtype))
            if controls.data_dependent:
                net._outputs.append(ITensor("num_detections", (-1,), trt.DataType.INT32))
                net._outputs.append(ITensor("boxes", (-1, 4), trt.DataType.FLOAT))
            return True

    trt.OnnxParser = OnnxParser

    # -- builder -----------------------------------------------------------------------------------
    class IOptimizationProfile:
        def __init__(self) -> None:
            self.shapes: dict[str, tuple[tuple[int, ...], ...]] = {}

        def set_shape(self, input: str, min: Any, opt: Any, max: Any) -> None:
            if type(input) is not str:
                raise TypeError("set_shape(input, ...) takes the input tensor's name")
            shapes = tuple(_int_shape(s, "set_shape") for s in (min, opt, max))
            lo, mid, hi = shapes
            if len({len(s) for s in shapes}) != 1 or not all(
                0 <= a <= b <= c for a, b, c in zip(lo, mid, hi, strict=True)
            ):
                raise ValueError(f"set_shape needs equal ranks and 0 <= min <= opt <= max, got {shapes}")
            record("set_shape", input, *shapes)
            self.shapes[input] = shapes

        def __bool__(self) -> bool:  # like the bindings: whether the profile is valid
            return bool(self.shapes)

    class ITimingCache:
        def __init__(self, data: bytes) -> None:
            self.entries = [] if not data else data[len(TIMING_HEADER) :].decode().splitlines()

        def serialize(self) -> memoryview:
            return memoryview(TIMING_HEADER + "".join(f"{e}\n" for e in self.entries).encode())

        def combine(self, input_cache: ITimingCache, ignore_mismatch: bool) -> bool:
            self.entries += [e for e in input_cache.entries if e not in self.entries]
            return True

    class IBuilderConfig:
        DLA_core = -1

        def __init__(self) -> None:
            self.flags: set[Any] = {trt.BuilderFlag.TF32}  # TensorRT's default
            self.pool_limits: dict[Any, int] = {}
            self.profiles: list[IOptimizationProfile] = []
            self.timing_cache: ITimingCache | None = None
            self.default_device_type = trt.DeviceType.GPU
            self._level = 3

        def set_flag(self, flag: Any) -> None:
            if not isinstance(flag, trt.BuilderFlag):
                raise TypeError(f"set_flag takes a BuilderFlag, got {flag!r}")
            record("set_flag", flag)
            self.flags.add(flag)

        def clear_flag(self, flag: Any) -> None:
            if not isinstance(flag, trt.BuilderFlag):
                raise TypeError(f"clear_flag takes a BuilderFlag, got {flag!r}")
            record("clear_flag", flag)
            self.flags.discard(flag)

        def get_flag(self, flag: Any) -> bool:
            return flag in self.flags

        def set_memory_pool_limit(self, pool: Any, pool_size: int) -> None:
            if not isinstance(pool, trt.MemoryPoolType) or type(pool_size) is not int or pool_size <= 0:
                raise TypeError(
                    f"set_memory_pool_limit(MemoryPoolType, positive int), got {pool!r}, {pool_size!r}"
                )
            record("set_memory_pool_limit", pool, pool_size)
            self.pool_limits[pool] = pool_size

        @property
        def builder_optimization_level(self) -> int:
            return self._level

        @builder_optimization_level.setter
        def builder_optimization_level(self, level: int) -> None:
            if type(level) is not int or not 0 <= level <= 5:
                raise ValueError(f"builder_optimization_level must be an int in 0..5, got {level!r}")
            record("builder_optimization_level", level)
            self._level = level

        num_optimization_profiles = property(lambda self: len(self.profiles))

        def add_optimization_profile(self, profile: IOptimizationProfile) -> int:
            if not isinstance(profile, IOptimizationProfile):
                raise TypeError("add_optimization_profile takes an IOptimizationProfile")
            record("add_optimization_profile", dict(profile.shapes))
            self.profiles.append(profile)
            return len(self.profiles) - 1

        def create_timing_cache(self, serialized_timing_cache: Any) -> ITimingCache:
            data = _bytes_like(serialized_timing_cache, "create_timing_cache(serialized_timing_cache)")
            record("create_timing_cache", data)
            if data and not data.startswith(TIMING_HEADER):
                raise RuntimeError("not a timing cache")
            return ITimingCache(data)

        def set_timing_cache(self, cache: ITimingCache, ignore_mismatch: bool) -> bool:
            if not isinstance(cache, ITimingCache) or type(ignore_mismatch) is not bool:
                raise TypeError("set_timing_cache(cache: ITimingCache, ignore_mismatch: bool)")
            record("set_timing_cache", ignore_mismatch)
            self.timing_cache = cache
            return True

        def get_timing_cache(self) -> ITimingCache | None:
            return self.timing_cache

    class Builder:
        def __init__(self, logger: Any) -> None:
            _check_logger(logger)
            self.logger = logger

        def create_network(self, flags: int = 0) -> INetworkDefinition:
            if type(flags) is not int:
                raise TypeError(f"create_network(flags) takes an int bit mask, got {type(flags).__name__}")
            known = sum(1 << int(member) for member in trt.NetworkDefinitionCreationFlag)
            if flags & ~known:
                raise ValueError(f"create_network: unknown flag bits in {flags:#x}")
            record("create_network", flags)
            return INetworkDefinition(flags)

        def create_builder_config(self) -> IBuilderConfig:
            return IBuilderConfig()

        def create_optimization_profile(self) -> IOptimizationProfile:
            return IOptimizationProfile()

        def build_serialized_network(self, network: INetworkDefinition, config: IBuilderConfig) -> Any:
            if not isinstance(network, INetworkDefinition) or not isinstance(config, IBuilderConfig):
                raise TypeError("build_serialized_network(network, config)")
            record("build_serialized_network")
            lowered = {f for f in config.flags if f.name in ("FP16", "BF16")}
            if trt.fake.build_fails or (network.strongly_typed and lowered):
                return None  # TensorRT logs why and returns None
            profile: dict[str, list[list[int]]] = {}
            for tensor in network._inputs:
                covering = [p.shapes[tensor.name] for p in config.profiles if tensor.name in p.shapes]
                if any(d < 0 for d in tensor.shape) and not covering:
                    return None
                if covering:
                    profile[tensor.name] = [list(s) for s in covering[0]]
            if config.timing_cache is not None:
                config.timing_cache.entries.append(f"timings of build {len(config.timing_cache.entries) + 1}")
            engine = {
                "magic": ENGINE_MAGIC,
                "version": version,
                "inputs": [[t.name, list(t.shape), t.dtype.name] for t in network._inputs],
                "outputs": [[t.name, list(t.shape), t.dtype.name] for t in network._outputs],
                "profile": profile,
                "flags": sorted(f.name for f in config.flags),
                "strongly_typed": network.strongly_typed,
                "device_memory": trt.fake.device_memory,
            }
            return memoryview(json.dumps(engine).encode())

    trt.Builder = Builder

    # -- runtime -----------------------------------------------------------------------------------
    class IOutputAllocator:
        def __init__(self) -> None:
            self._fake_base_initialised = True

    trt.IOutputAllocator = IOutputAllocator

    class ICudaEngine:
        def __init__(self, spec: dict[str, Any]) -> None:
            self.spec = spec
            self._io = [(n, tuple(s), d, trt.TensorIOMode.INPUT) for n, s, d in spec["inputs"]]
            self._io += [(n, tuple(s), d, trt.TensorIOMode.OUTPUT) for n, s, d in spec["outputs"]]
            self._by_name = {n: (s, d, m) for n, s, d, m in self._io}

        def _lookup(self, name: str) -> tuple:
            if name not in self._by_name:
                raise ValueError(f"no I/O tensor named {name!r}")
            return self._by_name[name]

        @property
        def num_io_tensors(self) -> int:
            return len(self._io)

        def get_tensor_name(self, index: int) -> str:
            return self._io[index][0]

        def get_tensor_mode(self, name: str) -> Any:
            return self._lookup(name)[2]

        def get_tensor_shape(self, name: str) -> Dims:
            return Dims(self._lookup(name)[0])

        def get_tensor_dtype(self, name: str) -> Any:
            return getattr(trt.DataType, self._lookup(name)[1])

        def get_tensor_profile_shape(self, name: str, profile_index: int) -> list[Dims]:
            if profile_index != 0 or name not in self.spec["profile"]:
                raise ValueError(f"no profile {profile_index} shapes for {name!r}")
            return [Dims(s) for s in self.spec["profile"][name]]

        @property
        def device_memory_size_v2(self) -> int:
            return self.spec["device_memory"]

        def create_execution_context(self) -> IExecutionContext:
            record("create_execution_context")
            return IExecutionContext(self)

    if major < 11:
        ICudaEngine.device_memory_size = property(lambda self: self.spec["device_memory"])

    class IExecutionContext:
        def __init__(self, engine: ICudaEngine) -> None:
            self.engine = engine
            self.input_shapes: dict[str, tuple[int, ...]] = {}
            self.addresses: dict[str, int] = {}
            self.allocators: dict[str, IOutputAllocator] = {}
            self.executions = 0

        def _is(self, name: str, mode: Any) -> bool:
            return name in self.engine._by_name and self.engine._by_name[name][2] == mode

        def set_input_shape(self, name: str, shape: Any) -> bool:
            if not self._is(name, trt.TensorIOMode.INPUT):
                raise ValueError(f"set_input_shape: {name!r} is not an input")
            dims = _int_shape(shape, "set_input_shape(shape)")
            record("set_input_shape", name, dims)
            declared = self.engine._by_name[name][0]
            if len(dims) != len(declared) or any(
                d >= 0 and d != s for d, s in zip(declared, dims, strict=True)
            ):
                return False
            if any(d < 0 for d in declared):
                lo, _, hi = self.engine.spec["profile"][name]
                if not all(a <= s <= b for a, s, b in zip(lo, dims, hi, strict=True)):
                    return False
            self.input_shapes[name] = dims
            return True

        def set_tensor_address(self, name: str, memory: int) -> bool:
            if name not in self.engine._by_name:
                raise ValueError(f"set_tensor_address: no I/O tensor {name!r}")
            if type(memory) is not int or memory == 0:
                raise TypeError(f"set_tensor_address takes a non-null int device pointer, got {memory!r}")
            record("set_tensor_address", name, memory)
            self.addresses[name] = memory
            return True

        def _output_shape(self, name: str) -> tuple[int, ...]:
            images = self.input_shapes.get(trt.fake.input_name)
            declared = self.engine._by_name[name][0]
            if images is None:
                return declared
            if name == "logits":
                return images
            if name == "num_detections":
                return (images[0],)
            return declared  # boxes: known only once the data is

        def get_tensor_shape(self, name: str) -> Dims:
            if self._is(name, trt.TensorIOMode.INPUT):
                return Dims(self.input_shapes.get(name, self.engine._by_name[name][0]))
            if self._is(name, trt.TensorIOMode.OUTPUT):
                return Dims(self._output_shape(name))
            raise ValueError(f"get_tensor_shape: no I/O tensor {name!r}")

        def set_output_allocator(self, name: str, output_allocator: IOutputAllocator) -> bool:
            if not self._is(name, trt.TensorIOMode.OUTPUT):
                raise ValueError(f"set_output_allocator: {name!r} is not an output")
            if not isinstance(output_allocator, IOutputAllocator):
                raise TypeError("set_output_allocator takes an IOutputAllocator")
            if not getattr(output_allocator, "_fake_base_initialised", False):
                raise TypeError("IOutputAllocator subclasses must call IOutputAllocator.__init__(self)")
            record("set_output_allocator", name)
            self.allocators[name] = output_allocator
            return True

        def _read(self, name: str) -> np.ndarray:
            shape = self.input_shapes[name]
            dtype = np.dtype(NUMPY_TYPES[self.engine._by_name[name][1]])
            nbytes = math.prod(shape) * dtype.itemsize
            raw = (ctypes.c_char * nbytes).from_address(self.addresses[name])
            return np.frombuffer(raw, dtype=dtype).reshape(shape).copy()

        def execute_async_v3(self, stream_handle: int) -> bool:
            if type(stream_handle) is not int:
                raise TypeError(f"execute_async_v3 takes the stream handle as an int, got {stream_handle!r}")
            record("execute_async_v3", stream_handle)
            for name, (_, _, mode) in self.engine._by_name.items():
                if mode == trt.TensorIOMode.INPUT:
                    if name not in self.input_shapes or name not in self.addresses:
                        raise RuntimeError(f"input {name!r} needs a shape and an address before execution")
                elif any(d < 0 for d in self._output_shape(name)):
                    if name not in self.allocators:
                        raise RuntimeError(f"data-dependent output {name!r} needs an output allocator")
                elif name not in self.addresses and name not in self.allocators:
                    raise RuntimeError(f"output {name!r} needs an address before execution")
            images = self._read(trt.fake.input_name)
            first = images.reshape(images.shape[0], -1)[:, 0].astype(np.float32)
            results = {"logits": images * 2}
            if "num_detections" in self.engine._by_name:
                results["num_detections"] = (first > 0).astype(np.int32)
                rows = [[float(n), v, v, v] for n, v in enumerate(first.tolist()) if v > 0]
                results["boxes"] = np.asarray(rows, dtype=np.float32).reshape(-1, 4)
            for name, value in results.items():
                value = np.ascontiguousarray(value)
                if name in self.allocators:
                    allocator = self.allocators[name]
                    previous = self.addresses.get(name, 0)
                    pointer = allocator.reallocate_output_async(
                        name, previous, value.nbytes, ALIGNMENT, stream_handle
                    )
                    if type(pointer) is not int or pointer == 0 or pointer % ALIGNMENT:
                        raise RuntimeError(
                            f"reallocate_output_async returned an unusable pointer {pointer!r}"
                        )
                    self.addresses[name] = pointer
                    ctypes.memmove(pointer, value.ctypes.data, value.nbytes)
                    allocator.notify_shape(name, Dims(value.shape))
                else:
                    ctypes.memmove(self.addresses[name], value.ctypes.data, value.nbytes)
            self.executions += 1
            return True

    class Runtime:
        def __init__(self, logger: Any) -> None:
            _check_logger(logger)
            record("Runtime")

        def deserialize_cuda_engine(self, serialized_engine: Any) -> ICudaEngine | None:
            data = _bytes_like(serialized_engine, "deserialize_cuda_engine(serialized_engine)")
            record("deserialize_cuda_engine")
            try:
                spec = json.loads(data)
            except ValueError:
                return None
            if (
                not isinstance(spec, dict)
                or spec.get("magic") != ENGINE_MAGIC
                or spec.get("version") != version
            ):
                return None  # like TensorRT: engines only load in the version that built them
            return ICudaEngine(spec)

    trt.Runtime = Runtime
    return trt


def calls_named(trt: types.ModuleType, name: str) -> list[tuple]:
    """The recorded calls of one method, in order, without the method name."""
    return [call[1:] for call in trt.calls if call[0] == name]


def install_fake_tensorrt(monkeypatch: Any, version: str = "10.8.0", **controls: Any) -> types.ModuleType:
    """A fresh fake as ``sys.modules["tensorrt"]`` for one test, also for Polygraphy.

    Polygraphy imports ``tensorrt`` lazily and keeps the module it first imported (and a logger made from
    it), so those caches are pointed at nothing for the test and restored after it.
    """
    import sys

    import polygraphy.backend.trt  # noqa: F401  (loads every module that holds a lazy tensorrt)
    from polygraphy.backend.trt import util as poly_trt_util

    trt = make_fake_tensorrt(version, FakeControls(**controls))
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    for name, module in list(sys.modules.items()):
        lazy = getattr(module, "trt", None) if name.startswith("polygraphy") else None
        if type(lazy).__name__ == "LazyModule":
            monkeypatch.setitem(vars(lazy), "module", None)
    monkeypatch.setattr(poly_trt_util, "TRT_LOGGER", None)
    return trt
