"""MkDocs hook: serve each committed run's plots and HTML report from ``reports/`` itself.

The generated results pages (``python -m segbench.cli.docgen``) link ``results/<run>/plots/*.png`` and
``results/<run>/report.html``; adding the files here, instead of committing copies under ``docs/``,
keeps one copy of each binary in the repository.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files

from segbench.cli.docgen.results_pages import assets


def on_files(files: Files, config: Any, **_: Any) -> Files:
    reports = Path(config["config_file_path"]).resolve().parent / "reports"
    for site_path, source in assets(reports).items():
        files.append(File.generated(config, site_path, abs_src_path=str(source)))
    return files
