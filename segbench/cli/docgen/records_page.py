"""The result files reference, read from the record types of ``segbench/results/``: the keys each JSONL
row carries, with their types and the comments that document them in the source."""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Iterable
from typing import Any

from segbench.cli.docgen.markdown import MISSING, code, page, table
from segbench.cli.docgen.source_notes import docstring, field_notes, key_notes, module_notes
from segbench.export.fp16_diagnosis import LayerDivergence, PrecisionDiagnosis
from segbench.metrics.equivalence import MetricVerdict
from segbench.metrics.tensors import OutputComparison, TensorVerdict, tensor_row
from segbench.results import layout, records
from segbench.results.records import CapacityRecord, CellRecord, CheckRecord, SentinelReading

SOURCE = "the record types of `segbench/results/records.py` and the verdicts they carry"

# Values that say which type a field holds, for building one record of every kind: every optional field
# filled, so each key a row can carry shows up in ``to_dict``.
_SAMPLES: dict[type, Any] = {str: "x", int: 1, float: 1.0, bool: True}


def _sample(kind: Any) -> Any:
    origin = typing.get_origin(kind)
    args = [arg for arg in typing.get_args(kind) if arg is not type(None)]
    if origin in (typing.Union, types.UnionType):
        return _sample(args[0])
    if origin is list:
        return [_sample(args[0])] if args else []
    if origin is tuple:
        return tuple(_sample(arg) for arg in args)
    if origin is dict or kind is dict:
        return {}
    if isinstance(kind, type) and dataclasses.is_dataclass(kind):
        return _instance(kind)
    return _SAMPLES.get(kind)


def _instance(cls: type) -> Any:
    hints = typing.get_type_hints(cls)
    return cls(**{field.name: _sample(hints[field.name]) for field in dataclasses.fields(cls)})


def _owners(cls: type) -> list[type]:
    """``cls`` and the dataclasses its fields hold: a row spells their fields as its own keys."""
    hints = typing.get_type_hints(cls)
    return [cls] + [hints[f.name] for f in dataclasses.fields(cls) if dataclasses.is_dataclass(hints[f.name])]


def _field_row(owner: type, name: str, key: str) -> tuple[str, str, str, str]:
    field = {f.name: f for f in dataclasses.fields(owner)}[name]
    note = field_notes(owner).get(name) or MISSING
    return code(key), code(field.type), note, f"`{owner.__name__}.{name}`"


def _key_rows(cls: type, row: dict[str, Any], skip: Iterable[str] = ()) -> list[tuple[str, str, str, str]]:
    """One table row per key of ``row`` (a record's ``to_dict``), traced to the field that writes it; a
    nested record (``env``) gets a row per key of its own."""
    rows = []
    owners = _owners(cls)
    for key, value in row.items():
        if key in skip:
            continue
        owner = next((o for o in owners if key in {f.name for f in dataclasses.fields(o)}), None)
        if owner is None:  # a computed key: a property of the record
            prop = getattr(cls, key, None)
            rows.append(
                (code(key), MISSING, docstring(prop.fget) if isinstance(prop, property) else MISSING, "-")
            )
            continue
        rows.append(_field_row(owner, key, key))
        kind = typing.get_type_hints(owner)[key]
        if isinstance(value, dict) and isinstance(kind, type) and dataclasses.is_dataclass(kind):
            rows += [_field_row(kind, sub, f"{key}.{sub}") for sub in value]
    return rows


def _fields_table(cls: type, skip: Iterable[str] = ()) -> str:
    notes = field_notes(cls)
    skipped = set(skip)
    rows = [
        (code(f.name), code(f.type), notes.get(f.name) or MISSING)
        for f in dataclasses.fields(cls)
        if f.name not in skipped
    ]
    return table(["key", "type", "description"], rows)


HEADERS = ["key", "type", "description", "written from"]


def records_reference() -> str:
    """``docs/reference/result-files.md``."""
    notes = module_notes(layout)
    names = ("RESULTS_FILE", "NUMERICS_FILE", "CAPACITY_FILE", "SENTINEL_FILE", "ENV_FILE", "LOG_FILE")
    files = [(code(getattr(layout, name)), notes.get(name) or MISSING) for name in names]
    cell = _instance(CellRecord)
    check = _instance(CheckRecord)
    common = [key for key in check.to_dict() if key not in check.details]
    tensor_keys = [key for key in tensor_row(TensorVerdict(outputs=[])) if key not in common]
    tensor_notes = key_notes(tensor_row)
    nested = {"tensors": "`TensorVerdict`, below", "diagnosis": "`PrecisionDiagnosis`, below"}
    parts = [
        "A run directory holds these files. Every row is one JSON object per line, appended, flushed and "
        "fsync'd as it is written; `env.json` records the row layout as `schema` "
        f"(now {layout.SCHEMA_VERSION}; absent means 1), and readers refuse a schema they do not know. The "
        "keys below are the ones today's records write, traced to the field that writes each; rows of "
        "older runs may lack some.",
        table(["file", "what"], files),
        f"## {code(layout.RESULTS_FILE)} {{#results}}",
        docstring(CellRecord) + " " + docstring(type(cell.measurement)),
        table(HEADERS, _key_rows(CellRecord, cell.to_dict())),
        f"## {code(layout.NUMERICS_FILE)} {{#numerics}}",
        f"{docstring(CheckRecord)} `role` is {code(records.BASELINE)} or {code(records.CANDIDATE)}; "
        f"`level` is {code(records.TASK)}, {code(records.TENSOR)} or {code(records.DIAGNOSIS)} "
        "(a failed fp16 check's layer report, with no verdict). Every row has:",
        table(HEADERS, _key_rows(CheckRecord, check.to_dict(), skip=["details"])),
        "A task-level row adds the equivalence test's fields (`MetricVerdict`, points):",
        _fields_table(MetricVerdict, skip=common),
        "A tensor-level row adds:",
        table(
            ["key", "description"],
            [(code(k), tensor_notes.get(k) or nested.get(k, MISSING)) for k in tensor_keys],
        ),
        f"`tensors` (`TensorVerdict`): {docstring(TensorVerdict)}",
        _fields_table(TensorVerdict),
        f"Each of its `outputs` (`OutputComparison`): {docstring(OutputComparison)}",
        _fields_table(OutputComparison),
        f"A diagnosis row adds `diagnosis` (`PrecisionDiagnosis`, without its per-layer list): "
        f"{docstring(PrecisionDiagnosis)}",
        _fields_table(PrecisionDiagnosis, skip=["layers"]),
        f"Each layer in it (`LayerDivergence`): {docstring(LayerDivergence)}",
        _fields_table(LayerDivergence),
        f"## {code(layout.CAPACITY_FILE)} {{#capacity}}",
        docstring(CapacityRecord),
        table(HEADERS, _key_rows(CapacityRecord, _instance(CapacityRecord).to_dict())),
        f"## {code(layout.SENTINEL_FILE)} {{#sentinel}}",
        docstring(SentinelReading),
        table(HEADERS, _key_rows(SentinelReading, _instance(SentinelReading).to_dict())),
    ]
    return page("Result files", SOURCE, parts)
