"""The sections of the benchmark YAML below its top level: models, timing, numerics and its datasets,
isolation and the executor.

Every key carries its documentation as ``Field(description=...)``: the JSON schema holds it, and the
YAML reference of the docs site (``docs/reference/yaml.md``) is generated from that schema, so a key
added here without a description shows up there as undocumented, and one added without regenerating
fails ``tests/docs/test_reference_pages.py``.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from segbench.metrics.tensors import TENSOR_TOLERANCES, TensorTolerance
from segbench.models.base import IMAGENET_MEAN, IMAGENET_STD
from segbench.models.registry import MODELS
from segbench.models.weights import RANDOM
from segbench.sweep import SweepConfig


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TimingConfig(_Strict):
    """Warm-up and measurement per cell: both the count and the time must be reached."""

    warmup: int = Field(default=3, ge=0, description="Untimed iterations per cell.")
    iterations: int = Field(default=10, ge=1, description="Timed iterations per cell.")
    warmup_s: float = Field(default=0.0, ge=0, description="Keep warming up at least this many seconds.")
    min_duration_s: float = Field(default=0.0, ge=0, description="Keep measuring at least this many seconds.")
    max_iterations: int = Field(
        default=100_000, ge=1, description="Cap on timed iterations when `min_duration_s` meets a fast cell."
    )
    # Passes rather than more iterations: a burst of contention on a shared machine lasts seconds and the
    # guest cannot see it, so samples taken tens of seconds apart let it spoil one pass, not the cell.
    repeats: int = Field(
        default=1, ge=1,
        description="Passes over the whole timing grid; each cell is measured once per pass. Reports pool "
        "the passes; `segbench compare` judges each run on its fastest pass (lowest p50).",
    )  # fmt: skip


class PreprocessConfig(_Strict):
    """How a ``module:`` model's input is prepared: normalisation (fractions of 255), channel order and
    the size divisor (segbench pads to a multiple of it and crops the output back)."""

    mean: tuple[float, float, float] = Field(
        default=IMAGENET_MEAN, description="Per-channel mean, in fractions of 255."
    )
    std: tuple[float, float, float] = Field(
        default=IMAGENET_STD, description="Per-channel standard deviation, in fractions of 255."
    )
    channel_order: Literal["rgb", "bgr"] = Field(
        default="rgb", description="`bgr`: the channels are flipped before normalising."
    )
    size_divisor: int = Field(
        default=1, ge=1,
        description="The input is padded to a multiple of it inside the wrapped forward (so every backend "
        "and the exported graph see the same input); the output is cropped back.",
    )  # fmt: skip


class ModelEntry(_Strict):
    """One entry of ``models:``: a registered model, a ``module:`` factory or an ``onnx:`` file."""

    name: str = Field(
        default="",
        description="A registered model (`segbench models`), or for a `module:` / `onnx:` entry the label "
        "its rows carry (default: the factory's name, or the file's stem).",
    )
    weights: str = Field(
        default=RANDOM,
        description="`random` (seeded), `trained` (the checkpoint shipped with segbench), or a path to a "
        "`.safetensors` / `.pt` / `.pth` file (`coco` and a `save_pretrained` directory for some models).",
    )
    options: dict[str, Any] = Field(
        default_factory=dict,
        description="Constructor options, checked against the model's signature (for `module:`: the "
        "factory's keyword arguments).",
    )
    sweep: SweepConfig | None = Field(
        default=None, description="This model's own sweep, instead of the top-level one."
    )
    timing: TimingConfig | None = Field(
        default=None, description="This model's own warm-up and iterations (e.g. fewer for a slow detector)."
    )
    module: str | None = Field(
        default=None,
        description="Any torch module by import path instead of a registered model: "
        "`package.module:factory`, built as `factory(**options)`; its task, class count and preprocessing "
        "are declared here.",
    )
    onnx: Path | None = Field(
        default=None,
        description="An ONNX file as the model: timed on the graph backends and checked against onnxruntime "
        "fp32 on the CPU.",
    )
    task: Literal["semantic", "none"] | None = Field(
        default=None,
        description="`module:` / `onnx:` entries only. `semantic`: images, argmax, mIoU; `none` (an `onnx:` "
        "entry's default): random inputs, timing and tensor-level numerics only.",
    )
    num_classes: int | None = Field(
        default=None, ge=1,
        description="`module:` / `onnx:` entries only: the output's class count (default: the dataset's).",
    )  # fmt: skip
    preprocess: PreprocessConfig | None = Field(
        default=None, description="`module:` / `onnx:` entries only: how the input is prepared."
    )

    @model_validator(mode="after")
    def _registered_module_or_onnx(self) -> ModelEntry:
        if self.module is not None and self.onnx is not None:
            raise ValueError("give module: or onnx:, not both")
        if self.module is None and self.onnx is None:
            declared = [
                key for key in ("task", "num_classes", "preprocess") if getattr(self, key) is not None
            ]
            if declared:
                raise ValueError(f"{', '.join(declared)}: only for a module: or onnx: entry (a registered "
                                 "model declares its own)")  # fmt: skip
            if not self.name:
                raise ValueError("name: required key is missing (or give module: or onnx:)")
            if self.name not in MODELS:
                raise ValueError(f"unknown model {self.name!r}; valid models: {', '.join(MODELS)}")
            return self
        if self.module is not None and self.task == "none":
            raise ValueError("task: none is for onnx: entries; a module: entry is a semantic model")
        if self.weights == "trained" or (self.onnx is not None and self.weights != RANDOM):
            raise ValueError("weights: a module: entry takes random or a state dict file; an onnx: entry "
                             "carries its own")  # fmt: skip
        if not self.name and self.onnx is not None:
            self.name = self.onnx.stem
        elif not self.name and self.module is not None:
            self.name = self.module.rpartition(":")[2].split(".")[-1]
        if self.name in MODELS:
            raise ValueError(f"name: {self.name} is a registered model; give this entry another name")
        return self

    @property
    def declared_task(self) -> str:
        """The task this entry serves: declared (module:, onnx:), or the registered model's."""
        if self.onnx is not None:
            return self.task or "none"
        if self.module is not None:
            return self.task or "semantic"
        return self.options.get("task", MODELS[self.name].task)


