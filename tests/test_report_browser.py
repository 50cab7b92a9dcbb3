"""Every task's report.html opened in headless Chromium (Debian's `chromium` package, driven by
Playwright, which never downloads a browser of its own here): no console errors, no request
leaves the page, every image decodes, the summary's numbers in the rendered page equal
results.json, and a screenshot is not blank.

Skipped, with the reason in pytest's summary, where Chromium or Playwright is missing; `.ci/run`
installs Chromium first, so CI always runs it."""

import io
import json
import os
import shutil

import numpy as np
import pytest

from truthserum.report.headline import lookup

TASKS = ("membership", "attribute", "untargeted", "lm", "defenses", "attack")
# What the machine's probe found Chromium needs as root on this closed network: no sandbox (root),
# no GPU, and none of the background connections it would otherwise try at every start.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-default-apps", "--disable-extensions"]


def _chromium() -> str | None:
    named = os.environ.get("TRUTHSERUM_CHROMIUM")
    if named:
        return named
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


def _missing(reason: str) -> None:
    """Skip with the reason, or fail where the browser is required (CI sets
    TRUTHSERUM_REQUIRE_BROWSER after installing Chromium)."""
    if os.environ.get("TRUTHSERUM_REQUIRE_BROWSER"):
        pytest.fail(f"the browser test must run here, but {reason}")
    pytest.skip(f"browser test skipped: {reason}")


@pytest.fixture(scope="module")
def browser():
    executable = _chromium()
    if executable is None:
        _missing("no Chromium found (apt-get install chromium, or set TRUTHSERUM_CHROMIUM; .ci/run installs it)")
    try:
        from playwright.sync_api import sync_playwright
    except ModuleNotFoundError:
        _missing("the playwright package is not installed (requirements-test.lock)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


@pytest.mark.parametrize("task", TASKS)
def test_report_in_a_real_browser(browser, task_runs, task, tmp_path):
    from PIL import Image

    report = task_runs[task] / "report.html"
    results = json.loads((task_runs[task] / "results.json").read_text())
    page = browser.new_page(viewport={"width": 1280, "height": 800})  # a laptop screen at 100% zoom
    problems, requests = [], []
    page.on("console", lambda message: problems.append(f"{message.type}: {message.text}")
            if message.type in ("error", "warning") else None)
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    page.on("request", lambda request: requests.append(request.url))
    try:
        page.goto(report.resolve().as_uri(), wait_until="load")
        assert problems == []
        assert [url for url in requests if url != report.resolve().as_uri() and not url.startswith("data:")] == []
        images = page.evaluate("[...document.images].map(i => [i.alt, i.complete, i.naturalWidth, i.naturalHeight])")
        assert images and all(complete and width > 0 and height > 0 for _, complete, width, height in images), images
        numbers = page.evaluate("[...document.querySelectorAll('[data-path]')].map("
                                "e => [e.dataset.path, e.dataset.value, e.innerText])")
        assert len(numbers) >= 8
        for path, value, text in numbers:
            expected = lookup(results, tuple(json.loads(path)))
            assert float(value) == pytest.approx(expected, rel=1e-12, abs=1e-15)
            assert text.strip() and text.strip()[0] in "-0123456789"
        assert page.evaluate("document.documentElement.scrollWidth") <= 1280  # no sideways scrolling at 100%
        clipped = page.evaluate("[...document.querySelectorAll('.scroll')].filter("
                                "e => e.scrollWidth > e.clientWidth).map(e => e.getAttribute('aria-label'))")
        assert clipped == []  # every table fits its column: nothing hidden behind a scroll bar
        shot = Image.open(io.BytesIO(page.screenshot(full_page=False))).convert("L")
        pixels = np.asarray(shot, dtype=np.float64)
        assert pixels.std() > 10 and len(np.unique(pixels)) > 16  # text and tables, not one colour
    finally:
        page.close()
