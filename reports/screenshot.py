"""The README's screenshot: the annotation workspace at 1440x900 on the shipped weights.

    python reports/screenshot.py [--example examples/busi_malignant_105.png] [--out reports/screenshots/workspace.png]

Starts ``python -m app`` on a free port with the repository's own weights (unlike the browser test,
which ships random ones), drives it in Debian's chromium with Playwright: analyse an example, draw a
box around the lesion and add one corrective click, and saves what a 1440x900 screen shows.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from tests.app.conftest import running_app  # noqa: E402
from tests.app.test_browser import CHROMIUM, FLAGS  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--example", type=Path, default=REPO / "examples" / "busi_malignant_105.png")
    ap.add_argument("--box", type=float, nargs=4, default=(0.34, 0.30, 0.62, 0.62),
                    help="the box's corners as fractions of the scan (x0 y0 x1 y1)")
    ap.add_argument("--click", type=float, nargs=2, default=(0.50, 0.47), help="one add-click, as fractions")
    ap.add_argument("--out", type=Path, default=REPO / "reports" / "screenshots" / "workspace.png")
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    # the server's exports and TMPDIR go to a fresh folder, removed afterwards, so that any clone can rerun this
    with tempfile.TemporaryDirectory(prefix="sonomark-screenshot-") as root, \
            running_app(Path(root), shipped=True) as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page(viewport={"width": 1440, "height": 900})
        page.goto(url)
        page.locator("input[type=file]").first.set_input_files(str(args.example))
        page.wait_for_timeout(1000)
        page.keyboard.press("a")
        page.get_by_text("Uncertainty").wait_for(timeout=120_000)
        box = page.locator("#sm-canvas img").first.bounding_box()
        nw, nh = page.evaluate("() => { const i = document.querySelector('#sm-canvas img');"
                               " return [i.naturalWidth, i.naturalHeight]; }")
        r = min(box["width"] / nw, box["height"] / nh, 1)
        ox, oy = box["x"] + (box["width"] - nw * r) / 2, box["y"] + (box["height"] - nh * r) / 2
        x0, y0, x1, y1 = args.box
        page.mouse.click(ox + x0 * nw * r, oy + y0 * nh * r)
        page.get_by_text("opposite corner").wait_for(timeout=60_000)
        page.mouse.click(ox + x1 * nw * r, oy + y1 * nh * r)
        page.get_by_text("Lesion 1: box").wait_for(timeout=120_000)
        page.keyboard.press("f")
        page.wait_for_timeout(500)
        page.mouse.click(ox + args.click[0] * nw * r, oy + args.click[1] * nh * r)
        page.get_by_text("1 click").wait_for(timeout=120_000)
        page.wait_for_timeout(1500)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(args.out))
        browser.close()
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
