"""Page-locked host staging for the TensorRT runner's copies to and from the GPU."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


class HostStaging:
    """Page-locked host buffers for a device runner's copies, one per (name, shape, dtype), reused.

    Copies from pageable memory go through a driver bounce buffer and cannot overlap; the torch runner
    stages through pinned memory, so the TensorRT runner does too and their copy times compare. With
    ``pinned=False`` (tests on the CPU) the buffers are ordinary host tensors.
    """

    def __init__(self, pinned: bool) -> None:
        self.pinned = pinned
        self._buffers: dict[tuple[Any, ...], torch.Tensor] = {}

    def buffer(self, key: str, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        found = self._buffers.get((key, shape, dtype))
        if found is None:
            found = self._buffers[(key, shape, dtype)] = torch.empty(
                shape, dtype=dtype, pin_memory=self.pinned
            )
        return found

    def to_device(self, feeds: dict[str, np.ndarray], device: torch.device) -> dict[str, torch.Tensor]:
        """Each array copied into its staging buffer, then queued to ``device`` on the current stream."""
        moved = {}
        for name, array in feeds.items():
            host = torch.from_numpy(np.ascontiguousarray(array))
            staging = self.buffer(f"in:{name}", tuple(host.shape), host.dtype).copy_(host)
            moved[name] = staging.to(device, non_blocking=self.pinned)
        return moved

    def to_host(self, outputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Outputs queued into their host buffers (half and bfloat16 as float32: numpy has no bfloat16);
        synchronise the stream before reading them."""
        host = {}
        for name, tensor in outputs.items():
            if tensor.dtype in (torch.float16, torch.bfloat16):
                tensor = tensor.float()
            buffer = self.buffer(f"out:{name}", tuple(tensor.shape), tensor.dtype)
            host[name] = buffer.copy_(tensor, non_blocking=self.pinned)
        return host

    def clear(self) -> None:
        self._buffers.clear()