class ShapesDatasetConfig(_Strict):
    """The synthetic shapes scenes, generated in memory (sample *i* depends only on seed, split and *i*)."""

    kind: Literal["shapes"] = Field(default="shapes", description="The synthetic dataset.")
    num_images: int = Field(
        default=16, ge=1, description="Scenes to start with; an inconclusive verdict doubles the set."
    )
    height: int = Field(default=256, ge=32, description="Scene height in pixels.")
    width: int = Field(default=256, ge=32, description="Scene width in pixels.")
    seed: int = Field(default=0, description="The scenes' seed.")


class FolderDatasetConfig(_Strict):
    """A folder of images and one of semantic label PNGs with the same names (VOC / Cityscapes / ADE20K
    style; palette PNGs are read as indices). Semantic models only."""

    kind: Literal["folder"] = Field(description="Images and label masks on disk.")
    images: Path = Field(description="The image folder.")
    masks: Path = Field(description="The label PNG folder, one file per image under the same name.")
    num_classes: int = Field(ge=1, description="The label set's class count.")
    ignore_index: int = Field(default=255, description="The label value left out of every metric.")
    limit: int | None = Field(
        default=None, ge=1,
        description="Images to start with; the set grows from it up to `max_images` or the folder's size.",
    )  # fmt: skip


class CocoDatasetConfig(_Strict):
    """A COCO-format dataset on disk, for instance (``instances``) and panoptic (``panoptic``) models."""

    kind: Literal["coco"] = Field(description="COCO annotations on disk.")
    images: Path = Field(description="The image folder.")
    instances: Path | None = Field(
        default=None, description="COCO instances JSON (polygon or RLE masks), for instance models."
    )
    panoptic: Path | None = Field(default=None, description="COCO panoptic JSON, for panoptic models.")
    panoptic_masks: Path | None = Field(
        default=None, description="The panoptic PNG folder (default: the JSON's path without `.json`)."
    )
    num_classes: int = Field(
        ge=1,
        description="The class count a model with random weights is built with (category ids up to it, "
        "background 0).",
    )
    limit: int | None = Field(
        default=None, ge=1,
        description="Images to start with; the set grows from it up to `max_images` or the dataset's size.",
    )  # fmt: skip

    @model_validator(mode="after")
    def _has_annotations(self) -> CocoDatasetConfig:
        if self.instances is None and self.panoptic is None:
            raise ValueError("a coco dataset needs instances: JSON, panoptic: JSON, or both")
        return self

    def tasks(self) -> set[str]:
        return {task for task, path in (("instance", self.instances), ("panoptic", self.panoptic)) if path}


