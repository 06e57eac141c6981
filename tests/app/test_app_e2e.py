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
    assert {"/analyze", "/export", "/explain"} <= set(api["named_endpoints"])
    example = REPO / "examples" / "busi_malignant_105.png"
    out = client.predict(handle_file(str(example)), True, True, 0.35, api_name="/analyze")
    verdict, table, scan_image, mask_image, measurements, editor, label, summary, cam = out
    assert verdict.startswith("## ") and summary["scan"] == example.name
    assert set(summary["probabilities"]) == {"benign", "malignant", "normal"}
    assert np.asarray(Image.open(mask_image)).shape[:2] == np.asarray(Image.open(example)).shape[:2]
    layer = root / "layer.png"
    h, w = np.asarray(Image.open(example)).shape[:2]
    paint = np.zeros((h, w, 4), np.uint8)
    paint[40:80, 50:120] = (0, 220, 90, 200)
    Image.fromarray(paint).save(layer)
    status, zip_file = client.predict({"background": handle_file(str(example)), "layers": [handle_file(str(layer))],
                                       "composite": None}, "malignant", "api-test", api_name="/export")
    assert "revision 1" in status and zip_file.endswith(".zip")
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
        _, zip_file = client.predict({"background": handle_file(str(example)), "layers": [handle_file(str(layer))],
                                      "composite": None}, "benign", "visitor", api_name="/export")
        return zipfile.ZipFile(zip_file).read("manifest.jsonl").decode()

    with running_app(root, SONOMARK_PUBLIC="1") as url, ThreadPoolExecutor(2) as pool:
        manifests = list(pool.map(visit, examples))
        sessions = list((root / "tmp").glob("sonomark-sessions-*/session-*"))
        assert len(sessions) == 2 and all(any(s.rglob("*_mask.png")) for s in sessions)
    assert not any((root / "tmp").glob("sonomark-sessions-*"))  # stopping the server deleted the visitors' data
    for mine, other, manifest in ((examples[0], examples[1], manifests[0]), (examples[1], examples[0], manifests[1])):
        assert mine.name in manifest and other.name not in manifest
    assert not (root / "exports").exists()  # public mode never writes to the shared folder
