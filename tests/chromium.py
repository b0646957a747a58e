"""Headless Chromium for the browser tests: Debian's package (/usr/bin/chromium) driven by Playwright's
Python API, never a browser Playwright downloads. One place for the path, the flags and the skip."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path("/usr/bin/chromium")
# No sandbox: the tests run as root in a container; the rest keeps Chromium from calling home, which
# this machine's closed network would refuse.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]  # fmt: skip


def sync_api() -> Any:
    """Playwright's sync API, or a skip that says what is missing (the browser or the package)."""
    if not CHROMIUM.is_file():
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    return pytest.importorskip(
        "playwright.sync_api", reason="playwright is not installed (the dev extra has it)"
    )


@contextmanager
def chromium_context(profile: Path, **options: Any) -> Iterator[Any]:
    """A browser context with a fresh profile in ``profile``; ``options`` go to Playwright's launch."""
    with sync_api().sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(profile), executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS, **options
        )
        try:
            yield context
        finally:
            context.close()
