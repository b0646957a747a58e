"""The sortable, filterable tables of report.html, without a browser: the row data attributes, the sort
keys, the inline script, and a page that is still one file asking nothing of the network."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest

from segbench.reports.interactive import (
    CELL_DIMENSIONS,
    CHECK_DIMENSIONS,
    SCRIPT,
    html_table,
    sort_key,
)
from segbench.reports.report import REPORT_HTML, REPORT_MD, write_report
from segbench.reports.rundata import load_run
from tests.fakes.runs import cell, check, write_run


class _Page(HTMLParser):
    """Tables by id with their rows' attributes and cells, every script, every resource attribute."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, dict[str, str | None]] = {}
        self.rows: dict[str, list[dict[str, str | None]]] = {}
        self.headers: dict[str, list[dict[str, str | None]]] = {}
        self.keys: dict[str, list[list[str | None]]] = {}
        self.scripts: list[dict[str, str | None]] = []
        self.script_text: list[str] = []
        self.resources: list[str] = []
        self._table: str | None = None
        self._in_script = False

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        self.resources += [value or "" for name, value in attrs if name in ("src", "href", "srcset")]
        if tag == "table":
            self._table = attributes.get("id") or ""
            self.tables[self._table] = attributes
            self.rows[self._table], self.headers[self._table], self.keys[self._table] = [], [], []
        elif tag == "th" and self._table is not None:
            self.headers[self._table].append(attributes)
        elif tag == "tr" and self._table is not None and "class" in attributes:
            self.rows[self._table].append(attributes)
            self.keys[self._table].append([])
        elif tag == "td" and self._table is not None and self.keys[self._table]:
            self.keys[self._table][-1].append(attributes.get("data-key"))
        elif tag == "script":
            self.scripts.append(attributes)
            self._in_script = True

    def handle_endtag(self, tag):
        if tag == "table":
            self._table = None
        elif tag == "script":
            self._in_script = False

    def handle_data(self, data):
        if self._in_script:
            self.script_text.append(data)


@pytest.fixture
def report(tmp_path):
    results = [
        cell("unet", "torch", 1, samples=[20.0, 21.0, 20.5]),
        cell("unet", "onnxruntime", 1, samples=[9.0, 9.5, 9.2]),
        cell("unet", "onnxruntime", 4, status="failed"),
        cell("fcn8s", "torch", 4, size=512, precision="fp16", samples=[100.0, 101.0]),
    ]
    numerics = [
        check(role="baseline", backend="torch", verdict="pass"),
        check(metric="miou", value=74.8, verdict="inconclusive", ci=(-0.7, 0.3), images_needed=140),
    ]
    run = write_run(tmp_path / "run", results, numerics)
    write_report(load_run(run))
    page = _Page()
    text = (run / REPORT_HTML).read_text()
    page.feed(text)
    return run, text, page


def test_rows_carry_their_filter_values_exactly(report):
    _, _, page = report
    assert page.tables["results"]["data-filters"] == " ".join(CELL_DIMENSIONS)
    assert page.tables["checks"]["data-filters"] == " ".join(CHECK_DIMENSIONS)
    cells = [{k: v for k, v in row.items() if k.startswith("data-")} for row in page.rows["results"]]
    assert cells[3] == {
        "data-model": "fcn8s", "data-backend": "torch", "data-device": "cpu", "data-precision": "fp16",
        "data-size": "512x512", "data-batch": "4", "data-status": "ok",
    }  # fmt: skip
    # A failed cell filters as "failed", not by its error text; a check by its verdict word, not its note.
    assert [row["data-status"] for row in page.rows["results"]] == ["ok", "ok", "failed", "ok"]
    assert [row["data-verdict"] for row in page.rows["checks"]] == ["baseline", "inconclusive"]
    assert [row["class"] for row in page.rows["results"]] == ["ok", "ok", "fail", "ok"]


def test_numeric_columns_carry_sort_keys_and_missing_values_none(report):
    _, _, page = report
    headers = page.headers["results"]
    numeric = [i for i, th in enumerate(headers) if th.get("data-type") == "number"]
    # size .. vs PyTorch, and peak host MiB; the rates and device memory are all missing here: text.
    assert numeric == [4, 5, 6, 7, 8, 9, 10, 13]
    p50 = 6
    assert [float(keys[p50]) if keys[p50] else None for keys in page.keys["results"]] == [
        20.5, 9.2, None, 100.5,
    ]  # fmt: skip
    assert [keys[4] for keys in page.keys["results"]] == ["65536.0", "65536.0", "65536.0", "262144.0"]
    assert all(keys[0] is None for keys in page.keys["results"])  # names are sorted as text


def test_the_page_is_one_file_with_an_inline_script_and_no_urls(report):
    run, text, page = report
    assert len(page.scripts) == 1 and page.scripts[0] == {}, "one inline script, no src"
    assert "".join(page.script_text).strip() == SCRIPT.strip()
    assert all(source.startswith("data:image/png;base64,") for source in page.resources)
    outside_images = re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "", text)
    assert not re.search(r"https?:|//[a-z]|url\(|@import|fetch\(|XMLHttpRequest|import\(", outside_images)
    # The Markdown report is unchanged by any of it.
    markdown = (run / REPORT_MD).read_text()
    assert "<script" not in markdown and "data-" not in markdown and "<select" not in markdown


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("44.18", 44.18), ("+0.000", 0.0), ("-0.011", -0.011), ("1.2e-07", 1.2e-07), ("3.85x", 3.85),
        ("+4.4%", 4.4), ("38.2%", 38.2), ("32 (0 moved)", 32.0), ("256x512", 131072.0), ("4", 4.0),
        ("-", None), ("", None), ("reference", None), ("[-0.017, -0.005]", None), ("<=0.00100", None),
        ("fcn8s", None), ("fp16", None), ("nan", None),
    ],
)  # fmt: skip
def test_sort_key_reads_the_view_models_numbers(text, key):
    assert sort_key(text) == (pytest.approx(key) if key is not None else None)


def test_a_mostly_numeric_column_still_sorts_as_numbers_and_plain_tables_stay_plain():
    rows = [(["a", "reference"], "ok"), (["b", "2.00x"], "ok"), (["c", "-"], "fail"), (["d", "0.50x"], "ok")]
    table = html_table(("name", "vs PyTorch"), rows, [{"model": name} for name in "abcd"], "t")
    assert '<th>name</th><th data-type="number">vs PyTorch</th>' in table
    assert '<td data-key="2.0">2.00x</td>' in table and "<td>reference</td>" in table
    assert '<tr class="ok" data-model="a">' in table and 'class="sortable"' in table
    plain = html_table(("field", "value"), [(["x", "1"], "")])
    assert plain == (
        "<table><thead><tr><th>field</th><th>value</th></tr></thead>"
        '<tbody><tr class=""><td>x</td><td>1</td></tr></tbody></table>'
    )
    with pytest.raises(ValueError, match="1 filter rows for 4 table rows"):
        html_table(("name", "vs PyTorch"), rows, [{"model": "a"}])


def test_filter_values_are_escaped(tmp_path):
    table = html_table(("model",), [(['x"><script>'], "ok")], [{"model": 'x"><script>'}])
    assert 'data-model="x&quot;&gt;&lt;script&gt;"' in table and "<script>" not in table
