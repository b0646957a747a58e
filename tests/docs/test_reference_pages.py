"""The generated docs pages (docs/reference/, docs/results/) are what the code and reports/ generate now:
a command, a YAML key, a result field or a committed run changed without regenerating fails here."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import BaseModel, Field, create_model

from segbench.backends import BUILTIN_BACKENDS
from segbench.cli.docgen import GENERATED_DIRS, REGENERATE, differences, generate
from segbench.cli.docgen.__main__ import main
from segbench.cli.docgen.source_notes import field_notes
from segbench.cli.docgen.yaml_page import _models, yaml_reference
from segbench.config import schema_model

ROOT = Path(__file__).resolve().parents[2]
DOCS, REPORTS = ROOT / "docs", ROOT / "reports"


@pytest.fixture(scope="module")
def pages() -> dict[str, str]:
    return generate(REPORTS)


@pytest.fixture(scope="module")
def regenerated(tmp_path_factory, pages) -> Path:
    """The pages as the code generates them now, written by the regeneration command into a fresh folder."""
    out = tmp_path_factory.mktemp("docs")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("segbench.cli.docgen.__main__.generate", lambda reports: pages)
        assert main(["--docs", str(out), "--reports", str(REPORTS)]) == 0
    return out


def _files(docs: Path) -> dict[str, bytes]:
    return {
        path.relative_to(docs).as_posix(): path.read_bytes()
        for folder in GENERATED_DIRS
        for path in sorted((docs / folder).rglob("*"))
        if path.is_file()
    }


def test_the_committed_pages_are_what_the_code_generates(regenerated):
    committed, fresh = _files(DOCS), _files(regenerated)
    changed = sorted(
        name for name in committed.keys() | fresh.keys() if committed.get(name) != fresh.get(name)
    )
    assert not changed, (
        f"docs pages out of date with the code or reports/: {', '.join(changed)}. Regenerate them with "
        f"`{REGENERATE}` (from the repository root) and commit the result."
    )


def test_a_yaml_key_added_without_regenerating_is_caught():
    extended = create_model(
        "BenchmarkConfig",
        __base__=schema_model(BUILTIN_BACKENDS),
        warmup_policy=(str, Field(default="fixed", description="A key the committed reference lacks.")),
    )
    page = yaml_reference(extended)
    assert "`warmup_policy`" in page and "A key the committed reference lacks." in page

    def yaml_differences(text: str) -> list[str]:
        return [
            line
            for line in differences({"reference/yaml.md": text}, DOCS)
            if line.startswith("reference/yaml")
        ]

    assert yaml_differences(page) == ["reference/yaml.md: differs from what the code generates"]
    assert yaml_differences(yaml_reference()) == []


def test_the_check_command_names_each_stale_page_and_the_fix(
    tmp_path, pages, regenerated, capsys, monkeypatch
):
    monkeypatch.setattr(
        "segbench.cli.docgen.__main__.generate", lambda reports: pages
    )  # generated once above
    docs = tmp_path / "docs"
    for name, data in _files(regenerated).items():
        (docs / name).parent.mkdir(parents=True, exist_ok=True)
        (docs / name).write_bytes(data)
    assert main(["--check", "--docs", str(docs), "--reports", str(REPORTS)]) == 0
    (docs / "reference" / "cli.md").write_text("edited by hand\n")
    (docs / "results" / "gone-run.md").write_text("a run deleted from reports/\n")
    (docs / "reference" / "yaml.md").unlink()
    assert main(["--check", "--docs", str(docs), "--reports", str(REPORTS)]) == 1
    err = capsys.readouterr().err
    assert "reference/cli.md: differs from what the code generates" in err
    assert "reference/yaml.md: missing" in err
    assert "results/gone-run.md: not generated any more (stale)" in err
    assert f"run {REGENERATE}" in err
    # Regenerating mends all three: the edit, the missing page and the stale one.
    assert main(["--docs", str(docs), "--reports", str(REPORTS)]) == 0
    assert _files(docs) == _files(regenerated)


def test_every_key_of_segbenchs_own_yaml_sections_has_a_description():
    """The YAML reference is only as good as the descriptions: a key of config/ without one fails."""
    undocumented = [
        f"{name}.{key}"
        for name, model in _models(schema_model(BUILTIN_BACKENDS)).items()
        if model.__module__.startswith("segbench.config")
        for key, field in model.model_fields.items()
        if not field.description
    ]
    assert undocumented == []


def test_field_notes_read_the_comment_beside_or_above_a_field_and_not_pragmas():
    class Documented(BaseModel):
        # Seconds before the first timed iteration.
        warmup_s: float = 0.0
        iterations: int = 10  # timed iterations per cell
        compile: bool = False  # fmt: skip

    assert field_notes(Documented) == {
        "warmup_s": "Seconds before the first timed iteration.",
        "iterations": "timed iterations per cell",
        "compile": "",
    }


def test_a_plugin_backend_registered_in_the_process_stays_out_of_the_yaml_reference():
    from tests.fakes import fake_backend

    outside = yaml_reference()
    with fake_backend.registered():  # as a test or a user's $SEGBENCH_PLUGINS leaves it registered
        assert "FakeConfig" in schema_model().model_json_schema()["$defs"]  # configs may use it ...
        assert yaml_reference() == outside  # ... the reference of segbench's own YAML does not list it
