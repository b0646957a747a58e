"""The model registry: one line per model, and the single way to build one.

Adding a model means one new file with a constructor function and one ``ModelSpec`` line below.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from segbench import __version__
from segbench.cache_dir import cache_key, cache_root
from segbench.errors import ConfigError, WeightsError
from segbench.files import atomic_write_bytes
from segbench.models import fcn, mask2former, mask_rcnn, segnet, smp_models, torchvision_models, unet
from segbench.models.base import SegmentationModel
from segbench.models.weights import (
    RANDOM,
    TRAINED,
    apply_state_dict,
    check_state_dict,
    checkpoint_metadata,
    load_state_dict,
    state_dict_shapes,
    trained_checkpoint_path,
)


@dataclass(frozen=True)
class ModelSpec:
    name: str
    task: str
    builder: Callable[..., SegmentationModel]
    description: str
    # Named weights besides random/trained, e.g. "coco": a function of the options -> the file to read.
    named_weights: Mapping[str, Callable[[Mapping[str, Any]], Path]] = field(default_factory=dict)
    # Weights given as a directory (a transformers save_pretrained folder): the options it implies.
    directory_options: Callable[[Path], dict[str, Any]] | None = None
    # The op types of its exported graph that a runtime may leave off TensorRT (Mask R-CNN's NMS and the
    # RoiAlign it feeds), known before export so a dry run can say how a graph will be split: () when
    # there are none, None when not checked. The rest of the graph TensorRT takes whole; the readiness
    # test (tests/export/test_tensorrt_readiness.py) checks both on each export.
    data_dependent_ops: tuple[str, ...] | None = None

    def option_names(self) -> list[str]:
        return list(inspect.signature(self.builder).parameters)


MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec("fcn32s", "semantic", fcn.fcn32s, "FCN-32s, VGG backbone", data_dependent_ops=()),
        ModelSpec(
            "fcn16s", "semantic", fcn.fcn16s, "FCN-16s, VGG backbone, pool4 skip", data_dependent_ops=()
        ),
        ModelSpec(
            "fcn8s", "semantic", fcn.fcn8s, "FCN-8s, VGG backbone, pool3 + pool4 skips", data_dependent_ops=()
        ),
        ModelSpec(
            "unet", "semantic", unet.unet, "U-Net, 4 down / 4 up, skip concatenation", data_dependent_ops=()
        ),
        ModelSpec("segnet", "semantic", segnet.segnet, "SegNet, VGG16-BN, max-unpooling by pool indices"),
        ModelSpec("unet_resnet34", "semantic", smp_models.unet_resnet34, "U-Net, ResNet encoder (smp)"),
        ModelSpec(
            "linknet_resnet34", "semantic", smp_models.linknet_resnet34, "LinkNet, ResNet encoder (smp)"
        ),
        ModelSpec(
            "deeplabv3plus_resnet50", "semantic", smp_models.deeplabv3plus_resnet50, "DeepLabV3+ (smp)"
        ),
        ModelSpec("pspnet_resnet50", "semantic", smp_models.pspnet_resnet50, "PSPNet, stride 8 (smp)"),
        ModelSpec(
            "unetplusplus_resnet34", "semantic", smp_models.unetplusplus_resnet34, "U-Net++, ResNet (smp)"
        ),
        ModelSpec(
            "deeplabv3_resnet50",
            "semantic",
            torchvision_models.deeplabv3_resnet50,
            "DeepLabV3, dilated ResNet, ASPP (torchvision)",
            named_weights={"coco": torchvision_models.coco_checkpoint(torchvision_models.DEEPLABV3)},
        ),
        ModelSpec(
            "fcn_resnet50",
            "semantic",
            torchvision_models.fcn_resnet50,
            "FCN head, dilated ResNet (torchvision)",
            named_weights={"coco": torchvision_models.coco_checkpoint(torchvision_models.FCN)},
        ),
        ModelSpec(
            "lraspp_mobilenet_v3_large",
            "semantic",
            torchvision_models.lraspp_mobilenet_v3_large,
            "LR-ASPP, MobileNetV3-Large (torchvision)",
            named_weights={"coco": torchvision_models.coco_checkpoint(torchvision_models.LRASPP)},
        ),
        ModelSpec(
            "mask_rcnn",
            "instance",
            mask_rcnn.mask_rcnn,
            "Mask R-CNN (torchvision), static-shape deploy",
            named_weights={"coco": mask_rcnn.torchvision_coco_checkpoint},
            data_dependent_ops=("NonMaxSuppression", "RoiAlign"),
        ),
        ModelSpec(
            "mask2former",
            "panoptic",
            mask2former.mask2former,
            "Mask2Former (transformers)",
            directory_options=lambda directory: {"config": str(directory)},
            data_dependent_ops=(),
        ),
    )
}


def get_spec(name: str) -> ModelSpec:
    try:
        return MODELS[name]
    except KeyError:
        raise ConfigError(f"unknown model {name!r}; valid models: {', '.join(MODELS)}") from None


def _construct(spec: ModelSpec, options: Mapping[str, Any]) -> SegmentationModel:
    try:
        inspect.signature(spec.builder).bind(**options)
    except TypeError:
        unknown = sorted(set(options) - set(spec.option_names()))
        raise ConfigError(
            f"unknown option(s) {', '.join(unknown)} for model {spec.name}; "
            f"valid options: {', '.join(spec.option_names())}"
        ) from None
    try:
        return spec.builder(**options)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"model {spec.name}: {exc}") from None


def validate_model(name: str, options: Mapping[str, Any] | None = None, weights: str = RANDOM) -> None:
    """Check a model name, its options and its weights file without building the model for real.

    The model is built on the meta device (no memory, no init time); a weights file is read and its
    keys and shapes are compared with the model's, so a bad file fails before any benchmark starts.
    """
    spec = get_spec(name)
    resolved = resolve_options(name, weights, options)
    with torch.device("meta"):
        model = _construct(spec, resolved)
    path = weights_path(name, weights, resolved)
    if path is not None:
        check_state_dict(model, state_dict_shapes(path), source=str(path))


def weights_path(name: str, weights: str, options: Mapping[str, Any] | None = None) -> Path | None:
    """The file behind a ``weights`` setting (None for random init); it must exist."""
    if weights == RANDOM:
        return None
    named = get_spec(name).named_weights
    if weights == TRAINED:
        path = trained_checkpoint_path(name)
    elif weights in named:
        path = named[weights](dict(options or {}))
    elif Path(weights).is_dir() and get_spec(name).directory_options is not None:
        path = Path(weights) / "model.safetensors"
    else:
        path = Path(weights)
    if not path.is_file():
        if weights in named:
            raise WeightsError(
                f"{weights} weights for {name} are read from {path}, which does not exist: copy the file "
                "there (torch hub cache) or give its path as weights"
            )
        if weights == TRAINED:
            raise WeightsError(f"no trained checkpoint is packaged for model {name} (looked for {path})")
        raise WeightsError(f"weights file not found: {path}")
    return path


def resolve_options(name: str, weights: str, options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Constructor options: those recorded in a segbench checkpoint, overridden by ``options``."""
    path = weights_path(name, weights, options)
    merged: dict[str, Any] = {}
    if path is not None and path.suffix == ".safetensors":
        merged.update(checkpoint_metadata(path).get("options", {}))
    directory_options = get_spec(name).directory_options
    if path is not None and directory_options is not None and Path(weights).is_dir():
        merged.update(directory_options(Path(weights)))
    merged.update(options or {})
    return merged


