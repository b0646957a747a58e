"""A stand-in for NVIDIA's ``tensorrt`` Python module, for tests on machines without TensorRT or a GPU.

It implements only the part of the documented TensorRT 10 / 11 Python API that segbench uses, and checks
arguments the way the real bindings constrain them (types, ranks, ranges, required set-up before
``execute_async_v3``), raising ``TypeError`` / ``ValueError`` on misuse. Every call is appended to
``trt.calls`` as ``(method, *args)`` so tests can assert what the code under test asked for.

Major-version differences mirrored from NVIDIA's API reference:

* 11: ``BuilderFlag`` has no ``FP16`` / ``BF16`` (using them raises AttributeError), every network is
  strongly typed, and ``ICudaEngine.device_memory_size`` is gone (``device_memory_size_v2`` remains).
* 10: ``FP16`` / ``BF16`` exist; setting them on a strongly typed network makes the build fail.

The fake "network" parsed from any ONNX file has one input ``images`` of shape (-1, 3, -1, -1) (see
:class:`FakeControls`) and the output ``logits`` = 2 * images. With ``data_dependent=True`` it also has
``num_detections`` (N,) int32 and ``boxes`` (K, 4) float32 whose K depends on the data: one row
``[n, v, v, v]`` for each image n whose first pixel v = images[n, 0, 0, 0] is positive. Engines are
serialized as JSON (no pickle); execution reads and writes the host memory behind the tensor addresses
with ctypes, so it works with CPU torch tensors only.
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


def make_fake_tensorrt(version: str = "10.8.0", controls: FakeControls | None = None) -> types.ModuleType:
    """A fresh fake ``tensorrt`` module for ``version`` (major 10 and 11 differ as documented)."""
    major = int(version.split(".")[0])
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version
    trt.calls = []
    trt.fake = controls if controls is not None else FakeControls()

    def record(name: str, *args: Any) -> None:
        trt.calls.append((name, *args))

    # -- enums -------------------------------------------------------------------------------------
    class Severity(enum.Enum):
        INTERNAL_ERROR = 0
        ERROR = 1
        WARNING = 2
        INFO = 3
        VERBOSE = 4

    if major >= 11:
        creation_flags = {"STRONGLY_TYPED": 0, "PREFER_AOT_PYTHON_PLUGINS": 1, "PREFER_JIT_PYTHON_PLUGINS": 2}
        builder_flags = {"DEBUG": 1, "GPU_FALLBACK": 2, "REFIT": 3, "TF32": 6}
    else:
        creation_flags = {"EXPLICIT_BATCH": 0, "STRONGLY_TYPED": 1}
        builder_flags = {
            "FP16": 0,
            "INT8": 1,
            "DEBUG": 2,
            "GPU_FALLBACK": 3,
            "REFIT": 4,
            "TF32": 6,
            "BF16": 18,
        }
    trt.NetworkDefinitionCreationFlag = enum.IntEnum("NetworkDefinitionCreationFlag", creation_flags)
    trt.BuilderFlag = enum.IntEnum("BuilderFlag", builder_flags)
    trt.MemoryPoolType = enum.IntEnum(
        "MemoryPoolType", {"WORKSPACE": 0, "DLA_MANAGED_SRAM": 1, "DLA_LOCAL_DRAM": 2, "DLA_GLOBAL_DRAM": 3}
    )
    trt.TensorIOMode = enum.Enum("TensorIOMode", {"NONE": 0, "INPUT": 1, "OUTPUT": 2})
    trt.DataType = enum.Enum(
        "DataType",
        {
            "FLOAT": 0,
            "HALF": 1,
            "INT8": 2,
            "INT32": 3,
            "BOOL": 4,
            "UINT8": 5,
            "FP8": 6,
            "BF16": 7,
            "INT64": 8,
        },
    )
    trt.Dims = Dims

    class Logger:
        INTERNAL_ERROR = Severity.INTERNAL_ERROR
        ERROR = Severity.ERROR
        WARNING = Severity.WARNING
        INFO = Severity.INFO
        VERBOSE = Severity.VERBOSE

        def __init__(self, min_severity: Severity = Severity.WARNING) -> None:
            if not isinstance(min_severity, Severity):
                raise TypeError(f"Logger(min_severity) takes a Logger.Severity, got {min_severity!r}")
            record("Logger", min_severity)
            self.min_severity = min_severity
            self.messages: list[str] = []

        def log(self, severity: Severity, msg: str) -> None:
            self.messages.append(f"{severity.name}: {msg}")

    Logger.Severity = Severity
    trt.Logger = Logger

    def check_logger(logger: Any) -> None:
        if not isinstance(logger, Logger):
            raise TypeError(f"expected a tensorrt.ILogger, got {type(logger).__name__}")

    # -- network and parser ------------------------------------------------------------------------
    class ITensor:
        def __init__(self, name: str, shape: Sequence[int], dtype: Any) -> None:
            self.name = name
            self.shape = Dims(shape)
            self.dtype = dtype

    class INetworkDefinition:
        def __init__(self, flags: int) -> None:
            self.flags = flags
            self.strongly_typed = major >= 11 or bool(
                flags & (1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
            )
            self._inputs: list[ITensor] = []
            self._outputs: list[ITensor] = []

        @property
        def num_inputs(self) -> int:
            return len(self._inputs)

        @property
        def num_outputs(self) -> int:
            return len(self._outputs)

        def get_input(self, index: int) -> ITensor:
            return self._inputs[index]

        def get_output(self, index: int) -> ITensor:
            return self._outputs[index]

    class ParserError:
        def __init__(self, desc: str) -> None:
            self._desc = desc

        def desc(self) -> str:
            return self._desc

        def __str__(self) -> str:
            return f"In node 0 (fake): UNSUPPORTED_NODE: {self._desc}"

    class OnnxParser:
        def __init__(self, network: INetworkDefinition, logger: Logger) -> None:
            if not isinstance(network, INetworkDefinition):
                raise TypeError("OnnxParser(network, logger) needs an INetworkDefinition")
            check_logger(logger)
            record("OnnxParser")
            self.network = network
            self._errors: list[ParserError] = []

        @property
        def num_errors(self) -> int:
            return len(self._errors)

        def get_error(self, index: int) -> ParserError:
            return self._errors[index]

        def parse_from_file(self, model: str) -> bool:
            if type(model) is not str:
                raise TypeError(f"parse_from_file(model) takes a str path, got {type(model).__name__}")
            record("parse_from_file", model)
            if not os.path.isfile(model):
                self._errors.append(ParserError(f"Failed to open file: {model}"))
                return False
            if trt.fake.parse_errors:
                self._errors.extend(ParserError(text) for text in trt.fake.parse_errors)
                return False
            controls = trt.fake
            dtype = getattr(trt.DataType, controls.input_dtype)
            self.network._inputs.append(ITensor(controls.input_name, controls.input_shape, dtype))
            if controls.extra_input is not None:
                name, shape = controls.extra_input
                self.network._inputs.append(ITensor(name, shape, trt.DataType.FLOAT))
            self.network._outputs.append(ITensor("logits", controls.input_shape, dtype))
            if controls.data_dependent:
                self.network._outputs.append(ITensor("num_detections", (-1,), trt.DataType.INT32))
                self.network._outputs.append(ITensor("boxes", (-1, 4), trt.DataType.FLOAT))
            return True

    trt.OnnxParser = OnnxParser

    # -- builder -----------------------------------------------------------------------------------
    class IOptimizationProfile:
        def __init__(self) -> None:
            self.shapes: dict[str, tuple[tuple[int, ...], ...]] = {}

        def set_shape(self, input: str, min: Any, opt: Any, max: Any) -> None:
            if type(input) is not str:
                raise TypeError("set_shape(input, ...) takes the input tensor's name")
            shapes = tuple(
                _int_shape(s, f"set_shape {which}")
                for s, which in zip((min, opt, max), ("min", "opt", "max"), strict=True)
            )
            if len({len(s) for s in shapes}) != 1:
                raise ValueError(f"set_shape: min/opt/max ranks differ: {shapes}")
            lo, mid, hi = shapes
            if not all(0 <= a <= b <= c for a, b, c in zip(lo, mid, hi, strict=True)):
                raise ValueError(f"set_shape needs 0 <= min <= opt <= max per dim, got {shapes}")
            record("set_shape", input, *shapes)
            self.shapes[input] = shapes

    class ITimingCache:
        def __init__(self, data: bytes) -> None:
            self.entries = [] if not data else data[len(TIMING_HEADER) :].decode().splitlines()

        def serialize(self) -> memoryview:
            return memoryview(TIMING_HEADER + "".join(f"{e}\n" for e in self.entries).encode())

    class IBuilderConfig:
        def __init__(self) -> None:
            self.flags: set[Any] = set()
            self.pool_limits: dict[Any, int] = {}
            self.profiles: list[IOptimizationProfile] = []
            self.timing_cache: ITimingCache | None = None
            self._level = 3

        def set_flag(self, flag: Any) -> None:
            if not isinstance(flag, trt.BuilderFlag):
                raise TypeError(f"set_flag takes a BuilderFlag, got {flag!r}")
            record("set_flag", flag)
            self.flags.add(flag)

        def get_flag(self, flag: Any) -> bool:
            return flag in self.flags

        def set_memory_pool_limit(self, pool: Any, pool_size: int) -> None:
            if not isinstance(pool, trt.MemoryPoolType):
                raise TypeError(f"set_memory_pool_limit takes a MemoryPoolType, got {pool!r}")
            if type(pool_size) is not int or pool_size <= 0:
                raise ValueError(f"pool size must be a positive int of bytes, got {pool_size!r}")
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

        def add_optimization_profile(self, profile: IOptimizationProfile) -> int:
            if not isinstance(profile, IOptimizationProfile):
                raise TypeError("add_optimization_profile takes an IOptimizationProfile")
            record("add_optimization_profile", dict(profile.shapes))
            if not profile.shapes:
                return -1
            self.profiles.append(profile)
            return len(self.profiles) - 1

        def create_timing_cache(self, serialized_timing_cache: Any) -> ITimingCache | None:
            data = _bytes_like(serialized_timing_cache, "create_timing_cache(serialized_timing_cache)")
            record("create_timing_cache", data)
            if data and not data.startswith(TIMING_HEADER):
                return None
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
        def __init__(self, logger: Logger) -> None:
            check_logger(logger)
            record("Builder")
            self.logger = logger
            self.builds = 0

        def create_network(self, flags: int = 0) -> INetworkDefinition:
            if type(flags) is not int:
                raise TypeError(f"create_network(flags) takes an int bit mask, got {type(flags).__name__}")
            known = 0
            for member in trt.NetworkDefinitionCreationFlag:
                known |= 1 << int(member)
            if flags & ~known:
                raise ValueError(f"create_network: unknown flag bits in {flags:#x}")
            record("create_network", flags)
            return INetworkDefinition(flags)

        def create_builder_config(self) -> IBuilderConfig:
            record("create_builder_config")
            return IBuilderConfig()

        def create_optimization_profile(self) -> IOptimizationProfile:
            record("create_optimization_profile")
            return IOptimizationProfile()

        def build_serialized_network(self, network: INetworkDefinition, config: IBuilderConfig) -> Any:
            if not isinstance(network, INetworkDefinition) or not isinstance(config, IBuilderConfig):
                raise TypeError("build_serialized_network(network, config)")
            record("build_serialized_network")
            if trt.fake.build_fails:
                self.logger.log(Severity.ERROR, "fake build failure")
                return None
            lowered = {f for f in config.flags if f.name in ("FP16", "BF16")}
            if network.strongly_typed and lowered:
                self.logger.log(Severity.ERROR, "precision flags are not allowed on a strongly typed network")
                return None
            profile: dict[str, list[list[int]]] = {}
            for tensor in network._inputs:
                if any(d < 0 for d in tensor.shape):
                    covering = [p.shapes[tensor.name] for p in config.profiles if tensor.name in p.shapes]
                    if not covering:
                        self.logger.log(Severity.ERROR, f"no optimization profile covers {tensor.name}")
                        return None
                    profile[tensor.name] = [list(s) for s in covering[0]]
            if config.timing_cache is not None:
                self.builds += 1
                config.timing_cache.entries.append(f"timings of build {len(config.timing_cache.entries) + 1}")
            engine = {
                "magic": ENGINE_MAGIC,
                "version": version,
                "inputs": [[t.name, list(t.shape), t.dtype.name] for t in network._inputs],
                "outputs": [[t.name, list(t.shape), t.dtype.name] for t in network._outputs],
                "profile": profile,
                "flags": sorted(f.name for f in config.flags),
                "strongly_typed": network.strongly_typed,
                "data_dependent": trt.fake.data_dependent,
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
        def __init__(self, logger: Logger) -> None:
            check_logger(logger)
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
