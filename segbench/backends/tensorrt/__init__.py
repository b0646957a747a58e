"""The native TensorRT backend, laid out as Polygraphy's ``polygraphy/backend/trt`` is: loaders apart
from the runner.

- :mod:`.install`: is TensorRT (and Polygraphy) here, and which major;
- :mod:`.profile`: the optimization profile derived from the sweep;
- :mod:`.precision`: TensorRT's side of the one precision rule
  (:func:`segbench.backends.spec.graph_precision_for`) and the checks that an artifact is at the
  precision it is run at;
- :mod:`.build`: the engine build through Polygraphy's loaders (the build seam, ``build_serialized_engine``);
- :mod:`.engine_cache`: engines built once and kept on disk;
- :mod:`.engine`: one deserialized engine run with torch tensors;
- :mod:`.config`, :mod:`.staging`, :mod:`.runner`: the YAML entry, host staging and the runner.

``SPEC`` below is what the backend registry holds.
"""

from segbench.backends.spec import GRAPH, BackendSpec
from segbench.backends.tensorrt.config import TensorRTConfig
from segbench.backends.tensorrt.precision import backend_graph_precision
from segbench.backends.tensorrt.runner import ENGINE_SUFFIX, TensorRTRunner, unavailable_reason

SPEC = BackendSpec(
    name="tensorrt",
    config_class=TensorRTConfig,
    runner_class=TensorRTRunner,
    consumes=GRAPH,
    artifact_suffixes=(".onnx", ENGINE_SUFFIX),
    graph_precision=backend_graph_precision,
    unavailable=unavailable_reason,
)

__all__ = ["SPEC", "TensorRTConfig", "TensorRTRunner"]
