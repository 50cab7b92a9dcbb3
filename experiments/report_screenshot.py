"""The screenshot of a run's report in docs/report.md: the page opened in headless Chromium
(Debian's package, driven by Playwright as in tests/test_report_browser.py) at a laptop's
1280 x 800 and 100% zoom, the top of the page (what a reader sees first) saved as PNG.

Run: ``.venv/bin/python experiments/report_screenshot.py runs/demo/report.html
docs/images/report-membership.png [--height 1000]``.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("report", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--height", type=int, default=1000, help="pixels from the top of the page (default 1000)")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    if executable is None:
        raise SystemExit("no Chromium found: apt-get install chromium")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        page.goto(args.report.resolve().as_uri(), wait_until="load")
        args.out.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(args.out), clip={"x": 0, "y": 0, "width": 1280, "height": args.height},
                        full_page=True)
        browser.close()


if __name__ == "__main__":
    main()
