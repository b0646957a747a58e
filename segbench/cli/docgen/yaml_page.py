"""The benchmark YAML reference, read from the pydantic models' JSON schema: every section, every key,
its type, its default and its description (``Field(description=...)``, else the comment next to the
field in the source)."""

from __future__ import annotations

import typing
from collections import deque
from typing import Any

import yaml
from pydantic import BaseModel
from pydantic_core import to_jsonable_python

from segbench.backends import BUILTIN_BACKENDS
from segbench.cli.docgen.markdown import MISSING, code, page, table
from segbench.cli.docgen.source_notes import field_notes
from segbench.config import schema_model
from segbench.sweep import parse_size

SOURCE = "the pydantic models of `segbench/config/` and the backends (`segbench.config.schema_model()`)"


def _models(root: type[BaseModel]) -> dict[str, type[BaseModel]]:
    """Every pydantic model reachable from ``root``'s fields, by class name (the JSON schema's $defs key)."""
    found: dict[str, type[BaseModel]] = {}
    pending: deque[Any] = deque([root])
    while pending:
        item = pending.popleft()
        if isinstance(item, type) and issubclass(item, BaseModel):
            if item.__name__ not in found:
                found[item.__name__] = item
                pending.extend(field.annotation for field in item.model_fields.values())
        else:
            pending.extend(typing.get_args(item))
    return found


def _flow(value: Any) -> str:
    """A value as it is written in YAML, on one line."""
    text = yaml.safe_dump(to_jsonable_python(value), default_flow_style=True, sort_keys=False, width=10**6)
    return text.strip().removesuffix("...").strip()


def _refs(node: dict[str, Any], path: str) -> list[tuple[str, str]]:
    """(definition name, YAML path) of the models a schema node refers to, in order."""
    if "$ref" in node:
        return [(node["$ref"].rsplit("/", 1)[-1], path)]
    found: list[tuple[str, str]] = []
    for member in node.get("anyOf", []) + node.get("oneOf", []):
        found += _refs(member, path)
    if isinstance(node.get("items"), dict):
        found += _refs(node["items"], path + "[]")
    if isinstance(node.get("additionalProperties"), dict):
        keys = node.get("propertyNames", {}).get("enum")
        found += _refs(node["additionalProperties"], path + (f".<{'|'.join(keys)}>" if keys else ".<key>"))
    return found


_BOUNDS = (("minimum", "≥"), ("exclusiveMinimum", ">"), ("maximum", "≤"), ("exclusiveMaximum", "<"))


class _Writer:
    def __init__(self, schema: dict[str, Any], models: dict[str, type[BaseModel]], root: str) -> None:
        self.schema = schema
        self.root = root
        self.defs: dict[str, Any] = schema.get("$defs", {})
        self.models = models
        self.paths: dict[str, str] = {}  # definition -> the YAML path of its section (where first met)

    def type_text(self, node: dict[str, Any]) -> str:
        if "$ref" in node:
            name = node["$ref"].rsplit("/", 1)[-1]
            label = code(self.paths.get(name, name)) + _tag(self.defs.get(name, {}))
            return f"mapping, see [{label}](#{name.lower()})"
        members = node.get("anyOf") or node.get("oneOf")
        if members:
            return " or ".join(self.type_text(member) for member in members)
        if "const" in node:
            return code(_flow(node["const"]))
        if "enum" in node:
            return " | ".join(code(_flow(value)) for value in node["enum"])
        kind = node.get("type")
        if kind == "array":
            if "prefixItems" in node:
                text = "[" + ", ".join(self.type_text(item) for item in node["prefixItems"]) + "]"
            else:
                text = f"list of {self.type_text(node.get('items', {}))}"
            if node.get("minItems") and "prefixItems" not in node:
                text += f", at least {node['minItems']}"
            return text
        if kind == "object":
            values = node.get("additionalProperties")
            if not isinstance(values, dict):
                return "mapping"
            keys = node.get("propertyNames", {}).get("enum")
            key_text = " | ".join(code(key) for key in keys) if keys else "name"
            return f"mapping of {key_text} to {self.type_text(values)}"
        text = {"string": "path" if node.get("format") == "path" else "string", "null": code("null")}.get(
            str(kind), str(kind or "any")
        )
        bounds = [f"{sign} {_flow(node[key])}" for key, sign in _BOUNDS if key in node]
        return ", ".join([text, *bounds])

    def section(self, name: str, heading: str) -> list[str]:
        definition = self.schema if name == self.root else self.defs[name]
        model = self.models[name]
        notes = field_notes(model)
        required = set(definition.get("required", []))
        rows = []
        for key, node in definition.get("properties", {}).items():
            field = model.model_fields[key]
            if key in required:
                default = "required"
            else:
                value = field.get_default(call_default_factory=True)
                default = "see its section" if isinstance(value, BaseModel) else code(_flow(value))
            description = node.get("description") or notes.get(key) or MISSING
            rows.append((code(key), self.type_text(node), default, description))
        parts = [f"## {heading} {{#{name.lower()}}}"]
        if definition.get("description"):
            parts.append(" ".join(definition["description"].split()))
        # A backend's precisions per device are a class attribute, not a key: the schema cannot say them.
        supported = getattr(model, "supported_precisions", None)
        if isinstance(supported, dict):
            per_device = "; ".join(
                f"{code(device)}: {', '.join(code(p) for p in precisions)}"
                for device, precisions in supported.items()
                if precisions
            )
            parts.append(f"Precisions by device: {per_device}; another is refused when the YAML is read.")
        parts.append(table(["key", "type", "default", "description"], rows))
        return parts


def _tag(definition: dict[str, Any]) -> str:
    """``name: torch`` / ``kind: coco``: the discriminating key of a union member's section."""
    for key, node in definition.get("properties", {}).items():
        if "const" in node:
            return " (" + code(f"{key}: {node['const']}") + ")"
    return ""


def yaml_reference(model: type[BaseModel] | None = None) -> str:
    """``docs/reference/yaml.md`` for ``model`` (default: the schema a YAML is validated against, with
    segbench's own backends: not a plugin some test or user registered in this process)."""
    model = model or schema_model(BUILTIN_BACKENDS)
    schema = model.model_json_schema()
    models = _models(model)
    root_name = model.__name__
    models[root_name] = model
    writer = _Writer(schema, models, root_name)
    order: list[tuple[str, str]] = []
    pending = deque([(root_name, "")])
    while pending:
        name, path = pending.popleft()
        if name in writer.paths:
            continue
        writer.paths[name] = path or "top level"
        order.append((name, path))
        definition = schema if name == root_name else writer.defs[name]
        for key, node in definition.get("properties", {}).items():
            pending.extend(_refs(node, f"{path}.{key}" if path else key))
    parts = [
        "The keys of a benchmark YAML, section by section. Unknown keys are an error (one "
        "`segbench: error:` line naming the key, exit 2), so a typo never passes silently. Input sizes "
        f"are read by `parse_size`: {' '.join((parse_size.__doc__ or '').split())}",
        "The `backends` entries are validated as the backend their `name` selects; backends registered by a "
        "plugin (`SEGBENCH_PLUGINS`) add their own sections, which this page, generated without plugins, "
        "does not list. A `sweep` or `timing` inside a model or backend entry replaces the top-level one "
        "for that entry.",
    ]
    for name, path in order:
        heading = "Top level" if name == root_name else code(path) + _tag(writer.defs[name])
        parts += writer.section(name, heading)
    return page("Benchmark YAML", SOURCE, parts)
