"""Browser helpers for the console tests: Debian's chromium driven by Playwright.

Playwright's own browser download is never used: the tests give it the executable of the
system chromium (``apt-get install chromium``; scripts/bootstrap installs it). Without
chromium, or without the ``playwright`` package, the console tests skip and say why.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHOTS_ENV = "DQPULSE_SCREENSHOTS"  # a folder: scripts/screenshots sets it to docs/img


def chromium_path() -> str | None:
    configured = os.environ.get("DQPULSE_CHROMIUM")
    for candidate in (configured, shutil.which("chromium"), "/usr/bin/chromium",
                      shutil.which("chromium-browser")):
        if candidate and Path(candidate).is_file():
            return candidate
    return None


def missing_browser() -> str | None:
    """Why the browser tests cannot run here, or None when they can."""
    try:
        import playwright.sync_api  # noqa: F401 - only whether it imports
    except ImportError:
        return "the 'playwright' package is not installed (pip install -e '.[dev]')"
    if chromium_path() is None:
        return ("Debian's chromium is not installed (apt-get install chromium; "
                "scripts/bootstrap installs it)")
    return None


def skip_without_browser() -> pytest.MarkDecorator:
    """A ``pytestmark`` that skips, saying why, when chromium or playwright is absent."""
    reason = missing_browser()
    return pytest.mark.skipif(reason is not None, reason=reason or "")


@contextmanager
def launch_browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium_path(),
            args=["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"])
        try:
            yield browser
        finally:
            browser.close()


class ConsolePage:
    """A page that records console errors, page errors and failed requests."""

    def __init__(self, browser: Any, base_url: str, *, allowed_statuses: tuple[int, ...] = ()):
        self.context = browser.new_context(viewport={"width": 1400, "height": 900},
                                           base_url=base_url)
        self.page = self.context.new_page()
        self.page.set_default_timeout(20_000)
        self.errors: list[str] = []
        self.allowed_statuses = allowed_statuses
        self.page.on("console", self._on_console)
        self.page.on("pageerror", lambda exc: self.errors.append(f"page error: {exc}"))
        self.page.on("requestfailed", self._on_request_failed)
        self.page.on("response", self._on_response)

    def _on_console(self, message: Any) -> None:
        if message.type == "error":
            text = message.text
            # a 401 the page is designed to answer (it asks for a token) is not a fault
            if "401" in text and 401 in self.allowed_statuses:
                return
            self.errors.append(f"console {message.type}: {text}")

    def _on_request_failed(self, request: Any) -> None:
        # a request cut short by leaving the page (a range button reloads it) is no fault
        if "ERR_ABORTED" not in str(request.failure):
            self.errors.append(f"request failed: {request.url} {request.failure}")

    def _on_response(self, response: Any) -> None:
        if response.status >= 400 and response.status not in self.allowed_statuses:
            self.errors.append(f"HTTP {response.status}: {response.url}")

    def open(self, path: str) -> Any:
        """Load a console page and wait until its first render is done."""
        self.page.goto(path)
        self.wait_ready()
        return self.page

    def wait_ready(self) -> None:
        self.page.wait_for_function("window.dqpulse && window.dqpulse.ready === true")
        error = self.page.locator("#error")
        assert error.is_hidden(), f"the page shows an error: {error.text_content()}"

    def chart_points(self, chart_id: str, series: int = 1) -> int:
        """How many non-null values series ``series`` of a drawn uPlot chart holds."""
        return int(self.page.evaluate(
            "([id, s]) => { const c = window.dqpulse.charts[id];"
            " return c ? c.data[s].filter(v => v !== null && v !== undefined).length : -1; }",
            [chart_id, series]))

    def wait_chart(self, chart_id: str, min_points: int = 1) -> int:
        self.page.wait_for_function(
            "([id, n]) => { const c = window.dqpulse.charts[id];"
            " return c && c.data[1].filter(v => v !== null).length >= n; }",
            arg=[chart_id, min_points])
        canvas = self.page.locator(f'[data-chart="{chart_id}"] canvas')
        assert canvas.count() >= 1, f"chart {chart_id} has no canvas"
        box = canvas.first.bounding_box()
        assert box and box["width"] > 50 and box["height"] > 20, box
        return self.chart_points(chart_id)

    def scroll_through(self) -> None:
        """Scroll to the bottom and back so every lazily loaded chart draws."""
        height = int(self.page.evaluate("document.body.scrollHeight"))
        for y in range(0, height + 900, 700):
            self.page.evaluate(f"window.scrollTo(0, {y})")
            self.page.wait_for_timeout(60)
        self.page.wait_for_function("window.dqpulse.pending === 0")
        self.page.evaluate("window.scrollTo(0, 0)")

    def screenshot(self, name: str, fallback_dir: Path, *, full_page: bool = True) -> Path:
        folder = Path(os.environ.get(SHOTS_ENV) or fallback_dir)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{name}.png"
        self.page.wait_for_timeout(150)
        self.page.screenshot(path=str(path), full_page=full_page)
        return path

    def assert_no_errors(self) -> None:
        assert not self.errors, "browser errors:\n" + "\n".join(self.errors)

    def close(self) -> None:
        self.context.close()
