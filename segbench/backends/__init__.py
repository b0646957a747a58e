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
# segbench's own backends, whatever a plugin registers later: what the docs' YAML reference describes.
BUILTIN_BACKENDS: tuple[BackendSpec, ...] = tuple(BACKENDS.values())

__all__ = ["BACKENDS", "BUILTIN_BACKENDS", "GRAPH", "MODULE", "BackendConfig", "BackendError", "BackendSpec",
           "Runner", "get_backend", "register_backend"]  # fmt: skip
