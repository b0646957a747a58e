"""TensorRT runtime: one deserialized engine run with torch CUDA tensors as its buffers.

Running stays segbench's own, not Polygraphy's ``TrtRunner``, because ``TrtRunner`` lacks what the
benchmark needs: it runs on its own stream and synchronises after every call, times the whole call on the
host (no CUDA events around the kernels alone), has no CUDA graphs, and routes every output through its
output allocator (a capture needs static output buffers). :class:`TensorRTEngine` uses named I/O tensors
(``set_input_shape`` / ``set_tensor_address`` / ``execute_async_v3``) on the caller's torch stream, device
buffers from torch's allocator, static output buffers where the shape is known and an ``IOutputAllocator``
only for outputs whose shape depends on the data (NMS, NonZero), optional CUDA events for GPU compute time
and optional CUDA graph capture with trtexec's fallback to eager launches when the capture fails.

Nothing here has run against a real TensorRT installation: the unit tests use a stand-in runtime
(``tests/fakes/fake_tensorrt.py``) on the CPU, and the CUDA-only paths (streams, events, graph capture)
have not run at all. ``tensorrt`` itself is never imported here: callers pass the module in, and the
logger (the builder's, :func:`segbench.backends.tensorrt.build.trt_logger`).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Mapping
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import torch

from segbench.errors import first_line, out_of_memory

# TensorRT's allocator contract asks for at least the requested alignment; 256 bytes covers every
# element type and matches cudaMalloc's guarantee.
MIN_ALIGNMENT = 256

_TORCH_DTYPES = (
    ("FLOAT", torch.float32),
    ("HALF", torch.float16),
    ("BF16", torch.bfloat16),
    ("INT32", torch.int32),
    ("INT64", torch.int64),
    ("INT8", torch.int8),
    ("BOOL", torch.bool),
    ("UINT8", torch.uint8),
)


def torch_dtype(trt: ModuleType, trt_dtype: Any) -> torch.dtype:
    """The torch dtype of a TensorRT ``DataType`` (FP8 / INT4 / FP4 I/O tensors are not supported)."""
    for name, dtype in _TORCH_DTYPES:
        member = getattr(trt.DataType, name, None)
        if member is not None and trt_dtype == member:
            return dtype
    raise TypeError(f"TensorRT I/O type {trt_dtype} has no torch equivalent here")


def _make_output_allocator(trt: ModuleType, device: torch.device) -> Any:
    """An ``IOutputAllocator`` that hands TensorRT torch-owned device memory for data-dependent outputs.

    TensorRT calls ``reallocate_output_async`` once it knows the byte size of such an output, and
    ``notify_shape`` with its final shape; the buffer grows when needed and is reused otherwise.
    """

    class TorchOutputAllocator(trt.IOutputAllocator):  # type: ignore[name-defined]  # a runtime base class
        def __init__(self) -> None:
            trt.IOutputAllocator.__init__(self)  # the bindings need the base initialised explicitly
            self.buffers: dict[str, torch.Tensor] = {}
            self.offsets: dict[str, int] = {}
            self.shapes: dict[str, tuple[int, ...]] = {}

        def reallocate_output_async(
            self, tensor_name: str, memory: Any, size: int, alignment: int, stream: Any
        ) -> int:
            align = max(int(alignment), MIN_ALIGNMENT)
            need = max(int(size), 1) + align  # room to align the start
            buffer = self.buffers.get(tensor_name)
            if buffer is None or buffer.numel() < need:
                grown = need if buffer is None else max(need, 2 * buffer.numel())
                buffer = torch.empty(grown, dtype=torch.uint8, device=device)
                self.buffers[tensor_name] = buffer
            offset = -buffer.data_ptr() % align
            self.offsets[tensor_name] = offset
            return buffer.data_ptr() + offset

        def reallocate_output(self, tensor_name: str, memory: Any, size: int, alignment: int) -> int:
            # The older synchronous callback; TensorRT 10+ calls the async one, kept for completeness.
            return self.reallocate_output_async(tensor_name, memory, size, alignment, 0)

        def notify_shape(self, tensor_name: str, shape: Any) -> None:
            self.shapes[tensor_name] = tuple(int(d) for d in shape)

        def tensor(self, tensor_name: str, dtype: torch.dtype) -> torch.Tensor:
            """The output as a view of its buffer with the notified shape and ``dtype``."""
            if tensor_name not in self.shapes or tensor_name not in self.buffers:
                raise RuntimeError(f"TensorRT did not produce data-dependent output {tensor_name!r}")
            shape = self.shapes[tensor_name]
            nbytes = math.prod(shape) * torch.empty((), dtype=dtype).element_size()
            start = self.offsets[tensor_name]
            return self.buffers[tensor_name][start : start + nbytes].view(dtype).reshape(shape)

    return TorchOutputAllocator()


def deserialize_engine(trt: ModuleType, engine_bytes: bytes, logger: Any) -> tuple[Any, Any]:
    """``(runtime, engine)`` through TensorRT's own runtime; the runtime is returned so the caller keeps it
    alive as long as the engine. Plugins are registered first: an engine with plugin layers (from the
    ONNX parser's plugins) does not load without them."""
    trt.init_libnvinfer_plugins(logger, "")
    runtime = trt.Runtime(logger)
    engine = runtime.deserialize_cuda_engine(engine_bytes)
    if engine is None:  # TensorRT logs why and returns None
        raise RuntimeError("TensorRT could not deserialize the engine (built by another version or GPU?)")
    return runtime, engine


@dataclass
class _CapturedGraph:
    key: tuple
    graph: Any
    inputs: dict[str, torch.Tensor]
    outputs: dict[str, torch.Tensor]


class TensorRTEngine:
    """One deserialized engine with one execution context, fed and read through torch tensors.

    ``infer`` returns the engine's own output buffers (reused by the next call): copy or clone them
    before calling again. On a CPU device (tests with a stand-in module) the stream handle is 0 and
    CUDA events and graphs are off.
    """

    def __init__(
        self,
        trt: ModuleType,
        engine_bytes: bytes,
        device: torch.device,
        logger: Any,
        *,
        record_compute_ms: bool = False,
        use_cuda_graph: bool = False,
    ) -> None:
        self.trt = trt
        self.device = torch.device(device)
        self._runtime, self.engine = deserialize_engine(trt, engine_bytes, logger)  # runtime kept alive
        self.context = self.engine.create_execution_context()
        if self.context is None:
            raise RuntimeError("TensorRT could not create an execution context (out of device memory?)")
        self._inputs: list[str] = []
        self._outputs: list[str] = []
        self._dtypes: dict[str, torch.dtype] = {}
        for i in range(int(self.engine.num_io_tensors)):
            name = self.engine.get_tensor_name(i)
            mode = self.engine.get_tensor_mode(name)
            if mode == trt.TensorIOMode.INPUT:
                self._inputs.append(name)
            elif mode == trt.TensorIOMode.OUTPUT:
                self._outputs.append(name)
            else:
                continue
            self._dtypes[name] = torch_dtype(trt, self.engine.get_tensor_dtype(name))
        self._allocator: Any = None
        self._data_dependent: set[str] = set()
        self._probe_data_dependent_outputs()
        self._buffers: dict[str, torch.Tensor] = {}
        self._bound_inputs: dict[str, torch.Tensor] = {}
        self._on_cuda = self.device.type == "cuda"
        self._side_stream: Any = None  # infer()'s stream when the caller gives none, made on first use
        self._events = None
        if record_compute_ms and self._on_cuda:
            self._events = (torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
        self._timed = False
        self.cuda_graph_active = bool(use_cuda_graph and self._on_cuda and not self._data_dependent)
        # Why a capture failed (then every later call runs eager, as trtexec does), or None.
        self.cuda_graph_fallback: str | None = None
        self._graph: _CapturedGraph | None = None

    # -- introspection ----------------------------------------------------------------------------
    @property
    def input_names(self) -> list[str]:
        return list(self._inputs)

    @property
    def output_names(self) -> list[str]:
        return list(self._outputs)

    @property
    def io_dtypes(self) -> dict[str, torch.dtype]:
        """Every input's and output's element type, by name."""
        return dict(self._dtypes)

    @property
    def has_data_dependent_outputs(self) -> bool:
        return bool(self._data_dependent)

    def profile_max_shape(self, name: str) -> tuple[int, ...]:
        """The largest shape input ``name`` accepts: its profile's max, or its static shape."""
        shape = tuple(int(d) for d in self.engine.get_tensor_shape(name))
        if any(d < 0 for d in shape):
            shape = tuple(int(d) for d in self.engine.get_tensor_profile_shape(name, 0)[2])
        return shape

    @property
    def device_memory_bytes(self) -> int:
        """Activation memory TensorRT allocates per execution context (outside torch's allocator)."""
        size = getattr(self.engine, "device_memory_size_v2", None)
        if size is None:
            size = self.engine.device_memory_size
        return int(size)

    @property
    def last_compute_ms(self) -> float | None:
        """GPU time of the last execution between CUDA events on its stream (waits for it to finish)."""
        if self._events is None or not self._timed:
            return None
        start, end = self._events
        end.synchronize()
        return float(start.elapsed_time(end))

    def _probe_data_dependent_outputs(self) -> None:
        """Find outputs whose shape stays unknown (-1) once every input shape is set.

        Dynamic inputs are set to their profile's opt shape for the probe; an output with a -1 dim then
        depends on the data and needs an output allocator (and rules out CUDA graphs).
        """
        for name in self._inputs:
            shape = tuple(int(d) for d in self.engine.get_tensor_shape(name))
            if any(d < 0 for d in shape):
                shape = tuple(int(d) for d in self.engine.get_tensor_profile_shape(name, 0)[1])
            self.context.set_input_shape(name, shape)
        for name in self._outputs:
            if any(int(d) < 0 for d in self.context.get_tensor_shape(name)):
                self._use_allocator(name)

    def _use_allocator(self, name: str) -> None:
        if self._allocator is None:
            self._allocator = _make_output_allocator(self.trt, self.device)
        self.context.set_output_allocator(name, self._allocator)
        self._data_dependent.add(name)

    # -- execution --------------------------------------------------------------------------------
    def _prepare(self, inputs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        missing = [name for name in self._inputs if name not in inputs]
        if missing:
            raise ValueError(f"missing engine inputs: {', '.join(missing)} (got {', '.join(inputs)})")
        return {
            name: inputs[name].to(device=self.device, dtype=self._dtypes[name]).contiguous()
            for name in self._inputs
        }

    def _bind(self, inputs: Mapping[str, torch.Tensor], *, fresh: bool = False) -> dict[str, torch.Tensor]:
        """Set input shapes and addresses and output addresses; returns the static output buffers used.

        Output buffers are reused across calls and reallocated only when an output's shape changed;
        ``fresh`` gives new buffers that nothing else uses (the static buffers of a CUDA graph).
        """
        for name, tensor in inputs.items():
            if not self.context.set_input_shape(name, tuple(tensor.shape)):
                raise ValueError(
                    f"input {name!r} shape {tuple(tensor.shape)} is outside the engine's optimization profile"
                )
            self._set_address(name, tensor)
        bound = {}
        for name in self._outputs:
            if name in self._data_dependent:
                continue
            shape = tuple(int(d) for d in self.context.get_tensor_shape(name))
            if any(d < 0 for d in shape):  # data-dependent after all (not seen by the probe)
                self._use_allocator(name)
                self.cuda_graph_active = False
                continue
            buffer = None if fresh else self._buffers.get(name)
            if buffer is None or tuple(buffer.shape) != shape:
                buffer = torch.empty(shape, dtype=self._dtypes[name], device=self.device)
                if not fresh:
                    self._buffers[name] = buffer
            bound[name] = buffer
            self._set_address(name, buffer)
        return bound

    def _set_address(self, name: str, tensor: torch.Tensor) -> None:
        # TensorRT returns False (and logs why) for an address it refuses, e.g. misaligned: running on
        # would read or write whatever the tensor's old address holds.
        if not self.context.set_tensor_address(name, tensor.data_ptr()):
            raise RuntimeError(f"TensorRT refused the device address of {name!r} (see its log above)")

    def _execute(self, stream_handle: int) -> None:
        if not self.context.execute_async_v3(stream_handle):
            raise RuntimeError("TensorRT execute_async_v3 failed (see its log above)")

    def _results(self, static: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        results = {}
        for name in self._outputs:
            if name in self._data_dependent:
                results[name] = self._allocator.tensor(name, self._dtypes[name])
            else:
                results[name] = static[name]
        return results

    def infer(
        self, inputs: Mapping[str, torch.Tensor], stream: torch.cuda.Stream | None = None
    ) -> dict[str, torch.Tensor]:
        """Run the engine on ``inputs`` (by name) and return its outputs by name, on the engine's device.

        Work is queued on ``stream`` and is not waited for: read the outputs on that stream or after
        synchronising it. Without one, the engine's own side stream runs it, ordered after the current
        stream's work and before its later work, so the outputs read on the current stream as usual (the
        current stream may be the legacy default one, on which torch refuses to capture a CUDA graph). For
        data-dependent outputs TensorRT reports the shape (``notify_shape``) before ``execute_async_v3``
        returns, waiting internally as it needs to.
        """
        if not self._on_cuda:
            return self._infer_on(inputs, None, 0)
        if stream is not None:
            with torch.cuda.stream(stream):
                return self._infer_on(inputs, stream, stream.cuda_stream)
        caller = torch.cuda.current_stream(self.device)
        if self._side_stream is None:
            self._side_stream = torch.cuda.Stream(self.device)
        side = self._side_stream
        side.wait_stream(caller)
        with torch.cuda.stream(side):
            results = self._infer_on(inputs, side, side.cuda_stream)
        caller.wait_stream(side)
        return results

    def _infer_on(
        self, inputs: Mapping[str, torch.Tensor], stream: torch.cuda.Stream | None, handle: int
    ) -> dict[str, torch.Tensor]:
        prepared = self._prepare(inputs)
        if self.cuda_graph_active and stream is not None:
            replayed = self._replay(prepared, stream)
            if replayed is not None:
                return replayed
        self._bound_inputs = prepared  # keep the inputs alive until the next call
        static = self._bind(prepared)
        self._timed_execute(stream, lambda: self._execute(handle))
        return self._results(static)

    def _timed_execute(self, stream: torch.cuda.Stream | None, run: Any) -> None:
        if self._events is None or stream is None:
            run()
            return
        start, end = self._events
        start.record(stream)
        run()
        end.record(stream)
        self._timed = True

    def _replay(
        self, prepared: dict[str, torch.Tensor], stream: torch.cuda.Stream
    ) -> dict[str, torch.Tensor] | None:
        """Run through a CUDA graph captured for these input shapes, capturing it on first use; None when
        the capture failed (the caller runs eager, now and from then on; ``cuda_graph_fallback`` says why).

        One graph is kept: a change of input shapes recaptures, because a context's device state is only
        known to match the graph that was captured last. Inputs are copied into the graph's static buffers.
        """
        key = tuple((name, tuple(t.shape)) for name, t in prepared.items())
        if self._graph is None or self._graph.key != key:
            self._graph = None
            static_inputs = {name: t.clone() for name, t in prepared.items()}
            static_outputs = self._bind(static_inputs, fresh=True)
            if not self.cuda_graph_active:
                # _bind met an output whose shape depends on the data: it goes through the output
                # allocator, which a captured graph cannot replay. Eager from now on, as on a failure.
                self.cuda_graph_fallback = "an output's shape depends on the data (output allocator)"
                return None
            self._execute(stream.cuda_stream)  # warm-up: lets TensorRT do its one-off setup outside capture
            try:
                graph = self._capture(stream)
            except Exception as exc:
                if out_of_memory(exc):
                    raise
                if self._on_cuda:  # let the failed capture's work finish before running eager
                    with contextlib.suppress(Exception):
                        torch.cuda.synchronize(self.device)
                # Like trtexec: report the failed capture once and launch eagerly from now on.
                self.cuda_graph_active = False
                self.cuda_graph_fallback = f"{type(exc).__name__}: {first_line(exc)}"
                return None
            self._graph = _CapturedGraph(key, graph, static_inputs, static_outputs)
        else:
            for name, tensor in prepared.items():
                self._graph.inputs[name].copy_(tensor)
        graph = self._graph
        self._timed_execute(stream, graph.graph.replay)
        return dict(graph.outputs)

    def _capture(self, stream: torch.cuda.Stream) -> Any:
        """One ``execute_async_v3`` captured as a CUDA graph on ``stream``."""
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, stream=stream, capture_error_mode="thread_local"):
            self._execute(stream.cuda_stream)
        return graph

    def release_graph(self) -> None:
        """Drop the captured graph (and its static buffers); the next replay captures again."""
        self._graph = None

    def close(self) -> None:
        """Drop the graph, context and engine (in that order) and the buffers they used."""
        self._graph = None
        self._side_stream = None
        self._buffers.clear()
        self._bound_inputs = {}
        self._allocator = None
        self.context = None
        self.engine = None
        self._runtime = None