DatasetEntry = Annotated[
    ShapesDatasetConfig | FolderDatasetConfig | CocoDatasetConfig, Field(discriminator="kind")
]


# Allowed |backend - baseline| in metric points (percent), per precision: the issue-tracked defaults are
# 0.5 mIoU / 0.2 box AP / 1.0 mask AP / 0.5 PQ points for fp32, looser for reduced precision.
DEFAULT_TOLERANCES: dict[str, dict[str, float]] = {
    "fp32": {"miou": 0.5, "pixel_accuracy": 0.5, "mean_dice": 0.5, "bbox_ap": 0.2, "segm_ap": 1.0,
             "pq": 0.5, "sq": 0.5, "rq": 0.5},
    "fp16": {"miou": 1.0, "pixel_accuracy": 1.0, "mean_dice": 1.0, "bbox_ap": 0.5, "segm_ap": 1.5,
             "pq": 1.0, "sq": 1.0, "rq": 1.0},
    "bf16": {"miou": 1.5, "pixel_accuracy": 1.5, "mean_dice": 1.5, "bbox_ap": 1.0, "segm_ap": 2.0,
             "pq": 1.5, "sq": 1.5, "rq": 1.5},
}  # fmt: skip


class TensorToleranceConfig(_Strict):
    """Overrides of the tensor-level limits for one precision (see segbench.metrics.tensors)."""

    max_rel_err: float | None = Field(
        default=None, ge=0, description="Largest error allowed, relative to the baseline's largest magnitude."
    )
    cosine: float | None = Field(default=None, ge=0, le=1, description="Lowest cosine similarity allowed.")
    argmax_agreement: float | None = Field(
        default=None, ge=0, le=1,
        description="Semantic: the lowest share of pixels whose argmax class agrees.",
    )  # fmt: skip
    detection_agreement: float | None = Field(
        default=None, ge=0, le=1,
        description="Instance: the lowest share of confident baseline detections the backend reproduces.",
    )  # fmt: skip
    score_tol: float | None = Field(
        default=None, ge=0, description="Instance: how far a reproduced detection's score may move."
    )
    box_iou: float | None = Field(
        default=None, ge=0, le=1, description="Instance: the lowest box IoU of a reproduced detection."
    )


PrecisionName = Literal["fp32", "fp16", "bf16"]


