"""The benchmark YAML schema, validated up front so a bad file fails before any model is built.

Each backend owns its config class (in its backend file); the ``backends`` list here is validated as
the union of the registered backends' classes, discriminated by ``name``. The union is built when a
config is validated, not at import, so backends a plugin registers are part of it. The sections below
the top level (models, timing, numerics, isolation, executor) are in :mod:`segbench.config.sections`.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any, Union

import yaml
from pydantic import Field, ValidationError, create_model, field_validator, model_validator
from pydantic_core import ErrorDetails

from segbench.backends import BACKENDS, BackendConfig, BackendSpec
from segbench.config.sections import (
    DEFAULT_TOLERANCES,
    CocoDatasetConfig,
    DatasetEntry,
    ExecutorConfig,
    FolderDatasetConfig,
    IsolationConfig,
    ModelEntry,
    NumericsConfig,
    PrecisionName,
    PreprocessConfig,
    ShapesDatasetConfig,
    TensorToleranceConfig,
    TimingConfig,
    _Strict,
)
from segbench.errors import ConfigError, SegbenchError
from segbench.models.imported import import_factory
from segbench.models.onnx_graph import OnnxGraphModel
from segbench.models.registry import validate_model
from segbench.models.weights import RANDOM
from segbench.sweep import SweepConfig

__all__ = [
    "DEFAULT_TOLERANCES",
    "BenchmarkConfig",
    "CocoDatasetConfig",
    "DatasetEntry",
    "ExecutorConfig",
    "FolderDatasetConfig",
    "IsolationConfig",
    "ModelEntry",
    "NumericsConfig",
    "PrecisionName",
    "PreprocessConfig",
    "ShapesDatasetConfig",
    "TensorToleranceConfig",
    "TimingConfig",
    "load_config",
    "onnx_model",
    "schema_model",
    "validate_config",
]


class BenchmarkConfig(_Strict):
    """A benchmark YAML: the models, the backends they run on, the sweep and how each cell is timed, and
    the numerics check against the PyTorch fp32 baseline."""

    name: str = Field(default="benchmark", description="Names the run directory and `env.json`.")
    seed: int = Field(default=0, description="Seeds random weights and the timing images.")
    models: list[ModelEntry] = Field(min_length=1, description="The models to run; at least one.")
    # Each entry is validated as its backend's config class (see ``_schema``).
    backends: list[BackendConfig] = Field(
        min_length=1,
        description="The backend entries, each with its own typed options (the `name` picks the class); at "
        "least one. A backend whose device or runtime is missing here is skipped with the reason.",
    )
    sweep: SweepConfig = Field(
        default_factory=SweepConfig,
        description="The default sweep; a model's or backend entry's own `sweep` wins (the backend's first).",
    )
    timing: TimingConfig = Field(default_factory=TimingConfig, description="How each cell is timed.")
    numerics: NumericsConfig = Field(
        default_factory=NumericsConfig, description="The numerics check against the PyTorch fp32 baseline."
    )
    isolation: IsolationConfig = Field(
        default_factory=IsolationConfig, description="Process isolation of the timing cells."
    )
    executor: str | ExecutorConfig | None = Field(
        default=None,
        description="Where the device stages (timing, largest-batch search) run: `local` (this process; "
        "each cell in a child with `isolation.subprocess`) or `ray` (one task per unit on a cluster); a "
        "name or a mapping. null: local. `inline` and `subprocess` still read as local without and with "
        "isolation.",
    )

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


def _schema(specs: Iterable[BackendSpec] | None = None) -> type[BenchmarkConfig]:
    """BenchmarkConfig with ``backends`` typed as the union of ``specs`` (default: those registered now)."""
    classes = tuple(spec.config_class for spec in (BACKENDS.values() if specs is None else specs))
    if classes not in _SCHEMAS:
        # A union built at runtime, from the registry: no static type for mypy to check.
        entry = Annotated[Union[classes], Field(discriminator="name")]  # type: ignore[valid-type]  # noqa: UP007
        _SCHEMAS[classes] = create_model(
            "BenchmarkConfig",
            __base__=BenchmarkConfig,
            __module__=__name__,
            backends=(
                list[entry],
                Field(min_length=1, description=BenchmarkConfig.model_fields["backends"].description),
            ),
        )
    return _SCHEMAS[classes]


def schema_model(specs: Iterable[BackendSpec] | None = None) -> type[BenchmarkConfig]:
    """The model a YAML is validated against, with the options of ``specs`` (default: every backend
    registered now, plugins included): its JSON schema is ``schema_model().model_json_schema()``. The docs'
    YAML reference passes segbench's own backends (``BUILTIN_BACKENDS``), so a plugin a process loaded
    never shows up there."""
    return _schema(specs)


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
