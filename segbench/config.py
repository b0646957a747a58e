"""The benchmark YAML schema, validated up front so a bad file fails before any model is built.

Each backend owns its config class (in its backend file); the ``backends`` list here is validated as
the union of the registered backends' classes, discriminated by ``name``. The union is built when a
config is validated, not at import, so backends a plugin registers are part of it.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails

from segbench.backends import BACKENDS, BackendConfig
from segbench.errors import ConfigError, SegbenchError
from segbench.metrics.tensors import TENSOR_TOLERANCES, TensorTolerance
from segbench.models.base import IMAGENET_MEAN, IMAGENET_STD
from segbench.models.imported import import_factory
from segbench.models.onnx_graph import OnnxGraphModel
from segbench.models.registry import MODELS, validate_model
from segbench.models.weights import RANDOM
from segbench.sweep import SweepConfig


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TimingConfig(_Strict):
    """Warm-up and measurement per cell: both the count and the time must be reached."""

    warmup: int = Field(default=3, ge=0)
    iterations: int = Field(default=10, ge=1)
    warmup_s: float = Field(default=0.0, ge=0)  # keep warming up at least this long
    min_duration_s: float = Field(default=0.0, ge=0)  # keep measuring at least this long
    max_iterations: int = Field(default=100_000, ge=1)  # cap for min_duration_s on fast cells
    # Passes over the whole timing grid. Each cell is measured once per pass, so its samples come from
    # moments tens of seconds apart: a burst of contention on a shared machine (it lasts seconds and the
    # guest cannot see it) then spoils one pass of a cell, not the cell. Reports pool the passes; compare
    # judges the median of the per-pass p50s.
    repeats: int = Field(default=1, ge=1)


class PreprocessConfig(_Strict):
    """How a ``module:`` model's input is prepared: normalisation (fractions of 255), channel order and
    the size divisor (segbench pads to a multiple of it and crops the output back)."""

    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    channel_order: Literal["rgb", "bgr"] = "rgb"
    size_divisor: int = Field(default=1, ge=1)


class ModelEntry(_Strict):
    # A registered model (segbench models), or for a module: entry the label its rows carry
    # (default: the factory's name).
    name: str = ""
    # "random" (seeded), "trained" (the checkpoint packaged with segbench) or a path to weights.
    weights: str = RANDOM
    options: dict[str, Any] = Field(default_factory=dict)
    # Override the top-level sweep / timing for this model (e.g. fewer iterations for a slow detector).
    sweep: SweepConfig | None = None
    timing: TimingConfig | None = None
    # Any torch module by import path instead of a registered model: "package.module:factory", built as
    # factory(**options); its task, class count and preprocessing are declared here.
    module: str | None = None
    # Or an ONNX file as the model: timed on the graph backends, checked against onnxruntime fp32 on the
    # CPU; task none (the default for it) means timing and tensor-level numerics only.
    onnx: Path | None = None
    task: Literal["semantic", "none"] | None = None
    num_classes: int | None = Field(default=None, ge=1)
    preprocess: PreprocessConfig | None = None

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
    kind: Literal["shapes"] = "shapes"
    num_images: int = Field(default=16, ge=1)
    height: int = Field(default=256, ge=32)
    width: int = Field(default=256, ge=32)
    seed: int = 0


class FolderDatasetConfig(_Strict):
    kind: Literal["folder"]
    images: Path
    masks: Path
    num_classes: int = Field(ge=1)
    ignore_index: int = 255
    limit: int | None = Field(default=None, ge=1)


class CocoDatasetConfig(_Strict):
    """A COCO-format dataset on disk, for instance (``instances``) and panoptic (``panoptic``) models."""

    kind: Literal["coco"]
    images: Path
    instances: Path | None = None  # COCO instances JSON (polygon or RLE masks)
    panoptic: Path | None = None  # COCO panoptic JSON
    panoptic_masks: Path | None = None  # its PNG folder (default: the JSON's path without .json)
    # The class count a model with random weights is built with (category ids up to it, background 0).
    num_classes: int = Field(ge=1)
    limit: int | None = Field(default=None, ge=1)

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

    max_rel_err: float | None = Field(default=None, ge=0)
    cosine: float | None = Field(default=None, ge=0, le=1)
    argmax_agreement: float | None = Field(default=None, ge=0, le=1)
    detection_agreement: float | None = Field(default=None, ge=0, le=1)
    score_tol: float | None = Field(default=None, ge=0)
    box_iou: float | None = Field(default=None, ge=0, le=1)


PrecisionName = Literal["fp32", "fp16", "bf16"]


class NumericsConfig(_Strict):
    enabled: bool = True
    batch_size: int = Field(default=4, ge=1)
    # A metric must also reach this share of the baseline (MLPerf-style): one number, or per precision.
    relative_floor: float | dict[PrecisionName, float] = 0.99
    # Raw outputs of this many images are compared with the baseline's (cosine, argmax / detections).
    tensor_images: int = Field(default=8, ge=1)
    tensor_tolerance: dict[PrecisionName, TensorToleranceConfig] = Field(default_factory=dict)
    # Task verdicts are equivalence tests (segbench.metrics.equivalence): the paired bootstrap interval
    # of the deviation at this confidence must lie inside the tolerance band to pass, outside it to fail.
    confidence: float = Field(default=0.95, gt=0.5, lt=1)
    bootstrap_resamples: int = Field(default=2000, ge=100)
    # An inconclusive verdict evaluates more images, doubling the set, up to this many.
    max_images: int = Field(default=256, ge=1)
    # Per precision: one number for every metric, or a mapping metric -> points; unnamed metrics keep
    # their defaults.
    tolerance: dict[Literal["fp32", "fp16", "bf16"], float | dict[str, float]] = Field(default_factory=dict)
    dataset: DatasetEntry = Field(default_factory=ShapesDatasetConfig)

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

    subprocess: bool = False
    timeout_s: float = Field(default=600, gt=0)


class ExecutorConfig(_Strict):
    """``executor: {kind: ..., ...}``: the executor and, for ``ray``, where and with what each unit runs."""

    kind: str = "local"  # a name in segbench.bench.executors.EXECUTORS (inline, subprocess: local)
    # ray: the cluster ("auto": the one this machine belongs to; "ray://host:10001"; None: a local one).
    address: str | None = None
    num_gpus: float = Field(default=1, gt=0, le=1)  # per CUDA unit: 1, or a fraction to share a GPU
    num_cpus: float = Field(default=1, gt=0)  # per unit; a node's core count keeps one CPU unit per node
    accelerator_type: str | None = None  # ray's accelerator label for CUDA units, e.g. "H100"
    # Whole-unit re-dispatches of a unit whose worker died (its unfinished cells only); 0: they fail.
    retries: int = Field(default=0, ge=0)
    cache_dir: Path | None = None  # the export cache every node sees (default: each node's segbench cache)


class BenchmarkConfig(_Strict):
    name: str = "benchmark"
    seed: int = 0
    models: list[ModelEntry] = Field(min_length=1)
    # Each entry is validated as its backend's config class (see ``_schema``).
    backends: list[BackendConfig] = Field(min_length=1)
    sweep: SweepConfig = Field(default_factory=SweepConfig)
    timing: TimingConfig = Field(default_factory=TimingConfig)
    numerics: NumericsConfig = Field(default_factory=NumericsConfig)
    isolation: IsolationConfig = Field(default_factory=IsolationConfig)
    # Where the device stages run (segbench.bench.executors): "local" in this process (each timing cell in
    # a child process with isolation.subprocess), "ray" one task per unit on a cluster; a name or an
    # ExecutorConfig mapping. None: local. "inline" and "subprocess" still read as local without and with
    # isolation.
    executor: str | ExecutorConfig | None = None

    @field_validator("executor", mode="before")
    @classmethod
    def _executor_setting(cls, value: Any) -> Any:
        """A mapping is validated here so its errors name its own keys, not the union's members."""
        if value is None or isinstance(value, str | ExecutorConfig):
            return value
        if not isinstance(value, dict):
            raise ValueError("expected an executor name or a mapping {kind: ..., ...}")
        try:
            return ExecutorConfig.model_validate(value)
        except ValidationError as exc:
            raise ValueError(_format_error(exc.errors()[0])) from None

    @model_validator(mode="after")
    def _backend_artifacts(self) -> BenchmarkConfig:
        names = [entry.name for entry in self.models]
        for index, backend in enumerate(self.backends):
            where = f"backends[{index}]"
            if backend.model is not None and backend.model not in names:
                raise ValueError(
                    f"{where}.model: {backend.model} is not in models (it has: {', '.join(names)})"
                )
            if backend.artifact is None:
                continue
            suffixes = BACKENDS[backend.name].artifact_suffixes
            if backend.artifact.suffix not in suffixes:
                raise ValueError(
                    f"{where}.artifact: {backend.name} runs {' or '.join(suffixes)} files, "
                    f"not {backend.artifact.name}"
                )
            if backend.model is None and len(set(names)) > 1:
                raise ValueError(f"{where}.artifact: name the model it belongs to with model: NAME")
        return self

    @model_validator(mode="after")
    def _models_buildable(self) -> BenchmarkConfig:
        dataset = self.numerics.dataset
        for entry in self.models:
            task = entry.declared_task
            if self.numerics.enabled and isinstance(dataset, FolderDatasetConfig) and task != "semantic":
                raise ValueError(
                    f"model {entry.name} is a {task} model, but a folder dataset has semantic labels only; "
                    "use the shapes or a coco dataset, or set numerics.enabled: false"
                )
            if (
                self.numerics.enabled
                and isinstance(dataset, CocoDatasetConfig)
                and task not in dataset.tasks()
            ):
                needs = {"instance": "instances", "panoptic": "panoptic"}.get(task)
                hint = f"give the dataset's {needs}: JSON" if needs else "use a folder dataset"
                raise ValueError(f"model {entry.name} is a {task} model: the coco dataset has no {task} "
                                 f"labels ({hint}, or set numerics.enabled: false)")  # fmt: skip
            try:
                if entry.module is not None:
                    import_factory(entry.module)  # importable now, or one line naming why not
                    continue
                if entry.onnx is not None:
                    onnx_model(self, entry)  # a readable graph segbench can feed, or one line why not
                    continue
                validate_model(entry.name, self.model_options(entry), entry.weights)
            except SegbenchError as exc:
                raise ValueError(str(exc)) from None
        return self

    def model_options(self, entry: ModelEntry) -> dict[str, Any]:
        """The options a registered model is built with: with random weights and no ``num_classes`` of
        its own, the evaluation dataset's class count (so its outputs can be scored)."""
        options = dict(entry.options)
        if entry.module is None and entry.weights == RANDOM and "num_classes" not in options:
            options["num_classes"] = self.dataset_num_classes()
        return options

    def dataset_num_classes(self) -> int:
        dataset = self.numerics.dataset
        if isinstance(dataset, FolderDatasetConfig | CocoDatasetConfig):
            return dataset.num_classes
        from segbench.data.shapes import NUM_CLASSES

        return NUM_CLASSES

    def sweep_for(self, entry: ModelEntry, backend: BackendConfig) -> SweepConfig:
        """The most specific sweep: the backend entry's, else the model entry's, else the top-level one."""
        return backend.sweep or entry.sweep or self.sweep


