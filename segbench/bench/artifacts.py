"""A pre-exported file named in the YAML (``artifact:``), checked before any cell runs.

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
from segbench.config import BenchmarkConfig, ModelEntry
from segbench.errors import ConfigError
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


def check_user_artifacts(config: BenchmarkConfig) -> dict[int, str]:
    """Check every ONNX ``artifact:`` of the config against its model; returns the allowed mismatches
    by backend entry (``id``), and raises ConfigError for a corrupt file or a refused mismatch."""
    allowed: dict[int, str] = {}
    for index, backend in enumerate(config.backends):
        if backend.artifact is None or backend.artifact.suffix != ".onnx":
            continue
        where = f"backends[{index}].artifact"
        for entry in config.models:
            if backend.model not in (None, entry.name):
                continue
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
