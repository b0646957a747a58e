"""A minimal TensorRT builder stand-in, for the one contract test of segbench's build against Polygraphy's
loaders (``tests/export/test_tensorrt_polygraphy.py``). Everything else replaces segbench's build seam
instead (``fake_tensorrt_build.py``).

It adds to the runtime fake the builder API that ``NetworkFromOnnxPath``, ``CreateConfig`` and
``EngineBytesFromNetwork`` call, and mirrors what the contract is about: network creation flags, profile
shapes, builder flags (TF32 set by default, no ``FP16`` / ``BF16`` on 11, a precision flag on a strongly
typed network fails the build), memory pool limits, optimization level and the timing cache. Polygraphy's
internals beyond those calls are Polygraphy's concern.
"""

from __future__ import annotations

import enum
import sys
import types
from typing import Any

from tests.fakes.fake_tensorrt import Dims, FakeNetwork, make_fake_tensorrt

TIMING_HEADER = b"FAKE-TIMING-CACHE\n"


def make_fake_tensorrt_builder(
    version: str = "10.8.0", network: FakeNetwork | None = None
) -> types.ModuleType:
    """The runtime fake plus a builder whose ONNX parser finds ``network`` in any existing file."""
    trt = make_fake_tensorrt(version)
    found = network or FakeNetwork()
    major, record = int(version.split(".")[0]), trt.calls.append
    flags = {"DEBUG": 2, "REFIT": 4, "TF32": 6, **({"FP16": 0, "BF16": 17} if major < 11 else {})}
    trt.BuilderFlag = enum.IntEnum("BuilderFlag", flags)
    trt.NetworkDefinitionCreationFlag = enum.IntEnum("NetworkDefinitionCreationFlag", {"STRONGLY_TYPED": 1})
    trt.DeviceType = enum.IntEnum("DeviceType", {"GPU": 0, "DLA": 1})
    severity = enum.Enum("Severity", ["INTERNAL_ERROR", "ERROR", "WARNING", "INFO", "VERBOSE"])

    class ILogger:  # what Polygraphy's logger subclasses
        Severity = severity

    class Logger(ILogger):
        INTERNAL_ERROR, ERROR, WARNING, INFO, VERBOSE = severity

        def log(self, severity: Any, msg: str) -> None:
            pass

    trt.ILogger, trt.Logger = ILogger, Logger

    class Tensor:
        def __init__(self, name: str, shape: tuple[int, ...]) -> None:
            self.name, self.shape, self.dtype, self.is_shape_tensor = name, Dims(shape), None, False

    class Network:
        def __init__(self, flags: int) -> None:
            strongly = 1 << trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED
            self.strongly_typed = major >= 11 or bool(flags & strongly)  # 11: every network is
            self.inputs: list[Tensor] = []

        num_inputs = property(lambda self: len(self.inputs))
        num_outputs = property(lambda self: 1)
        get_input = lambda self, index: self.inputs[index]  # noqa: E731
        get_output = lambda self, index: Tensor("logits", found.input_shape)  # noqa: E731
        __iter__ = lambda self: iter(())  # noqa: E731  (no layers to show)

    class OnnxParser:
        def __init__(self, network: Network, logger: Any) -> None:
            self.network, self.num_errors = network, 0

        def parse_from_file(self, model: str) -> bool:
            record(("parse_from_file", model))
            self.network.inputs.append(Tensor(found.input_name, found.input_shape))
            return True

    class Profile:
        def __init__(self) -> None:
            self.shapes: dict[str, list[tuple[int, ...]]] = {}

        def set_shape(self, input: str, min: Any, opt: Any, max: Any) -> None:
            record(("set_shape", input, tuple(min), tuple(opt), tuple(max)))
            self.shapes[input] = [tuple(min), tuple(opt), tuple(max)]

        __bool__ = lambda self: bool(self.shapes)  # noqa: E731

    class TimingCache:
        def __init__(self, data: bytes) -> None:
            self.entries = data[len(TIMING_HEADER) :].decode().splitlines() if data else []

        def serialize(self) -> memoryview:
            return memoryview(TIMING_HEADER + "".join(f"{e}\n" for e in self.entries).encode())

        def combine(self, input_cache: TimingCache, ignore_mismatch: bool) -> bool:
            self.entries += [e for e in input_cache.entries if e not in self.entries]
            return True

    class Config:
        def __init__(self) -> None:
            self.flags, self.profiles, self.timing_cache = (
                {trt.BuilderFlag.TF32},
                [],
                None,
            )  # TF32: the default
            self.DLA_core, self.default_device_type = -1, trt.DeviceType.GPU

        def set_flag(self, flag: Any) -> None:
            record(("set_flag", flag))
            self.flags.add(flag)

        def clear_flag(self, flag: Any) -> None:
            record(("clear_flag", flag))
            self.flags.discard(flag)

        get_flag = lambda self, flag: flag in self.flags  # noqa: E731
        set_memory_pool_limit = lambda self, pool, size: record(("set_memory_pool_limit", pool, size))  # noqa: E731

        builder_optimization_level = property(
            lambda self: 3, lambda self, level: record(("builder_optimization_level", level))
        )

        num_optimization_profiles = property(lambda self: len(self.profiles))

        def add_optimization_profile(self, profile: Profile) -> int:
            self.profiles.append(profile)
            return len(self.profiles) - 1

        def create_timing_cache(self, serialized_timing_cache: bytes) -> TimingCache:
            record(("create_timing_cache", bytes(serialized_timing_cache)))
            return TimingCache(bytes(serialized_timing_cache))

        def set_timing_cache(self, cache: TimingCache, ignore_mismatch: bool) -> bool:
            record(("set_timing_cache", ignore_mismatch))
            self.timing_cache = cache
            return True

        get_timing_cache = lambda self: self.timing_cache  # noqa: E731

    class Builder:
        def __init__(self, logger: Any) -> None:
            self.logger = logger

        def create_network(self, flags: int = 0) -> Network:
            record(("create_network", flags))
            return Network(flags)

        create_builder_config = lambda self: Config()  # noqa: E731
        create_optimization_profile = lambda self: Profile()  # noqa: E731

        def build_serialized_network(self, network: Network, config: Config) -> memoryview | None:
            record(("build_serialized_network",))
            lowered = sorted(f.name for f in config.flags if f.name in ("FP16", "BF16"))
            if network.strongly_typed and lowered:
                return None  # TensorRT logs why and returns None
            if config.timing_cache is not None:
                config.timing_cache.entries.append(f"timings of build {len(config.timing_cache.entries) + 1}")
            first = (config.profiles[0].shapes if config.profiles else {}).get(found.input_name)
            profile = types.SimpleNamespace(
                **dict(zip(("min", "opt", "max"), first or [None] * 3, strict=True))
            )
            flags = sorted(f.name for f in config.flags)
            built = found.engine_bytes(version, profile, flags=flags, strongly_typed=network.strongly_typed)
            return memoryview(built)

    trt.Builder, trt.OnnxParser = Builder, OnnxParser
    return trt


def install_for_polygraphy(monkeypatch: Any, trt: types.ModuleType) -> None:
    """``trt`` as ``tensorrt`` for one test, also for Polygraphy, which imports it lazily and keeps the
    module it first met (and a logger made from it): those caches are pointed at nothing for the test."""
    import polygraphy.backend.trt  # noqa: F401  (loads every module that holds a lazy tensorrt)
    from polygraphy.backend.trt import util as poly_trt_util

    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    for name, module in list(sys.modules.items()):
        lazy = getattr(module, "trt", None) if name.startswith("polygraphy") else None
        if type(lazy).__name__ == "LazyModule":
            monkeypatch.setitem(vars(lazy), "module", None)
    monkeypatch.setattr(poly_trt_util, "TRT_LOGGER", None)
