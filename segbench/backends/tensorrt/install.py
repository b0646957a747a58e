"""Whether TensorRT (and Polygraphy, which builds the engines) can be used here, and which TensorRT it is.

``tensorrt`` and ``polygraphy`` are imported inside functions, so the package imports without them.
"""

from __future__ import annotations

import re
from types import ModuleType

from segbench.errors import SegbenchError, first_line

INSTALL_HINT = (
    "TensorRT is not installed: pip install 'segbench[trt]' (needs an NVIDIA GPU and NVIDIA's package index)"
)
POLYGRAPHY_HINT = "Polygraphy is not installed: pip install 'segbench[trt]' (segbench builds engines with it)"
SUPPORTED_MAJORS = (10, 11)


class TensorRTUnavailable(SegbenchError):
    """TensorRT (or a GPU for it) is missing or unsupported on this machine: a setup problem, not a bug."""


def import_tensorrt() -> ModuleType:
    """The ``tensorrt`` module, or :class:`TensorRTUnavailable` with one line saying how to get it.

    The version is checked here too, so every caller gets a supported major or a clear refusal, and so is
    Polygraphy, which builds the engines.
    """
    try:
        import tensorrt
    except ImportError:
        raise TensorRTUnavailable(INSTALL_HINT) from None
    except OSError as exc:  # the bindings are there but libnvinfer is not loadable
        raise TensorRTUnavailable(
            f"TensorRT is installed but its libraries failed to load: {first_line(exc)}"
        ) from None
    if getattr(tensorrt, "__file__", None) is None and not hasattr(tensorrt, "__version__"):
        # A namespace package: only ``tensorrt-stubs`` (type stubs, no bindings) is installed.
        raise TensorRTUnavailable(INSTALL_HINT)
    tensorrt_version(tensorrt)
    polygraphy_trt()
    return tensorrt


def tensorrt_version(trt: ModuleType) -> tuple[int, int]:
    """``(major, minor)`` of the TensorRT module; majors other than 10 and 11 are refused.

    TensorRT 9 and older use binding indices and ``execute_async_v2``, which this code does not speak.
    """
    version = str(getattr(trt, "__version__", ""))
    match = re.match(r"(\d+)\.(\d+)", version)
    if match is None:
        raise TensorRTUnavailable(f"cannot read the TensorRT version from {version!r}")
    major, minor = int(match.group(1)), int(match.group(2))
    if major not in SUPPORTED_MAJORS:
        raise TensorRTUnavailable(
            f"TensorRT {version} is not supported: segbench needs TensorRT "
            f"{' or '.join(str(m) for m in SUPPORTED_MAJORS)}"
        )
    return major, minor


def polygraphy_trt() -> ModuleType:
    """``polygraphy.backend.trt`` with Polygraphy's logger quiet below warnings (segbench prints its own
    progress); :class:`TensorRTUnavailable` when Polygraphy is missing. Imports no ``tensorrt`` itself."""
    try:
        from polygraphy.backend import trt as poly_trt
        from polygraphy.logger import G_LOGGER
    except ImportError:
        raise TensorRTUnavailable(POLYGRAPHY_HINT) from None
    G_LOGGER.colors = False  # no colours, and no notice that the optional 'colored' package is missing
    G_LOGGER.module_severity = G_LOGGER.WARNING
    return poly_trt
