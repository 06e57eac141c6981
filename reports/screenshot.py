"""The README's screenshot: the app on the shipped weights, an example analysed and explained.

    python reports/screenshot.py [--example examples/busi_malignant_105.png] [--out reports/screenshots/review.png]

Starts ``python -m app`` on a free port with the repository's own weights (unlike the browser test,
which ships random ones), drives it in Debian's chromium with Playwright, and saves a full-page PNG.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from tests.test_app_e2e import running_app  # noqa: E402
from tests.test_browser import CHROMIUM, FLAGS  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--example", type=Path, default=REPO / "examples" / "busbra_bus_0002-l.png")
    ap.add_argument("--out", type=Path, default=REPO / "reports" / "screenshots" / "review.png")
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    # the server's exports and TMPDIR go to a fresh folder, removed afterwards, so that any clone can rerun this
    with tempfile.TemporaryDirectory(prefix="sonomark-screenshot-") as root, \
            running_app(Path(root), shipped=True) as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1500})
        page.goto(url)
        page.locator("input[type=file]").first.set_input_files(str(args.example))
        page.wait_for_timeout(1000)
        page.get_by_role("button", name="Analyze").click()
        page.get_by_text("Uncertainty").wait_for(timeout=120_000)
        page.get_by_role("button", name="Explain").click()
        page.wait_for_timeout(8000)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(args.out), full_page=True)
        browser.close()
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
