"""report.html in a real browser: headless Chromium (Debian's, /usr/bin/chromium) driven by Playwright.

The page is a committed run re-rendered by ``segbench report``: it loads with no console error and no
request leaving the file, every plot decodes, a click on the p50 header sorts the rows by number and a
second click reverses them, and the backend filter hides every other backend's rows.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from segbench.cli import main
from segbench.reports.report import REPORT_HTML, write_report
from segbench.reports.rundata import load_run
from tests.chromium import chromium_context
from tests.fakes.runs import cell, write_run

pytestmark = pytest.mark.browser

DEFAULT_RUN = Path(__file__).parents[2] / "reports" / "cpu-default"
P50 = "p50 ms"


@pytest.fixture(scope="module")
def browser_context(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A Chromium with a fresh profile, or a skip that says what is missing."""
    with chromium_context(tmp_path_factory.mktemp("chromium-profile")) as context:
        yield context


class Opened:
    """A page opened from a file, with every request, console error and page error it caused."""

    def __init__(self, context: Any, path: Path) -> None:
        self.requests: list[str] = []
        self.errors: list[str] = []
        self.page = context.new_page()
        self.page.on("request", lambda request: self.requests.append(request.url))
        self.page.on("console", lambda message: message.type == "error" and self.errors.append(message.text))
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))
        self.page.goto(path.as_uri(), wait_until="load")

    def column(self, table: str, header: str, *, visible_only: bool = True) -> list[str]:
        """The texts of one column of ``table`` (its id), top to bottom."""
        return self.page.evaluate(
            """([table, header, visibleOnly]) => {
                const element = document.getElementById(table);
                const index = Array.from(element.tHead.rows[0].cells)
                    .findIndex((th) => th.textContent.trim() === header);
                return Array.from(element.tBodies[0].rows)
                    .filter((row) => !visibleOnly || !row.hidden)
                    .map((row) => row.cells[index].textContent);
            }""",
            [table, header, visible_only],
        )

    def header(self, table: str, text: str) -> Any:
        return self.page.locator(f"#{table} thead th").filter(has_text=text)


@pytest.fixture(scope="module")
def committed_report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The committed CPU run (two backends, six models) re-rendered from its results."""
    run = tmp_path_factory.mktemp("report") / "cpu-default"
    derived = shutil.ignore_patterns("onnx", "plots", "report.*", "*.csv", "*.parquet", "*.log")
    shutil.copytree(DEFAULT_RUN, run, ignore=derived)
    assert main(["report", str(run)]) == 0
    return run / REPORT_HTML


@pytest.fixture
def opened(browser_context: Any, committed_report: Path) -> Iterator[Opened]:
    page = Opened(browser_context, committed_report)
    yield page
    page.page.close()


def test_the_report_loads_offline_and_every_plot_decodes(opened: Opened, committed_report: Path):
    page = opened.page
    assert page.title().startswith("segbench report")
    assert opened.errors == []
    assert opened.requests, "the page itself should be requested"
    leaving = [url for url in opened.requests if not url.startswith(("file://", "data:"))]
    assert leaving == []
    sizes = page.eval_on_selector_all("img", "images => images.map(i => [i.complete, i.naturalWidth])")
    assert len(sizes) >= 5, "the plots should be in the page"
    assert all(complete and width > 0 for complete, width in sizes)
    # The script ran: every header of the big tables is a sort button, and each has a filter bar.
    assert page.locator("#results thead th button.sort").count() == page.locator("#results thead th").count()
    assert page.locator('.filters[data-table="results"] select').count() >= 4
    assert page.locator('.filters[data-table="checks"] select').count() >= 2


def test_a_click_on_p50_sorts_the_rows_by_number_and_a_second_reverses_them(opened: Opened):
    before = opened.column("results", P50)
    assert len(before) == 46 and all(text != "-" for text in before)
    values = [float(text) for text in before]
    assert values != sorted(values), "the committed order should not already be sorted by p50"
    header = opened.header("results", P50)
    assert header.get_attribute("aria-sort") is None

    header.click()
    texts = opened.column("results", P50)
    assert [float(text) for text in texts] == sorted(values)
    assert header.get_attribute("aria-sort") == "ascending"
    assert texts != sorted(texts), "the p50s span digit counts, where a text sort would order them otherwise"

    header.click()
    assert [float(text) for text in opened.column("results", P50)] == sorted(values, reverse=True)
    assert header.get_attribute("aria-sort") == "descending"
    # Sorting another column takes the mark off this one.
    opened.header("results", "batch").click()
    assert header.get_attribute("aria-sort") is None


def test_the_backend_filter_hides_every_other_backend(opened: Opened):
    page = opened.page
    rows = page.locator("#results tbody tr")
    backends = opened.column("results", "backend", visible_only=False)
    assert {"torch", "onnxruntime"} <= set(backends), "the run should hold rows of both backends"
    count = page.locator('.filters[data-table="results"] .count')
    assert count.text_content() == f"{len(backends)} of {len(backends)} rows"

    select = page.locator('.filters[data-table="results"] select[name="backend"]')
    select.select_option("onnxruntime")
    shown = opened.column("results", "backend")
    assert shown and set(shown) == {"onnxruntime"}
    assert len(shown) == backends.count("onnxruntime")
    torch_rows = page.locator('#results tbody tr[data-backend="torch"]')
    assert torch_rows.count() == backends.count("torch")
    assert all(not torch_rows.nth(i).is_visible() for i in range(torch_rows.count()))
    assert count.text_content() == f"{len(shown)} of {len(backends)} rows"

    # Filters combine, and "all" brings every row back.
    page.locator('.filters[data-table="results"] select[name="batch"]').select_option("4")
    assert set(opened.column("results", "batch")) == {"4"}
    assert set(opened.column("results", "backend")) == {"onnxruntime"}
    page.locator('.filters[data-table="results"] select').evaluate_all(
        "selects => selects.forEach(s => { s.selectedIndex = 0; s.dispatchEvent(new Event('change')); })"
    )
    assert sum(rows.nth(i).is_visible() for i in range(rows.count())) == len(backends)
    assert opened.errors == []


def test_failed_cells_sort_last_both_ways_and_filter_by_status(browser_context: Any, tmp_path: Path):
    results = [
        cell("unet", "torch", 1, samples=[20.0, 21.0, 20.5]),
        cell("unet", "onnxruntime", 4, status="failed"),
        cell("unet", "onnxruntime", 1, samples=[9.0, 9.5, 9.2]),
        cell("unet", "torch", 4, samples=[100.0, 101.0, 100.5]),
    ]
    run = write_run(tmp_path / "run", results)
    write_report(load_run(run))
    opened = Opened(browser_context, run / REPORT_HTML)
    header = opened.header("results", P50)
    header.click()
    assert opened.column("results", P50) == ["9.20", "20.50", "100.50", "-"]
    header.click()
    assert opened.column("results", P50) == ["100.50", "20.50", "9.20", "-"]
    status = opened.page.locator('.filters[data-table="results"] select[name="status"]')
    status.select_option("failed")
    assert opened.column("results", "status") == ["failed: RuntimeError: out of memory"]
    assert opened.errors == []
    opened.page.close()
