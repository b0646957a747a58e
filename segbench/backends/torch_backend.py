"""PyTorch eager backend: fp32 anywhere, autocast fp16/bf16 on CUDA (bf16 also on the CPU)."""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from pydantic import Field, model_validator

from segbench.backends.base import BackendConfig, Runner
from segbench.backends.spec import MODULE, BackendSpec
from segbench.errors import describe_error, out_of_memory

AUTOCAST_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}
# torch.compile modes that capture CUDA graphs themselves (max-autotune includes reduce-overhead's graphs).
GRAPH_CAPTURING_COMPILE_MODES = ("reduce-overhead", "max-autotune")


class TorchConfig(BackendConfig):
    name: Literal["torch"] = Field(
        default="torch", description="`torch`: the PyTorch module itself runs (eager, or under `compile`)."
    )
    supported_precisions: ClassVar[dict[str, tuple[str, ...]]] = {
        "cpu": ("fp32", "bf16"),
        "cuda": ("fp32", "fp16", "bf16"),
    }
    channels_last: bool = Field(
        default=False,
        description="Run the module and its input in the channels-last memory format (NHWC strides, "
        "`torch.channels_last`) instead of contiguous NCHW.",
    )
    # TF32 tensor-core math for fp32 convolutions and matmuls on CUDA. Off by default: fp32 results then
    # are fp32 and pass the fp32 numerics check; with TF32 they differ by ~1e-3 relative.
    tf32: bool = False
    # CUDA: stage inputs in page-locked host memory and copy them asynchronously (None: on for cuda).
    pinned_memory: bool | None = None
    # CUDA: capture the forward as a CUDA graph per input shape and replay it (static shapes only).
    cuda_graph: bool = False
    # torch.compile mode; None runs eager.
    compile: Literal["default", "reduce-overhead", "max-autotune"] | None = None
    # cuDNN autotuning (torch.backends.cudnn.benchmark): the first call of each input shape times the
    # convolution algorithms and keeps the fastest. None: on for cuda, because onnxruntime's CUDA provider
    # searches them too (cudnn_conv_algo_search EXHAUSTIVE by default) and TensorRT times its tactics;
    # the search lands in the warm-up (first_iteration_ms).
    cudnn_benchmark: bool | None = None

    @model_validator(mode="after")
    def _cuda_only_options(self) -> TorchConfig:
        if self.device != "cuda" and (self.cuda_graph or self.pinned_memory or self.cudnn_benchmark):
            raise ValueError("cuda_graph, pinned_memory and cudnn_benchmark need device: cuda")
        if self.cuda_graph and self.compile in GRAPH_CAPTURING_COMPILE_MODES:
            raise ValueError(
                f"cuda_graph: true with compile: {self.compile} captures CUDA graphs twice: torch.compile's "
                f"{', '.join(GRAPH_CAPTURING_COMPILE_MODES)} modes capture their own; use one of the two "
                "(or compile: default with cuda_graph)"
            )
        return self


def _nothing() -> None:
    """No compute mark on the CPU (no CUDA events there)."""


class GraphCaptureFailed(RuntimeError):
    """The forward could not be captured as a CUDA graph (e.g. it synchronises on data, as ``nonzero``
    does); the runner falls back to eager."""


def unavailable_reason(config: BackendConfig) -> str | None:
    if config.device == "cuda" and not torch.cuda.is_available():
        return "no CUDA device visible to torch"
    return None