_SCHEMAS: dict[tuple[type[BackendConfig], ...], type[BenchmarkConfig]] = {}


def _schema() -> type[BenchmarkConfig]:
    """BenchmarkConfig with ``backends`` typed as the union of the backends registered now."""
    classes = tuple(spec.config_class for spec in BACKENDS.values())
    if classes not in _SCHEMAS:
        # A union built at runtime, from the registry: no static type for mypy to check.
        entry = Annotated[Union[classes], Field(discriminator="name")]  # type: ignore[valid-type]  # noqa: UP007
        _SCHEMAS[classes] = create_model(
            "BenchmarkConfig",
            __base__=BenchmarkConfig,
            __module__=__name__,
            backends=(list[entry], Field(min_length=1)),
        )
    return _SCHEMAS[classes]


def _union_tags() -> set[str]:
    return {*BACKENDS, "shapes", "folder", "coco"}


def onnx_model(config: BenchmarkConfig, entry: ModelEntry) -> OnnxGraphModel:
    """An ``onnx:`` entry's model: the graph read, with its declared task and preprocessing."""
    assert entry.onnx is not None, f"{entry.name} is not an onnx: entry"
    preprocess = entry.preprocess or PreprocessConfig()
    task = entry.declared_task
    num_classes = entry.num_classes or (config.dataset_num_classes() if task == "semantic" else 1)
    return OnnxGraphModel(entry.onnx, task, num_classes, preprocess.mean, preprocess.std,
                          preprocess.channel_order, seed=config.seed)  # fmt: skip


