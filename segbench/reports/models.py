"""``segbench models``: the model registry with the shipped checkpoints, as data for its table and its
``--json`` output."""

from __future__ import annotations

from typing import Any

from segbench.models.registry import MODELS, model_stats, resolve_options
from segbench.models.weights import RANDOM, TRAINED, checkpoint_metadata, trained_checkpoint_path
from segbench.reports import view


def _validation_figure(meta: dict) -> str | None:
    """The headline validation metric a packaged checkpoint records, e.g. ``mIoU 79.1``."""
    for key, label in (("val_miou", "mIoU"), ("val_segm_ap", "mask AP"), ("val_pq", "PQ")):
        if meta.get(key) is not None:
            # One decimal, as the README's checkpoint table: a headline, not a check against a baseline.
            return f"{label} {view.points(100 * meta[key], digits=1)}"
    return None


def _validation_metrics(meta: dict) -> dict[str, Any]:
    """Every validation figure a packaged checkpoint records (fractions, as ``segbench eval`` prints
    them), keyed without the ``val_`` prefix; ``size`` and ``images`` when it says what it was validated
    on."""
    found = {key[4:]: value for key, value in meta.items() if key.startswith("val_")}
    if isinstance(found.get("size"), int):
        found["size"] = [found["size"], found["size"]]
    return found


def model_registry(height: int, width: int) -> list[dict[str, Any]]:
    """Every registered model: the full architecture at its defaults (parameters, GFLOPs at 1 x 3 x
    height x width) and, where the package ships one, the trained checkpoint with its own figures."""
    entries = []
    for spec in MODELS.values():
        entry: dict[str, Any] = {
            "name": spec.name,
            "task": spec.task,
            "description": spec.description,
            "size": [height, width],
            "options": {},
            **model_stats(spec.name, {}, height, width),
            "checkpoint": None,
        }
        path = trained_checkpoint_path(spec.name)
        if path.is_file():
            meta = checkpoint_metadata(path)
            options = resolve_options(spec.name, TRAINED)
            entry["checkpoint"] = {
                "weights": TRAINED,
                "path": str(path),
                "options": options,
                **model_stats(spec.name, options, height, width),
                "validation": _validation_metrics(meta),
                "validation_headline": _validation_figure(meta),
            }
        entries.append(entry)
    return entries


def _options_text(options: dict[str, Any]) -> str:
    return view.options_text(options) or "defaults"


def registry_rows(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The table's rows: per model the full architecture at its defaults, then the shipped checkpoint's
    (reduced) variant."""
    rows = []
    for entry in entries:
        variants = [{**entry, "weights": RANDOM, "validation_headline": None}]
        if entry["checkpoint"] is not None:
            variants.append(entry["checkpoint"])
        for variant in variants:
            rows.append(
                {
                    "name": entry["name"],
                    "task": entry["task"],
                    "weights": variant["weights"],
                    "options": _options_text(variant["options"]),
                    "params": variant["params"],
                    "gflops": variant["gflops"],
                    "validation": variant["validation_headline"],
                    "description": entry["description"],
                }
            )
    return rows
