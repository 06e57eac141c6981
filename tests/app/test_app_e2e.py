"""The app launched as a server and driven through its named API with gradio_client."""
import numpy as np
from PIL import Image

from tests.app.conftest import running_app
from tests.conftest import REPO


def test_analyze_and_export_through_the_api(server):
    from gradio_client import Client, handle_file

    url, root = server
    client = Client(url, verbose=False)
    api = client.view_api(return_format="dict", print_info=False)
    assert {"/analyze", "/export", "/download_export", "/explain"} <= set(api["named_endpoints"])
    example = REPO / "examples" / "busi_malignant_105.png"
    out = client.predict(handle_file(str(example)), True, True, 0.35, api_name="/analyze")
    verdict, table, canvas_image, measurements, editor, label, summary, lesion, status = out
    assert verdict.startswith("## ") and summary["scan"] == example.name
    assert set(summary["probabilities"]) == {"benign", "malignant", "normal"}
    from app.review import canvas_scale
    h, w = np.asarray(Image.open(example)).shape[:2]
    assert np.asarray(Image.open(canvas_image)).shape[:2] == (round(h * canvas_scale((h, w))),
                                                              round(w * canvas_scale((h, w))))
    assert lesion["value"] in ("Lesion 1", "+ new lesion") and example.name in status  # the lesion list (an update)
    layer = root / "layer.png"
    h, w = np.asarray(Image.open(example)).shape[:2]
    paint = np.zeros((h, w, 4), np.uint8)
    paint[40:80, 50:120] = (0, 220, 90, 200)
    Image.fromarray(paint).save(layer)
    status = client.predict({"background": handle_file(str(example)), "layers": [handle_file(str(layer))],
                             "composite": None}, "malignant", "api-test", api_name="/export")
    assert "revision 1" in status
    assert client.predict(api_name="/download_export").endswith(".zip")
    masks = list((root / "exports" / "malignant").glob("*_mask.png"))
    assert len(masks) == 1
    saved = np.asarray(Image.open(masks[0])) > 127
    assert saved[40:80, 50:120].all() and saved.sum() == 40 * 70


def test_two_public_sessions_do_not_see_each_other_nor_outlive_the_server(tmp_path):
    import zipfile
    from concurrent.futures import ThreadPoolExecutor

    from gradio_client import Client, handle_file

    root = tmp_path / "public"
    root.mkdir()
    examples = [REPO / "examples" / "busi_benign_10.png", REPO / "examples" / "busbra_bus_0005-l.png"]

    def visit(example):
        client = Client(url, verbose=False)
        client.predict(handle_file(str(example)), True, True, 0.35, api_name="/analyze")
        h, w = np.asarray(Image.open(example)).shape[:2]
        layer = tmp_path / f"{example.stem}-layer.png"
        paint = np.zeros((h, w, 4), np.uint8)
        paint[20:60, 20:60] = (0, 220, 90, 200)
        Image.fromarray(paint).save(layer)
        client.predict({"background": handle_file(str(example)), "layers": [handle_file(str(layer))],
                        "composite": None}, "benign", "visitor", api_name="/export")
        return zipfile.ZipFile(client.predict(api_name="/download_export")).read("manifest.jsonl").decode()

    with running_app(root, SONOMARK_PUBLIC="1") as url, ThreadPoolExecutor(2) as pool:
        manifests = list(pool.map(visit, examples))
        sessions = list((root / "tmp").glob("sonomark-*/sessions/session-*"))
        assert len(sessions) == 2 and all(any(s.rglob("*_mask.png")) for s in sessions)
    assert not any((root / "tmp").glob("sonomark-*"))  # stopping the server deleted the visitors' data
    assert not [p for p in (root / "tmp").rglob("*") if p.is_file() and p.suffix in (".png", ".zip")]  # caches too
    for mine, other, manifest in ((examples[0], examples[1], manifests[0]), (examples[1], examples[0], manifests[1])):
        assert mine.name in manifest and other.name not in manifest
    assert not (root / "exports").exists()  # public mode never writes to the shared folder


def test_an_api_only_public_session_expires_when_idle_and_errors_leave_no_traceback(tmp_path):
    """An API client never closes a tab: its workspace, its zip and its uploads go after the idle time. A
    person's error comes back as a message, with nothing in the server log; the zip is served from the
    session's workspace, never copied into a shared cache."""
    import time

    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    root = tmp_path / "public"
    root.mkdir()
    pixels = np.asarray(Image.open(REPO / "examples" / "busi_benign_10.png")).copy()
    pixels[0, 0] ^= 1  # a visitor's own scan, not a copy of an example (those stay cached for everyone)
    example = tmp_path / "visitor_scan.png"
    Image.fromarray(pixels).save(example)
    h, w = pixels.shape[:2]
    layer = tmp_path / "layer.png"
    paint = np.zeros((h, w, 4), np.uint8)
    paint[20:60, 20:60] = (0, 220, 90, 200)
    Image.fromarray(paint).save(layer)
    bad = tmp_path / "notes.png"
    bad.write_text("not a scan")
    with running_app(root, SONOMARK_PUBLIC="1", SONOMARK_IDLE_MINUTES="0.1") as url:
        client = Client(url, verbose=False)
        for _ in range(3):
            try:
                client.predict(handle_file(str(bad)), True, True, 0.35, api_name="/analyze")
                raise AssertionError("a text file was analysed")
            except AppError as exc:
                assert "notes.png: not an image" in str(exc)
        client.predict(handle_file(str(example)), True, True, 0.35, api_name="/analyze")
        editor = {"background": handle_file(str(example)), "layers": [handle_file(str(layer))], "composite": None}
        client.predict(editor, "benign", "api", api_name="/export")
        for _ in range(2):
            client.predict(api_name="/download_export")
        zips = list((root / "tmp").rglob("*.zip"))
        assert len(zips) == 1 and "/sessions/session-" in str(zips[0])  # one zip, in the workspace, not copied
        workspaces = list((root / "tmp").glob("sonomark-*/sessions/session-*"))
        assert len(workspaces) == 1
        deadline = time.time() + 60
        while workspaces[0].exists() and time.time() < deadline:
            time.sleep(1)
        assert not workspaces[0].exists(), "the idle API session's workspace was kept"
        try:
            client.predict(editor, "benign", "api", api_name="/export")
            raise AssertionError("a save went to an expired session")
        except AppError as exc:
            assert "minutes without use" in str(exc)  # the workspace or the state expired first
        deadline = time.time() + 60  # Gradio's cache of the session's uploads goes after the idle time too
        while any((root / "tmp").rglob("visitor_scan.png")) and time.time() < deadline:
            time.sleep(1)
        assert not any((root / "tmp").rglob("visitor_scan.png")) and not any((root / "tmp").rglob("*.zip"))
    log = (root / "server.log").read_text()
    assert "Traceback" not in log, log