def build_model(
    name: str, weights: str = RANDOM, options: Mapping[str, Any] | None = None, seed: int = 0
) -> SegmentationModel:
    """Build model ``name`` in eval mode with ``weights``: "random" (seeded), "trained", or a file path."""
    spec = get_spec(name)
    resolved = resolve_options(name, weights, options)
    # Seeded init without disturbing the caller's global RNG state.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = _construct(spec, resolved)
    path = weights_path(name, weights, resolved)
    if path is not None:
        apply_state_dict(model, load_state_dict(path), source=str(path))
    model.options = resolved
    model.weights = weights
    return model.eval()


def model_stats(
    name: str, options: Mapping[str, Any] | None = None, height: int = 512, width: int = 512
) -> dict:
    """Parameter count and GFLOPs (multiply-add = 2 FLOPs) of one forward at 1 x 3 x height x width.

    Counted on the meta device, so even the full-width networks cost no memory or time. A network that
    cannot run there (Mask R-CNN's data-dependent NMS, Mask2Former's real tensors made in forward) is
    counted on one real CPU forward instead: seeded weights, a seeded input, batch 1, no grad. That count
    takes seconds, so it is kept in segbench's cache (see ``_stored_count``). GFLOPs are None only when
    that forward fails too.
    """
    key = (name, json.dumps(dict(options or {}), sort_keys=True, default=str), height, width)
    if key not in _COUNTED:
        _COUNTED[key] = _count_stats(name, dict(options or {}), height, width)
    return dict(_COUNTED[key])


# model_stats per (name, options as JSON text, height, width): counted once per process.
_COUNTED: dict[tuple[str, str, int, int], dict] = {}


def _count_stats(name: str, options: dict[str, Any], height: int, width: int) -> dict:
    spec = get_spec(name)
    with torch.device("meta"):
        model = _construct(spec, options).eval()
        gflops = _count_gflops(model, torch.empty(1, 3, height, width))
    if gflops is not None:
        return {"params": sum(p.numel() for p in model.parameters()), "gflops": gflops}
    path = _stored_count(spec, options, height, width)
    try:
        stored = json.loads(path.read_text(encoding="utf-8"))
        return {"params": int(stored["params"]), "gflops": stored["gflops"]}
    except (OSError, ValueError, KeyError, TypeError):
        pass  # not counted yet, or an unreadable entry: count again
    # Some networks need data: nonzero after NMS, tables built from real tensors. Static shapes after NMS
    # (Mask R-CNN's fixed detections, Mask2Former's fixed queries) make the count of one real forward
    # that of every forward.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = _construct(spec, options).eval()
        image = torch.randn(1, 3, height, width)
    stats = {"params": sum(p.numel() for p in model.parameters()), "gflops": _count_gflops(model, image)}
    if stats["gflops"] is not None:
        # A read-only cache costs the next process the same seconds, nothing else.
        with contextlib.suppress(OSError):
            atomic_write_bytes(path, json.dumps(stats).encode())
    return stats


def _stored_count(spec: ModelSpec, options: dict[str, Any], height: int, width: int) -> Path:
    """Where a real-forward count is kept: keyed by everything that decides it, the network's source
    file and the torch and segbench versions included, so an edited network or an upgrade counts again."""
    source = inspect.getsourcefile(spec.builder)
    code = hashlib.sha256(Path(source).read_bytes()).hexdigest() if source else ""
    key = cache_key([spec.name, options, height, width, code, torch.__version__, __version__])
    return cache_root() / "model-stats" / f"{spec.name}-{key}.json"


def _count_gflops(model: SegmentationModel, image: torch.Tensor) -> float | None:
    counter = FlopCounterMode(display=False)
    try:
        with counter, torch.no_grad():
            model(image)
    except Exception:  # e.g. a missing meta kernel (a RuntimeError subclass): try the next way
        return None  # no figure rather than a wrong one; a count must never fail a run
    return counter.get_total_flops() / 1e9
