"""The built docs site in a real browser: it loads with no console error and no request leaving it, and
its search (a web worker over the search index, so it needs http, not file://) finds "tolerance"."""

from __future__ import annotations

import functools
import http.server
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.chromium import CHROMIUM, chromium_context

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not CHROMIUM.is_file(), reason=f"no Chromium at {CHROMIUM} (apt-get install chromium)"
    ),
]
pytest.importorskip("playwright.sync_api", reason="playwright is not installed (the dev extra has it)")
pytest.importorskip("mkdocs", reason="mkdocs is not installed (the docs and dev extras have it)")
pytest.importorskip("material", reason="mkdocs-material is not installed (the docs and dev extras have it)")


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Iterator[str]:
    """The site built with --strict, served on 127.0.0.1 at a free port; yields its base URL."""
    out = tmp_path_factory.mktemp("site")
    build = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(ROOT / "mkdocs.yml"),
         "--site-dir", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )  # fmt: skip
    assert build.returncode == 0, build.stdout + build.stderr

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:  # one line per file would flood -rA
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(out)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_the_site_loads_cleanly_and_its_search_finds_tolerance(site, tmp_path):
    errors: list[str] = []
    outside: list[str] = []
    with chromium_context(tmp_path / "profile", viewport={"width": 1280, "height": 900}) as context:
        page = context.new_page()
        page.on(
            "console", lambda message: errors.append(message.text) if message.type == "error" else None
        )
        page.on("pageerror", lambda error: errors.append(str(error)))

        def only_the_site(route: Any) -> None:
            if route.request.url.startswith(site):
                route.continue_()
            else:  # a font, a script or a tracker from elsewhere: the site must work without it
                outside.append(route.request.url)
                route.abort()

        context.route("**/*", only_the_site)
        # The search worker fetches its index after the page loads: type once it has it.
        with page.expect_response(lambda r: r.url.endswith("/search/search_index.json")) as index:
            response = page.goto(site + "/", wait_until="load")
        assert response is not None and response.ok
        assert index.value.ok
        assert "segbench" in page.title()
        search = page.locator("input.md-search__input")
        search.click()
        # Key by key, as a reader types: the theme searches on key events, which fill() does not send.
        search.press_sequentially("tolerance", delay=20)
        hits = page.locator(".md-search-result__item")
        hits.first.wait_for(state="visible", timeout=20_000)
        assert hits.count() > 0
        assert "tolerance" in hits.first.inner_text().lower()
        meta = page.locator(".md-search-result__meta").inner_text()
        assert "matching" in meta.lower() and not meta.lower().startswith("no "), meta
    assert errors == []
    assert outside == []
