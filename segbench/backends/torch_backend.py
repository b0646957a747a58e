"""PyTorch eager backend: fp32 anywhere, autocast fp16/bf16 on CUDA (bf16 also on the CPU)."""

from __future__ import annotations

import copy
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from pydantic import model_validator

from segbench.backends.base import BackendConfig, Runner
from segbench.backends.spec import MODULE, BackendSpec

AUTOCAST_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


class TorchConfig(BackendConfig):
    name: Literal["torch"] = "torch"
    supported_precisions: ClassVar[dict[str, tuple[str, ...]]] = {
        "cpu": ("fp32", "bf16"),
        "cuda": ("fp32", "fp16", "bf16"),
    }
    channels_last: bool = False
    # TF32 tensor-core math for fp32 convolutions and matmuls on CUDA. Off by default: fp32 results then
    # are fp32 and pass the fp32 numerics check; with TF32 they differ by ~1e-3 relative.
    tf32: bool = False
    # CUDA: stage inputs in page-locked host memory and copy them asynchronously (None: on for cuda).
    pinned_memory: bool | None = None
    # CUDA: capture the forward as a CUDA graph per input shape and replay it (static shapes only).
    cuda_graph: bool = False
    # torch.compile mode; None runs eager.
    compile: Literal["default", "reduce-overhead", "max-autotune"] | None = None

    @model_validator(mode="after")
    def _cuda_only_options(self) -> TorchConfig:
        if self.device != "cuda" and (self.cuda_graph or self.pinned_memory):
            raise ValueError("cuda_graph and pinned_memory need device: cuda")
        return self


def unavailable_reason(config: TorchConfig) -> str | None:
    if config.device == "cuda" and not torch.cuda.is_available():
        return "no CUDA device visible to torch"
    return None


class TorchRunner(Runner):
    device_stages = ("h2d", "compute", "d2h")  # CUDA events, on the GPU only
    config: TorchConfig

    @property
    def device(self) -> torch.device:
        return torch.device(self.config.device)

    def activate(self) -> None:
        # The harness keeps the CPU model for the numerics baseline; a device copy leaves it untouched.
        self._module = self.model if self.device.type == "cpu" else copy.deepcopy(self.model).to(self.device)
        self._memory_format = torch.channels_last if self.config.channels_last else torch.contiguous_format
        self._module = self._module.to(memory_format=self._memory_format).eval()
        if self.config.compile is not None:
            self._module = torch.compile(self._module, mode=self.config.compile)
        self._pinned = (
            self.config.pinned_memory if self.config.pinned_memory is not None else self.device.type == "cuda"
        )
        self._pinned_buffers: dict[tuple[int, ...], torch.Tensor] = {}
        self._graphs: dict[tuple[int, ...], tuple[Any, torch.Tensor, Any]] = {}
        self._autocast_dtype = AUTOCAST_DTYPES.get(self.precision)
        if self.device.type == "cuda":
            # Event pairs around the copy in, the forward and the copy out, on the current stream.
            self._events = [torch.cuda.Event(enable_timing=True) for _ in range(4)]
            self._saved_tf32 = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = self.config.tf32

    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        inputs = torch.from_numpy(feeds[self.model.input_names[0]])
        cuda = self.device.type == "cuda"
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
            if cuda:
                before_forward.record()
            raw = self._replay(inputs) if self.config.cuda_graph else self._module(inputs)
            if cuda:
                after_forward.record()
        outputs = raw if isinstance(raw, tuple) else (raw,)
        result = {
            name: out.float().cpu().numpy()
            for name, out in zip(self.model.output_names, outputs, strict=True)
        }
        if cuda:
            after_copy.record()
            after_copy.synchronize()
            self.last_stages_ms = {
                "h2d": before_copy.elapsed_time(before_forward),
                "compute": before_forward.elapsed_time(after_forward),
                "d2h": after_forward.elapsed_time(after_copy),
            }
        return result

    def _replay(self, inputs: torch.Tensor) -> Any:
        """The forward through a CUDA graph captured for this input shape (captured on first use, after
        warm-up on a side stream as capture requires); inputs are copied into the graph's static buffer."""
        key = tuple(inputs.shape)
        if key not in self._graphs:
            static_input = inputs.clone()
            side = torch.cuda.Stream(self.device)
            side.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(side):
                for _ in range(2):
                    self._module(static_input)
            torch.cuda.current_stream(self.device).wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                static_output = self._module(static_input)
            self._graphs[key] = (graph, static_input, static_output)
        graph, static_input, static_output = self._graphs[key]
        static_input.copy_(inputs)
        graph.replay()
        return static_output

    def _autocast(self) -> Any:
        if self._autocast_dtype is None:
            return torch.autocast(self.device.type, enabled=False)
        return torch.autocast(self.device.type, dtype=self._autocast_dtype)

    def deactivate(self) -> None:
        if self.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = self._saved_tf32
            self._graphs.clear()
            self._pinned_buffers.clear()
            del self._module
            torch.cuda.empty_cache()
        super().deactivate()

    def describe(self) -> dict[str, Any]:
        info: dict[str, Any] = {"torch": torch.__version__, "channels_last": self.config.channels_last}
        if self.device.type == "cuda":
            info.update(tf32=self.config.tf32, pinned_memory=self._pinned, cuda_graph=self.config.cuda_graph)
        if self.config.compile is not None:
            info["compile"] = self.config.compile
        if self.device.type == "cuda":
            info["device_name"] = torch.cuda.get_device_name(self.device)
        return info

    def reset_peak_device_memory(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)

    def peak_device_memory_mb(self) -> float | None:
        if self.device.type != "cuda":
            return None
        return torch.cuda.max_memory_allocated(self.device) / 2**20


SPEC = BackendSpec(name="torch", config_class=TorchConfig, runner_class=TorchRunner, consumes=MODULE,
                   unavailable=unavailable_reason)  # fmt: skip
