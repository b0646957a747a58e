"""Plugins: the modules named in ``$SEGBENCH_PLUGINS`` (comma-separated) register extra models (a
``MODELS`` entry) or backends (a ``register_backend`` call) without editing segbench. Every process a
run starts imports them: the CLI, per-cell child processes (they inherit the variable) and Ray workers
(the executor passes it on)."""

from __future__ import annotations

import importlib
import os

from segbench.errors import ConfigError

PLUGINS_ENV = "SEGBENCH_PLUGINS"


def plugin_names() -> list[str]:
    """The module names in ``$SEGBENCH_PLUGINS``."""
    return [name for name in (part.strip() for part in os.environ.get(PLUGINS_ENV, "").split(",")) if name]


def load_plugins() -> None:
    """Import every plugin; one that cannot be imported is bad input, named in one line."""
    for name in plugin_names():
        try:
            importlib.import_module(name)
        except Exception as exc:
            raise ConfigError(f"${PLUGINS_ENV}: cannot import {name}: {type(exc).__name__}: {exc}") from None
