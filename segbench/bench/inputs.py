"""What a run is handed besides registered models, checked before any cell runs: ``module:`` models
(built once and probed) and pre-exported files (``artifact:``).

An unreadable or corrupt graph is bad input (exit 2). A graph whose inputs or outputs are not the model's
is refused too, unless the entry says ``allow_mismatch: true``: then it runs, and the terminal, the log
and every row's ``artifact`` record say what did not match. Engines (``.engine``) are opaque without
TensorRT; only TensorRT itself can check them.
"""

from __future__ import annotations

from typing import Any

import onnx
import torch

from segbench.backends import BackendConfig
from segbench.config import BenchmarkConfig, ModelEntry, PreprocessConfig
from segbench.errors import ConfigError
from segbench.models.imported import ImportedModel, build_imported_model, probe
from segbench.models.registry import get_spec, resolve_options


def graph_names(path: Any) -> tuple[list[str], list[str]]:
    """The graph's input names (initializers left out) and output names; ConfigError when the file
    cannot be read as ONNX."""
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf's DecodeError and friends: the file is not an ONNX graph
        raise ConfigError(f"cannot read {path} as ONNX: {type(exc).__name__}: {exc}") from None
    initializers = {init.name for init in model.graph.initializer}
    inputs = [i.name for i in model.graph.input if i.name not in initializers]
    if not inputs or not model.graph.output:
        raise ConfigError(f"{path} is not a usable ONNX graph: it has no inputs or no outputs")
    return inputs, [o.name for o in model.graph.output]


def model_names(config: BenchmarkConfig, entry: ModelEntry) -> tuple[list[str], list[str]]:
    """The input and output names segbench feeds and reads for ``entry`` (built on the meta device)."""
    if entry.module is not None:
        return list(ImportedModel.input_names), list(ImportedModel.output_names)
    options = dict(entry.options)
    if entry.weights == "random" and "num_classes" not in options:
        options["num_classes"] = config.dataset_num_classes()
    resolved = resolve_options(entry.name, entry.weights, options)
    with torch.device("meta"):
        model = get_spec(entry.name).builder(**resolved)
    return list(model.input_names), list(model.output_names)


def mismatch(config: BenchmarkConfig, entry: ModelEntry, backend: BackendConfig) -> str | None:
    """What in ``backend.artifact`` does not match ``entry``'s model, or None."""
    inputs, outputs = graph_names(backend.artifact)
    want_inputs, want_outputs = model_names(config, entry)
    problems = []
    if inputs != want_inputs:
        problems.append(f"inputs {inputs}, the model feeds {want_inputs}")
    missing = [name for name in want_outputs if name not in outputs]
    if missing:
        problems.append(f"outputs {outputs} lack {missing}")
    return "; ".join(problems) or None


def build_imported(config: BenchmarkConfig, entry: ModelEntry) -> ImportedModel:
    """A ``module:`` entry's network behind its declared preprocessing."""
    assert entry.module is not None, f"{entry.name} is not a module: entry"
    preprocess = (entry.preprocess or PreprocessConfig()).model_dump()
    num_classes = entry.num_classes or config.dataset_num_classes()
    return build_imported_model(entry.module, entry.options, num_classes, preprocess, entry.weights,
                                seed=config.seed)  # fmt: skip


def check_imported_models(config: BenchmarkConfig) -> None:
    """Build every ``module:`` entry once and run it on a small input: a network that cannot be built
    or returns the wrong shape for its task is bad input, before any cell runs."""
    for index, entry in enumerate(config.models):
        if entry.module is None:
            continue
        try:
            probe(build_imported(config, entry), entry.module, entry.declared_task)
        except ConfigError as exc:
            raise ConfigError(f"models[{index}].{exc}") from None


def check_user_artifacts(config: BenchmarkConfig) -> dict[int, str]:
    """Check every ONNX ``artifact:`` of the config against its model; returns the allowed mismatches
    by backend entry (``id``), and raises ConfigError for a corrupt file or a refused mismatch."""
    allowed: dict[int, str] = {}
    for index, backend in enumerate(config.backends):
        if backend.artifact is None or backend.artifact.suffix != ".onnx":
            continue
        where = f"backends[{index}].artifact"
        for entry in config.models:
            if backend.model not in (None, entry.name) or entry.onnx is not None:
                continue  # an onnx: model is its own graph
            try:
                found = mismatch(config, entry, backend)
            except ConfigError as exc:
                raise ConfigError(f"{where}: {exc}") from None
            if found and not backend.allow_mismatch:
                raise ConfigError(
                    f"{where}: {backend.artifact.name} does not match model {entry.name}: {found} "
                    "(set allow_mismatch: true on the backend entry to run it anyway)"
                )
            if found:
                allowed[id(backend)] = found
    return allowed
