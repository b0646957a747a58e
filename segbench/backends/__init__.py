"""Backend registry: adding a backend is one new file here (config, runner, ``SPEC``) plus one
``register_backend`` line below. A plugin calls ``register_backend`` when ``$SEGBENCH_PLUGINS`` imports
it, before any config is validated: the YAML schema is built from the registry at validation time."""

from segbench.backends import onnxruntime_backend, tensorrt, torch_backend
from segbench.backends.base import BackendConfig, BackendError, Runner
from segbench.backends.spec import GRAPH, MODULE, BackendSpec
from segbench.errors import ConfigError

BACKENDS: dict[str, BackendSpec] = {}


def register_backend(spec: BackendSpec) -> None:
    """Make a backend known to configs and runs (a plugin may replace a built-in by name)."""
    BACKENDS[spec.name] = spec


def get_backend(name: str) -> BackendSpec:
    if name not in BACKENDS:
        raise ConfigError(f"unknown backend {name!r}; valid backends: {', '.join(BACKENDS)}")
    return BACKENDS[name]


register_backend(torch_backend.SPEC)
register_backend(onnxruntime_backend.SPEC)
register_backend(tensorrt.SPEC)

__all__ = ["BACKENDS", "GRAPH", "MODULE", "BackendConfig", "BackendError", "BackendSpec", "Runner",
           "get_backend", "register_backend"]  # fmt: skip
