"""What segbench needs to know about a backend, declared in one place per backend file.

A backend file defines its config class (the YAML entry), its runner (activate / infer / deactivate) and
a ``SPEC``: what the runner consumes, the precision the graph it is handed must carry, why it cannot run
here, and how to make its runner. The registry (:mod:`segbench.backends`) holds the specs; the pipeline
asks the spec and never inspects a runner class.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

from segbench.backends.base import BackendConfig, GraphBackendConfig, Runner
from segbench.models.base import SegmentationModel

# What a runner consumes.
MODULE = "module"  # the PyTorch module itself
GRAPH = "graph"  # an ONNX graph segbench exports (or a file the YAML names with ``artifact:``)


def graph_precision_for(precision: str, lowered_by_flags: Collection[str] = ()) -> str:
    """The one precision rule: the precision of the ONNX graph a backend runs ``precision`` from.

    The graph carries the precision (an fp16 graph for fp16, so segbench's fp32 keep-list inside it
    holds), except for a precision the runtime makes itself from the fp32 graph with a switch of its own
    (``lowered_by_flags``: TensorRT 10's BF16 builder flag). Every backend's ``graph_precision``, the
    TensorRT engine build (strongly typed or not, which flag) and ``segbench export`` ask this; what a
    graph *file* computes in is :func:`segbench.models.onnx_graph.graph_precision`.
    """
    return "fp32" if precision in lowered_by_flags else precision


def same_precision(config: BackendConfig, precision: str) -> str:
    """The graph carries the precision asked for (an fp16 graph for fp16): nothing lowered by flags."""
    return graph_precision_for(precision)


def always_available(config: BackendConfig) -> str | None:
    return None


def no_plan_notes(
    config: BackendConfig, precision: str, graph_ops: frozenset[str] | None, served: Sequence[tuple[int, ...]]
) -> tuple[str, ...]:
    return ()


@dataclass(frozen=True)
class BackendSpec:
    name: str
    config_class: type[BackendConfig]
    runner_class: type[Runner]
    consumes: str = MODULE  # MODULE | GRAPH
    # File types a YAML ``artifact:`` may name for this backend (a pre-exported graph or engine).
    artifact_suffixes: tuple[str, ...] = (".onnx",)
    # The precision of the ONNX graph handed to the runner for a requested precision: a property of the
    # graph, except where the runtime lowers precision itself (TensorRT 10's builder flags).
    graph_precision: Callable[[BackendConfig, str], str] = same_precision
    # Why this backend cannot run an entry on this machine (a missing package, no GPU), or None.
    unavailable: Callable[[BackendConfig], str | None] = always_available
    # What a dry run should say of an entry before anything is built (engine profiles, TF32 the runtime
    # forces): from the config, the precision, the graph's op types as far as known before export
    # (``graph_ops``, None when unknown) and the input shapes the unit serves.
    plan_notes: Callable[
        [BackendConfig, str, frozenset[str] | None, Sequence[tuple[int, ...]]], tuple[str, ...]
    ] = no_plan_notes

    def __post_init__(self) -> None:
        if self.consumes not in (MODULE, GRAPH):
            raise ValueError(f"backend {self.name}: consumes must be {MODULE!r} or {GRAPH!r}")
        if self.consumes == GRAPH and not issubclass(self.config_class, GraphBackendConfig):
            raise ValueError(f"backend {self.name}: a graph backend's config must be a GraphBackendConfig")
        if self.config_class.model_fields["name"].default != self.name:
            raise ValueError(f"backend {self.name}: its config class must default name to {self.name!r}")

    def make_runner(
        self,
        model: SegmentationModel,
        config: BackendConfig,
        precision: str,
        graph: Path | None = None,
        input_shapes: Sequence[tuple[int, int, int, int]] = (),
    ) -> Runner:
        """An inactive runner; ``graph`` is the file it runs when it consumes one."""
        return self.runner_class(model, config, precision, graph, input_shapes)