class NumericsConfig(_Strict):
    """The numerics check: every backend x precision against the PyTorch fp32 baseline, on the same
    images, at task level (equivalence tests) and tensor level."""

    enabled: bool = Field(default=True, description="Run the numerics check after the timing grid.")
    batch_size: int = Field(default=4, ge=1, description="Batch size of the evaluation runs.")
    relative_floor: float | dict[PrecisionName, float] = Field(
        default=0.99,
        description="A metric must also reach this share of the baseline (MLPerf's \"99% of the "
        'reference"): one number, or one per precision.',
    )
    tensor_images: int = Field(
        default=8, ge=1,
        description="Raw outputs of this many images are compared with the baseline's (max error, cosine, "
        "argmax or detection agreement).",
    )  # fmt: skip
    tensor_tolerance: dict[PrecisionName, TensorToleranceConfig] = Field(
        default_factory=dict, description="Per precision: overrides of the tensor-level limits."
    )
    # Task verdicts are equivalence tests (segbench.metrics.equivalence): judged on the deviation's
    # interval, never on the point estimate alone, so one near-tied detection cannot flip a verdict.
    confidence: float = Field(
        default=0.95, gt=0.5, lt=1,
        description="The paired bootstrap interval of the deviation at this confidence must lie inside the "
        "tolerance band to pass, outside it to fail; across an edge it is inconclusive.",
    )  # fmt: skip
    bootstrap_resamples: int = Field(default=2000, ge=100, description="Resamples of the paired bootstrap.")
    max_images: int = Field(
        default=256, ge=1,
        description="An inconclusive verdict evaluates more images, doubling the set, up to this many.",
    )  # fmt: skip
    tolerance: dict[Literal["fp32", "fp16", "bf16"], float | dict[str, float]] = Field(
        default_factory=dict,
        description="Allowed deviation in metric points, per precision: one number for every metric, or a "
        "mapping metric -> points; unnamed metrics keep their defaults (fp32: 0.5 mIoU / pixel accuracy / "
        "Dice, 0.2 box AP, 1.0 mask AP, 0.5 PQ / SQ / RQ; looser for fp16 and bf16).",
    )
    dataset: DatasetEntry = Field(
        default_factory=ShapesDatasetConfig,
        description="The evaluation set: `shapes` (synthetic), `folder` (semantic labels) or `coco` "
        "(instance / panoptic annotations).",
    )

    @field_validator("tolerance")
    @classmethod
    def _known_non_negative(cls, value: dict[str, float | dict[str, float]]) -> dict:
        for precision, spec in value.items():
            entries = spec.items() if isinstance(spec, dict) else [("all metrics", spec)]
            for metric, tol in entries:
                if metric != "all metrics" and metric not in DEFAULT_TOLERANCES["fp32"]:
                    valid = ", ".join(DEFAULT_TOLERANCES["fp32"])
                    raise ValueError(f"unknown metric {metric!r} for {precision}; valid metrics: {valid}")
                if tol < 0:
                    raise ValueError(f"tolerance for {precision} {metric} must be >= 0, got {tol}")
        return value

    @field_validator("relative_floor")
    @classmethod
    def _floor_in_range(cls, value: float | dict[str, float]) -> float | dict[str, float]:
        for floor in value.values() if isinstance(value, dict) else [value]:
            if not 0 <= floor <= 1:
                raise ValueError(f"relative_floor must lie in [0, 1], got {floor}")
        return value

    def floor(self, precision: PrecisionName) -> float:
        """The share of the baseline each metric must reach at ``precision``."""
        if isinstance(self.relative_floor, dict):
            return self.relative_floor.get(precision, 0.99)
        return self.relative_floor

    def tensor_limits(self, precision: PrecisionName) -> TensorTolerance:
        """The tensor-level limits for ``precision``: the defaults with the YAML's overrides."""
        default = TENSOR_TOLERANCES[precision]
        override = self.tensor_tolerance.get(precision)
        if override is None:
            return default
        return replace(default, **override.model_dump(exclude_none=True))

    def tolerances(self, precision: PrecisionName) -> dict[str, float]:
        """Metric -> allowed |delta| in points for ``precision``."""
        spec = self.tolerance.get(precision)
        defaults = DEFAULT_TOLERANCES[precision]
        if spec is None:
            return dict(defaults)
        if isinstance(spec, dict):
            return {**defaults, **spec}
        return dict.fromkeys(defaults, float(spec))


class IsolationConfig(_Strict):
    """Run each timing cell in its own process: a crash (segfault, abort, CUDA error that poisons the
    context) or a hang fails that cell only. Costs a process start and a model load per cell."""

    subprocess: bool = Field(
        default=False, description="Each timing cell in its own `segbench run` child process."
    )
    timeout_s: float = Field(
        default=600, gt=0, description="Per cell, with `subprocess`: a child still running is a `timeout`."
    )


class ExecutorConfig(_Strict):
    """``executor: {kind: ..., ...}``: the executor and, for ``ray``, where and with what each unit runs."""

    kind: str = Field(
        default="local",
        description="A name in `segbench.bench.executors.EXECUTORS`: `local` (this process) or `ray`.",
    )
    address: str | None = Field(
        default=None,
        description="ray: the cluster (`auto`: the one this machine belongs to; `ray://host:10001`; "
        "null: a local one started for the run).",
    )
    num_gpus: float = Field(
        default=1, gt=0, le=1, description="ray: GPUs per CUDA unit: 1, or a fraction to share a GPU."
    )
    num_cpus: float = Field(
        default=1, gt=0,
        description="ray: CPUs per unit; a node's core count keeps one CPU unit per node at a time.",
    )  # fmt: skip
    accelerator_type: str | None = Field(
        default=None, description="ray: Ray's accelerator label for CUDA units, e.g. `H100`."
    )
    # 0 by default: a timing cell retried silently would hide the crash it is there to report.
    retries: int = Field(
        default=0, ge=0,
        description="ray: re-dispatches of a unit whose worker died (its unfinished cells only); 0: they "
        "fail as `crashed`.",
    )  # fmt: skip
    cache_dir: Path | None = Field(
        default=None,
        description="ray: the export cache every node sees, e.g. on a shared filesystem (default: each "
        "node's own segbench cache).",
    )
