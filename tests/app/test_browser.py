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


def test_workspace_box_clicks_brush_and_keys_in_a_browser(server):
    """At 1440x900: analyse with A, draw a box with two clicks on the canvas, add a click (F), undo and redo
    (Z, Y), save with S; the saved mask lies in the box. Then the brush (E) paints a second revision."""
    playwright = pytest.importorskip("playwright.sync_api", reason="playwright not installed")
    url, root = server
    example = REPO / "examples" / "busi_malignant_105.png"
    h, w = np.asarray(Image.open(example)).shape[:2]
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page(viewport={"width": 1440, "height": 900})
        page.goto(url)
        page.locator("input[type=file]").first.set_input_files(str(example))
        page.wait_for_timeout(1000)
        page.keyboard.press("a")
        page.get_by_text("Uncertainty").wait_for(timeout=120_000)
        assert page.get_by_text("not a medical device").count() >= 1
        canvas = page.locator("#sm-canvas img").first

        def laid_out():  # the canvas's image decoded and laid out, not just in the DOM
            page.wait_for_function("() => { const i = document.querySelector('#sm-canvas img'); return i &&"
                                   " i.complete && i.naturalWidth > 0 && i.getBoundingClientRect().width > 0; }",
                                   timeout=30_000)

        laid_out()  # the analysed scan arrives as a new image
        box = canvas.bounding_box()
        assert box["width"] >= 640, "the scan must be the largest thing on the screen"
        assert box["y"] + box["height"] <= 900, "the canvas must fit the screen without scrolling"
        natural = page.evaluate("() => { const i = document.querySelector('#sm-canvas img');"
                                " return [i.naturalWidth, i.naturalHeight]; }")
        r = min(box["width"] / natural[0], box["height"] / natural[1], 1)  # Gradio's own click mapping
        ox, oy = box["x"] + (box["width"] - natural[0] * r) / 2, box["y"] + (box["height"] - natural[1] * r) / 2

        def click(fx, fy):  # at a fraction of the scan
            page.mouse.click(ox + fx * natural[0] * r, oy + fy * natural[1] * r)

        click(0.30, 0.30)
        page.get_by_text("opposite corner").wait_for(timeout=30_000)
        # the first corner comes back drawn on a new image: a click while it is being swapped in was lost once
        # in CI (no box followed); click again only on the laid-out image
        laid_out()
        page.wait_for_timeout(1000)
        click(0.60, 0.65)
        page.get_by_text("Lesion 1: box").wait_for(timeout=120_000)  # the first prompt may wait for LiteMedSAM
        page.keyboard.press("f")
        # the tool's word comes back before the click: under load, a tool change answered after the click once
        # replaced the click's result on the screen (the app no longer resends the canvas between tools)
        page.get_by_text("Add (click).", exact=True).wait_for(timeout=30_000)
        page.wait_for_timeout(500)
        click(0.45, 0.47)
        page.get_by_text("box + 1 click").wait_for(timeout=30_000)
        page.keyboard.press("z")
        page.get_by_text("Undone.").wait_for(timeout=30_000)
        page.keyboard.press("y")
        page.get_by_text("Redone.").wait_for(timeout=30_000)
        page.get_by_role("radio", name="malignant").check()
        page.get_by_placeholder("your name or initials").fill("browser-test")
        page.evaluate("document.activeElement.blur()")
        page.keyboard.press("s")
        page.get_by_text("revision 1 as malignant").wait_for(timeout=60_000)
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "browser_workspace.png"))
        (mask_file,) = (root / "exports" / "malignant").glob("*_mask.png")
        mask = np.asarray(Image.open(mask_file)) > 127
        ys, xs = np.nonzero(mask)
        assert mask.shape == (h, w) and mask.any()
        assert xs.min() >= 0.28 * w and xs.max() <= 0.62 * w and ys.min() >= 0.28 * h and ys.max() <= 0.67 * h

        page.keyboard.press("e")  # the brush: the editor takes the canvas's place, with the lesion as its layer
        page.get_by_text("Layer 1").wait_for(timeout=30_000)
        # said once the lesion layers have arrived: a stroke drawn before was replaced by them (lost once in CI)
        page.get_by_text("paint on the active layer").wait_for(timeout=60_000)
        page.wait_for_timeout(3000)
        page.get_by_role("button", name="Brush", exact=True).click()
        # The editor's canvas is laid out (and the scan in it) before the stroke: under a loaded CI machine a
        # stroke drawn earlier was once lost, and revision 2 saved revision 1's mask.
        page.wait_for_function("() => { const c = [...document.querySelectorAll('canvas')].pop();"
                               " const r = c && c.getBoundingClientRect(); return r && r.width > 200 && r.height > 150; }",
                               timeout=30_000)
        page.wait_for_timeout(1000)
        ed = page.locator("canvas").last.bounding_box()
        cx, cy = ed["x"] + ed["width"] / 2, ed["y"] + ed["height"] / 2
        page.mouse.move(cx - 150, cy + 60)
        page.mouse.down()
        for k in range(20):  # a stroke below the centre of the editor, which is the scan's centre
            page.mouse.move(cx - 150 + 8 * k, cy + 60, steps=2)
        page.mouse.up()
        page.wait_for_timeout(1500)
        page.screenshot(path=str(ARTIFACTS / "browser_brush_stroke.png"))  # what was painted, if revision 2 lacks it
        page.keyboard.press("s")
        page.get_by_text("revision 2 as malignant").wait_for(timeout=60_000)
        page.get_by_role("button", name="Export").click()
        page.get_by_role("button", name="Download the export (zip)").click()  # packed on request, not per save
        page.get_by_text("sonomark-export-").first.wait_for(timeout=60_000)
        browser.close()
    (mask_file,) = (root / "exports" / "malignant").glob("*_mask.png")
    second = np.asarray(Image.open(mask_file)) > 127
    assert (second & ~mask).sum() > 100  # the stroke, added to the box's lesion
    assert (second & mask).sum() >= 0.9 * mask.sum()


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
