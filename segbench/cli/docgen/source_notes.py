"""Documentation that lives in the source as comments: the comment next to a field or a dict key.

Many of segbench's typed fields (backend options, result records) are documented by a comment on the
line that defines them or in the comment block right above it. Reading those comments lets the generated
reference show them without a second copy of the text that could drift from the code.
"""

from __future__ import annotations

import ast
import functools
import inspect
import io
import textwrap
import tokenize
from typing import Any


@functools.cache
def _parsed(obj: Any) -> tuple[ast.Module, dict[int, str], list[str]] | None:
    """The source of ``obj`` parsed, its comments by line number, and its lines (None without source)."""
    try:
        source = textwrap.dedent(inspect.getsource(obj))
    except (OSError, TypeError):
        return None
    comments: dict[int, str] = {}
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            comments[token.start[0]] = token.string.lstrip("#").strip()
    return ast.parse(source), comments, source.splitlines()


def _note(line: int, comments: dict[int, str], lines: list[str]) -> str:
    """The comment ending the line, else the comment-only lines right above it (joined); fmt pragmas and
    lint suppressions are not documentation."""

    def useful(text: str) -> bool:
        return bool(text) and not text.startswith(("fmt:", "noqa", "type:"))

    if line in comments and lines[line - 1].lstrip()[:1] != "#" and useful(comments[line]):
        return comments[line]
    block: list[str] = []
    above = line - 1
    while above >= 1 and lines[above - 1].lstrip().startswith("#"):
        block.insert(0, comments.get(above, ""))
        above -= 1
    return " ".join(text for text in block if useful(text))


def field_notes(cls: type) -> dict[str, str]:
    """Field name -> the comment documenting it in ``cls``'s body, for ``cls`` and its bases (a subclass's
    comment wins)."""
    notes: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        # Library bases (pydantic.BaseModel, object) document no field of ours.
        library = klass.__module__ == "builtins" or klass.__module__.startswith("pydantic")
        parsed = None if library else _parsed(klass)
        if parsed is None:
            continue
        tree, comments, lines = parsed
        body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
        for node in body:
            if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                note = _note(node.lineno, comments, lines)
                if note or node.target.id not in notes:
                    notes[node.target.id] = note
    return notes


def module_notes(module: Any) -> dict[str, str]:
    """Module-level constant -> the comment on or above the line that assigns it."""
    parsed = _parsed(module)
    if parsed is None:
        return {}
    tree, comments, lines = parsed
    notes: dict[str, str] = {}
    for node in getattr(tree, "body", []):
        targets = (
            node.targets
            if isinstance(node, ast.Assign)
            else [node.target]
            if isinstance(node, ast.AnnAssign)
            else []
        )
        for target in targets:
            if isinstance(target, ast.Name):
                notes[target.id] = _note(node.lineno, comments, lines)
    return notes


def key_notes(function: Any) -> dict[str, str]:
    """String dict key -> the comment on or above the line that writes it, in ``function``'s source."""
    parsed = _parsed(function)
    if parsed is None:
        return {}
    tree, comments, lines = parsed
    notes: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Dict):
            for key in node.keys:
                if isinstance(key, ast.Constant) and isinstance(key.value, str):
                    note = _note(key.lineno, comments, lines)
                    if note:
                        notes[key.value] = note
    return notes


def docstring(obj: Any) -> str:
    """``obj``'s own docstring on one line (not an inherited one), or ``""``."""
    text = obj.__dict__.get("__doc__") if isinstance(obj, type) else getattr(obj, "__doc__", None)
    return " ".join((text or "").split())