def _format_error(error: ErrorDetails) -> str:
    location = ""
    for part in error["loc"]:
        if isinstance(part, int):
            location += f"[{part}]"
        elif part not in _union_tags():  # pydantic puts the union member's tag in the location
            location += f".{part}" if location else str(part)
    kind = error["type"]
    if kind == "extra_forbidden":
        return f"{location}: unknown key"
    if kind == "missing":
        return f"{location}: required key is missing"
    if kind == "union_tag_invalid":
        tag, expected = error["ctx"]["tag"], error["ctx"]["expected_tags"]
        what = "backend" if location.startswith("backends") else "kind"
        return f"{location}: unknown {what} {tag!r}; valid: {expected.replace(chr(39), '')}"
    message = error["msg"].removeprefix("Value error, ")
    return f"{location}: {message}" if location else message


def validate_config(data: Any, source: str = "config") -> BenchmarkConfig:
    """Validate parsed YAML; raise ConfigError with one line naming the first problem."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level, got {type(data).__name__}")
    try:
        return _schema().model_validate(data)
    except ValidationError as exc:
        errors = exc.errors()
        more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
        raise ConfigError(f"{source}: {_format_error(errors[0])}{more}") from None


def load_config(path: str | Path) -> BenchmarkConfig:
    """Read and validate a benchmark YAML file."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError(f"{path}: malformed YAML{where}: {problem}") from None
    return validate_config(data, source=str(path))
