"""The app in a real browser (Debian's chromium driven by Playwright): upload, verdict, overlays,
paint on the mask editor, save, and the painted pixels are in the saved mask on disk."""
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.app.conftest import running_app
from tests.conftest import REPO

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(os.environ.get("SONOMARK_ARTIFACTS", REPO / "test-artifacts"))
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"]

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="chromium not installed (apt-get install chromium)")


def test_review_paint_and_save_in_a_browser(server):
    playwright = pytest.importorskip("playwright.sync_api", reason="playwright not installed")
    url, root = server
    example = REPO / "examples" / "busi_malignant_105.png"
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1800})
        page.goto(url)
        page.locator("input[type=file]").first.set_input_files(str(example))
        page.wait_for_timeout(1000)
        page.get_by_role("button", name="Analyze").click()
        page.get_by_text("Uncertainty").wait_for(timeout=120_000)
        assert page.get_by_text("not a medical device").count() >= 1
        assert page.locator("img").count() >= 1  # the predicted-lesion overlay
        page.get_by_role("button", name="Clear", exact=True).last.click()
        page.wait_for_timeout(2500)
        page.get_by_role("button", name="Brush", exact=True).click()
        page.wait_for_timeout(500)
        box = page.locator("canvas").last.bounding_box()
        cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
        page.mouse.move(cx - 40, cy - 10)
        page.mouse.down()
        for k in range(20):  # a stroke through the editor's centre, which is the scan's centre
            page.mouse.move(cx - 40 + 4 * k, cy - 10 + k, steps=2)
        page.mouse.up()
        page.wait_for_timeout(800)
        page.get_by_role("radio", name="malignant").check()
        page.get_by_placeholder("your name or initials").fill("browser-test")
        page.get_by_role("button", name="Save case").click()
        page.get_by_text("revision 1 as malignant").wait_for(timeout=60_000)
        page.get_by_role("button", name="Download the export (zip)").click()  # packed on request, not per save
        page.get_by_text("sonomark-export-").first.wait_for(timeout=60_000)
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "browser_review.png"), full_page=True)
        browser.close()
    (mask_file,) = (root / "exports" / "malignant").glob("*_mask.png")
    mask = np.asarray(Image.open(mask_file)) > 127
    h, w = np.asarray(Image.open(example)).shape[:2]
    assert mask.shape == (h, w)
    assert mask[h // 2 - 5:h // 2 + 5, w // 2 - 5:w // 2 + 5].any()  # the painted pixels, where they were painted
    ys, xs = np.nonzero(mask)
    assert 0 < mask.mean() < 0.1 and ys.min() > 0.2 * h and ys.max() < 0.8 * h and xs.min() > 0.1 * w


def test_a_closed_public_session_takes_its_workspace_while_the_server_serves_another(tmp_path):
    """Public mode: a visitor who closes the tab takes their scans and saves with them at once (not when
    the server stops), and another visitor's session goes on untouched."""
    playwright = pytest.importorskip("playwright.sync_api", reason="playwright not installed")
    example = REPO / "examples" / "busi_benign_10.png"

    def analyze(page):
        page.goto(url)
        page.locator("input[type=file]").first.set_input_files(str(example))
        page.wait_for_timeout(1000)
        page.get_by_role("button", name="Analyze").click()
        page.get_by_text("Uncertainty").wait_for(timeout=120_000)

    def workspaces():
        return sorted((tmp_path / "tmp").glob("sonomark-*/sessions/session-*"))

    with running_app(tmp_path, SONOMARK_PUBLIC="1") as url, playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        leaving, staying = browser.new_context(), browser.new_context()
        analyze(leaving.new_page())
        (first,) = workspaces()
        analyze(staying.new_page())
        assert len(workspaces()) == 2
        leaving.close()
        deadline = time.time() + 60
        while first.exists() and time.time() < deadline:
            time.sleep(0.5)
        assert not first.exists(), "the closed session's workspace outlived it"
        (second,) = workspaces()
        page = staying.pages[0]
        page.get_by_role("button", name="Analyze").click()  # the remaining visitor is still served
        page.get_by_text("Uncertainty").wait_for(timeout=120_000)
        assert workspaces() == [second]
        browser.close()


def test_a_cine_loop_gets_a_frame_slider_and_the_chosen_frame_is_analysed(server, tmp_path):
    playwright = pytest.importorskip("playwright.sync_api", reason="playwright not installed")
    from tests.inference.test_scan import GRAY, dicom
    url, _ = server
    cine = tmp_path / "cine.dcm"
    cine.write_bytes(dicom(np.stack([GRAY, 255 - GRAY, GRAY // 2, GRAY]), frames=4))
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1200})
        page.goto(url)
        assert page.get_by_text("Cine frame").count() == 0  # hidden until a loop is uploaded
        page.locator("input[type=file]").first.set_input_files(str(cine))
        page.get_by_text("Cine frame (0-3)").wait_for(timeout=30_000)
        page.get_by_label("number input for Cine frame (0-3)").fill("2")
        page.get_by_label("number input for Cine frame (0-3)").press("Enter")
        page.get_by_role("button", name="Analyze").click()
        page.get_by_text("Uncertainty").wait_for(timeout=120_000)
        page.get_by_text("cine frame 2").first.wait_for(timeout=10_000)
        browser.close()