class TorchRunner(Runner):
    device_stages = ("h2d", "compute", "d2h")  # CUDA events, on the GPU only
    config: TorchConfig

    @property
    def device(self) -> torch.device:
        return torch.device(self.config.device)

    @property
    def on_cuda(self) -> bool:
        return self.config.device == "cuda"

    def activate(self) -> None:
        # The harness keeps the CPU model for the numerics baseline; a device copy leaves it untouched.
        module = copy.deepcopy(self.model).to(self.device) if self.on_cuda else self.model
        self._memory_format = torch.channels_last if self.config.channels_last else torch.contiguous_format
        module = module.to(memory_format=self._memory_format).eval()
        # What infer calls: the module, or its torch.compile wrapper.
        self._module: Callable[..., Any] = module
        if self.config.compile is not None:
            self._module = torch.compile(module, mode=self.config.compile)
        cuda = self.on_cuda
        self._pinned = self.config.pinned_memory if self.config.pinned_memory is not None else cuda
        self._cudnn_benchmark = (
            self.config.cudnn_benchmark if self.config.cudnn_benchmark is not None else cuda
        )
        # Page-locked host buffers per input shape and per output (name, shape), reused across calls.
        self._pinned_buffers: dict[tuple[int, ...], torch.Tensor] = {}
        self._host_buffers: dict[tuple[Any, ...], torch.Tensor] = {}
        self._graphs: dict[tuple[int, ...], tuple[Any, torch.Tensor, Any]] = {}
        # Why capturing the forward failed (then every call runs eager), or None.
        self._graph_fallback: str | None = None
        self._autocast_dtype = AUTOCAST_DTYPES.get(self.precision)
        if cuda:
            # Event pairs around the copy in, the forward and the copy out, on the current stream.
            self._events = [torch.cuda.Event(enable_timing=True) for _ in range(4)]
            self._saved_flags = (
                torch.backends.cuda.matmul.allow_tf32,
                torch.backends.cudnn.allow_tf32,
                torch.backends.cudnn.benchmark,
            )
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = self.config.tf32
            torch.backends.cudnn.benchmark = self._cudnn_benchmark

    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        inputs = torch.from_numpy(feeds[self.model.input_names[0]])
        cuda = self.on_cuda
        if cuda:
            before_copy, before_forward, after_forward, after_copy = self._events
            if self._pinned:
                staging = self._pinned_buffers.get(tuple(inputs.shape))
                if staging is None:
                    staging = self._pinned_buffers[tuple(inputs.shape)] = torch.empty_like(
                        inputs
                    ).pin_memory()
                inputs = staging.copy_(inputs)
            before_copy.record()
            inputs = inputs.to(self.device, non_blocking=self._pinned)
        inputs = inputs.contiguous(memory_format=self._memory_format)
        with torch.inference_mode(), self._autocast():
            raw = self._forward(inputs, before_forward.record if cuda else _nothing)
            if cuda:
                after_forward.record()
        outputs = raw if isinstance(raw, tuple) else (raw,)
        named = dict(zip(self.model.output_names, outputs, strict=True))
        if not cuda:
            return {name: out.float().cpu().numpy() for name, out in named.items()}
        if self._pinned:
            # Asynchronous copies into page-locked buffers, as the copy in: the event after them and its
            # synchronize bound the copy itself, not a blocking .cpu()'s own staging.
            host = {
                name: self._host_buffer(name, out).copy_(out.float(), non_blocking=True)
                for name, out in named.items()
            }
        else:
            host = {name: out.float().cpu() for name, out in named.items()}
        after_copy.record()
        after_copy.synchronize()
        self.last_stages_ms = {
            "h2d": before_copy.elapsed_time(before_forward),
            "compute": before_forward.elapsed_time(after_forward),
            "d2h": after_forward.elapsed_time(after_copy),
        }
        # The pinned buffers are reused by the next call: hand out copies.
        return {
            name: tensor.numpy().copy() if self._pinned else tensor.numpy() for name, tensor in host.items()
        }

    def _host_buffer(self, name: str, out: torch.Tensor) -> torch.Tensor:
        key = (name, tuple(out.shape))
        buffer = self._host_buffers.get(key)
        if buffer is None:
            buffer = self._host_buffers[key] = torch.empty(out.shape, dtype=torch.float32, pin_memory=True)
        return buffer

    def _forward(self, inputs: torch.Tensor, started: Callable[[], Any]) -> Any:
        """The module's forward, through a CUDA graph when asked for and capturable; after a failed capture
        (once, whatever the shape) every call runs eager and ``describe()`` says why. ``started`` marks
        where compute begins (the CUDA event), once, right before the forward or the replay."""
        if self.config.cuda_graph and self._graph_fallback is None:
            try:
                return self._replay(inputs, started)
            except GraphCaptureFailed as exc:
                self._graph_fallback = str(exc)
                self._graphs.clear()  # graphs of earlier shapes would hold their pools for nothing
        started()
        return self._module(inputs)

    def _replay(self, inputs: torch.Tensor, started: Callable[[], Any]) -> Any:
        """The forward through the CUDA graph captured for this input shape (captured on first use);
        inputs are copied into the graph's static buffer before ``started``: that device-to-device copy is
        the graph's input staging, not compute, as TensorRT's static-input copy is not its compute."""
        key = tuple(inputs.shape)
        if key not in self._graphs:
            self._graphs[key] = self._capture(inputs)
        graph, static_input, static_output = self._graphs[key]
        static_input.copy_(inputs)
        started()
        graph.replay()
        return static_output

    def _capture(self, inputs: torch.Tensor) -> tuple[Any, torch.Tensor, Any]:
        """Warm up on a side stream (as capture requires), then capture one forward.

        Errors of the warm-up are the forward's own (out of memory included) and propagate; so does an
        out-of-memory error during the capture. Any other capture error (an op that synchronises on
        data, such as Mask R-CNN's ``nonzero``) raises GraphCaptureFailed.
        """
        static_input = inputs.clone()
        current = torch.cuda.current_stream(self.device)
        side = torch.cuda.Stream(self.device)
        side.wait_stream(current)
        with torch.cuda.stream(side):
            for _ in range(2):
                self._module(static_input)
        current.wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        try:
            # The outer stream context restores the current stream even when torch.cuda.graph's exit
            # fails: it ends the capture before leaving its own stream context.
            with torch.cuda.stream(side), torch.cuda.graph(graph):
                static_output = self._module(static_input)
        except Exception as exc:
            if out_of_memory(exc):
                raise
            del graph  # its private memory pool with it
            with contextlib.suppress(Exception):
                torch.cuda.synchronize(self.device)
            torch.cuda.empty_cache()
            raise GraphCaptureFailed(describe_error(exc)) from exc
        return graph, static_input, static_output

    def _autocast(self) -> Any:
        if self._autocast_dtype is None:
            return torch.autocast(self.device.type, enabled=False)
        # Autocast's cast cache must be off while capturing CUDA graphs (torch's CUDA graphs notes): the
        # cached casts are freed when the autocast context exits, under the captured graph.
        return torch.autocast(
            self.device.type, dtype=self._autocast_dtype, cache_enabled=not self.config.cuda_graph
        )

    def release_cached_shapes(self) -> None:
        """Drop the captured graphs and the pinned buffers (the largest-batch search calls it between
        tries): each graph keeps its own memory pool, one per batch tried."""
        self._graphs.clear()
        self._pinned_buffers.clear()
        self._host_buffers.clear()
        if self.on_cuda:
            torch.cuda.synchronize(self.device)
            torch.cuda.empty_cache()

    def deactivate(self) -> None:
        if self.on_cuda:
            saved = self._saved_flags
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved[:2]
            torch.backends.cudnn.benchmark = saved[2]
            self._graphs.clear()
            self._pinned_buffers.clear()
            self._host_buffers.clear()
            del self._module
            torch.cuda.empty_cache()
        super().deactivate()

    def describe(self) -> dict[str, Any]:
        info: dict[str, Any] = {"torch": torch.__version__, "channels_last": self.config.channels_last}
        if self.on_cuda:
            graph: bool | str = self.config.cuda_graph
            if self._graph_fallback is not None:
                graph = "fallback"
                info["cuda_graph_fallback"] = self._graph_fallback
            info.update(
                tf32=self.config.tf32,
                pinned_memory=self._pinned,
                cudnn_benchmark=self._cudnn_benchmark,
                cuda_graph=graph,
            )
        if self.config.compile is not None:
            info["compile"] = self.config.compile
        if self.on_cuda:
            info["device_name"] = torch.cuda.get_device_name(self.device)
        return info

    def reset_peak_device_memory(self) -> None:
        if self.on_cuda:
            torch.cuda.reset_peak_memory_stats(self.device)

    def peak_device_memory_mb(self) -> float | None:
        if not self.on_cuda:
            return None
        return torch.cuda.max_memory_allocated(self.device) / 2**20


SPEC = BackendSpec(name="torch", config_class=TorchConfig, runner_class=TorchRunner, consumes=MODULE,
                   unavailable=unavailable_reason)  # fmt: skip
