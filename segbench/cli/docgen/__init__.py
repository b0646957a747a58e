"""The generated pages of the docs site: the CLI, YAML and result-file references from the code, and the
results pages from the committed runs in ``reports/``.

``python -m segbench.cli.docgen`` writes them into ``docs/``; ``--check`` (and
``tests/docs/test_reference_pages.py``) regenerates them in memory and fails when a committed page
differs, so the docs cannot drift from the code. Nothing in segbench imports this package: it reads the
parser, the config models and the records, and the report code, and only the docs need it.
"""

from __future__ import annotations

from pathlib import Path

from segbench.cli.docgen.cli_page import cli_reference
from segbench.cli.docgen.records_page import records_reference
from segbench.cli.docgen.results_pages import results_pages
from segbench.cli.docgen.yaml_page import yaml_reference

# The folders under docs/ whose every file is generated: a file there that generation does not produce
# (a run folder deleted from reports/) is stale.
GENERATED_DIRS = ("reference", "results")
REGENERATE = "python -m segbench.cli.docgen"


def generate(reports: Path) -> dict[str, str]:
    """Page path under ``docs/`` -> its content."""
    pages = {
        "reference/cli.md": cli_reference(),
        "reference/yaml.md": yaml_reference(),
        "reference/result-files.md": records_reference(),
    }
    pages.update(results_pages(reports))
    return pages


def differences(pages: dict[str, str], docs: Path) -> list[str]:
    """What differs between the generated ``pages`` and ``docs/``: one line per changed, missing or
    stale file (empty when they match)."""
    found = []
    for name, text in sorted(pages.items()):
        path = docs / name
        if not path.is_file():
            found.append(f"{name}: missing")
        elif path.read_text(encoding="utf-8") != text:
            found.append(f"{name}: differs from what the code generates")
    for folder in GENERATED_DIRS:
        for path in sorted((docs / folder).rglob("*")) if (docs / folder).is_dir() else []:
            name = path.relative_to(docs).as_posix()
            if path.is_file() and name not in pages:
                found.append(f"{name}: not generated any more (stale)")
    return found


def write(pages: dict[str, str], docs: Path) -> list[Path]:
    """Write ``pages`` into ``docs/`` and delete stale files of the generated folders; the paths written."""
    for line in differences(pages, docs):
        if line.endswith("(stale)"):
            (docs / line.split(":", 1)[0]).unlink()
    written = []
    for name, text in sorted(pages.items()):
        path = docs / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
            written.append(path)
    return written
