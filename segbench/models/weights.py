"""Where model weights come from: seeded random init, the packaged trained checkpoints, or a local file.

Only safe formats are read: safetensors, or ``torch.load(weights_only=True)`` for ``.pt``/``.pth``.
A packaged checkpoint records the constructor options it was trained with in its safetensors metadata,
so ``weights: trained`` rebuilds exactly that architecture.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from segbench.errors import WeightsError, first_line

RANDOM = "random"
TRAINED = "trained"
CHECKPOINT_DIR = "checkpoints"


def trained_checkpoint_path(model_name: str) -> Path:
    """Path of the packaged checkpoint for ``model_name`` (which may not exist)."""
    checkpoint = resources.files("segbench.models") / CHECKPOINT_DIR / f"{model_name}.safetensors"
    return Path(str(checkpoint))


def checkpoint_metadata(path: Path) -> dict[str, Any]:
    """The JSON metadata segbench stores in a safetensors checkpoint ({} when there is none)."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            raw = handle.metadata() or {}
    except Exception as exc:  # safetensors raises several types for corrupt headers
        raise WeightsError(f"cannot read weights file {path}: {exc}") from exc
    return {key: _json_or_text(value) for key, value in raw.items()}


def _json_or_text(value: str) -> Any:
    # segbench writes JSON values; other tools write plain strings (transformers: {"format": "pt"}).
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        return value


def load_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a state dict from ``.safetensors`` or ``.pt``/``.pth`` (weights_only), as float32 tensors."""
    state = _read_state_dict(Path(path), mmap=False)
    return {k: v.float() if v.is_floating_point() else v for k, v in state.items()}


def state_dict_shapes(path: str | Path) -> dict[str, torch.Size]:
    """Names and shapes of a weights file's tensors without reading their data: the safetensors header,
    or a memory-mapped ``.pt``. Validation uses it, so a large checkpoint is read once, when built."""
    path = Path(path)
    if path.suffix == ".safetensors" and path.is_file():
        try:
            with safe_open(str(path), framework="pt") as handle:
                keys = handle.keys()  # the handle is not a mapping: it cannot be iterated itself
                return {key: torch.Size(handle.get_slice(key).get_shape()) for key in keys}
        except Exception as exc:  # safetensors raises several types for corrupt headers
            raise WeightsError(f"cannot read weights file {path}: {first_line(exc)}") from exc
    return {key: tensor.shape for key, tensor in _read_state_dict(path, mmap=True).items()}


def _read_state_dict(path: Path, mmap: bool) -> Mapping[str, torch.Tensor]:
    if not path.is_file():
        raise WeightsError(f"weights file not found: {path}")
    state: object  # what the file holds, checked below to be a state dict of tensors
    if path.suffix == ".safetensors":
        try:
            state = load_file(str(path))
        except Exception as exc:
            raise WeightsError(f"cannot read weights file {path}: {exc}") from exc
    elif path.suffix in (".pt", ".pth"):
        try:
            with warnings.catch_warnings():
                # torch warns about the pickle protocol of files it then may refuse; the refusal is
                # reported below as one line, the warning would only clutter it.
                warnings.simplefilter("ignore", UserWarning)
                state = _torch_load(path, mmap)
        except Exception as exc:
            reason = first_line(exc) or type(exc).__name__
            raise WeightsError(f"cannot read weights file {path}: {reason}") from exc
        # Training scripts commonly wrap the state dict; accept the usual keys.
        for key in ("state_dict", "model"):
            if isinstance(state, Mapping) and isinstance(state.get(key), Mapping):
                state = state[key]
    else:
        raise WeightsError(
            f"unsupported weights format {path.suffix!r} for {path}: use .safetensors, .pt or .pth"
        )
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"weights file {path} does not contain a state dict of tensors")
    return state


def _torch_load(path: Path, mmap: bool) -> object:
    if mmap:
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:
            pass  # files from before torch's zip format cannot be memory-mapped: read them whole
    return torch.load(path, map_location="cpu", weights_only=True)


def check_state_dict(model: torch.nn.Module, shapes: Mapping[str, torch.Size], source: str) -> None:
    """Raise WeightsError, in one readable line, unless ``shapes`` has exactly the model's keys and shapes.

    Works on a model built on the meta device, so weights can be validated before anything is allocated.
    """
    own = model.state_dict()
    # BatchNorm's step counter is bookkeeping, not a weight: checkpoints saved with frozen batch norm
    # (torchvision's detection weights) have none, and a non-strict load leaves it as it is.
    missing = sorted(k for k in set(own) - set(shapes) if not k.endswith("num_batches_tracked"))
    unexpected = sorted(set(shapes) - set(own))
    wrong_shape = [k for k in own if k in shapes and own[k].shape != shapes[k]]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing (e.g. {missing[0]})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
    if wrong_shape:
        key = wrong_shape[0]
        problems.append(
            f"{len(wrong_shape)} with wrong shape (e.g. {key}: file {tuple(shapes[key])}, "
            f"model {tuple(own[key].shape)})"
        )
    if problems:
        raise WeightsError(f"weights {source} do not fit the model: " + "; ".join(problems) + " parameters")


def apply_state_dict(model: torch.nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    """Load ``state`` strictly, after checking it fits."""
    check_state_dict(model, {key: tensor.shape for key, tensor in state.items()}, source)
    model.load_state_dict(state, strict=False)  # check_state_dict was strict, bar the BN counters


def round_to_checkpoint_precision(model: torch.nn.Module) -> None:
    """Round the model's floating-point tensors to float16 and back, in place: the values a checkpoint
    written by ``save_checkpoint`` will hold. Training scripts validate after this, so the figure they
    record is the one users of the shipped checkpoint get."""
    with torch.no_grad():
        for tensor in model.state_dict().values():
            if tensor.is_floating_point():
                tensor.copy_(tensor.half().float())


def save_checkpoint(
    model: torch.nn.Module,
    path: str | Path,
    options: Mapping[str, Any],
    extra: Mapping[str, Any] | None = None,
) -> None:
    """Write a safetensors checkpoint with its constructor options (and any extra facts) as metadata.

    Floating-point tensors are stored in float16 to keep the packaged checkpoints small; they are
    loaded back as float32, and every baseline is computed from the loaded values.
    """
    state = {
        k: (v.detach().half() if v.is_floating_point() else v.detach()).contiguous()
        for k, v in model.state_dict().items()
    }
    metadata = {"options": json.dumps(dict(options))}
    metadata.update({k: json.dumps(v) for k, v in (extra or {}).items()})
    save_file(state, str(path), metadata=metadata)
