"""The app launched as a server and driven through its named API with gradio_client."""
import os
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager

import numpy as np
import pytest
from PIL import Image

from tests.conftest import REPO
from tests.inference.test_analysis import ship_random


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running_app(root, shipped: bool = False, **extra_env):
    """``python -m app`` on a free port with random-initialised weights shipped under ``root`` (or, with
    ``shipped``, the repository's own weights)."""
    port = free_port()
    weights = REPO / "weights" if shipped else ship_random(root)
    (root / "tmp").mkdir()
    env = dict(os.environ, GRADIO_SERVER_PORT=str(port), SONOMARK_WEIGHTS=str(weights),
               SONOMARK_EXPORT_DIR=str(root / "exports"), SONOMARK_DATA=str(root / "no-data"),
               TMPDIR=str(root / "tmp"), OMP_NUM_THREADS="1", **extra_env)
    proc = subprocess.Popen([sys.executable, "-m", "app"], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(proc.stdout.read())
            try:
                urllib.request.urlopen(url, timeout=2)
                break
            except OSError:
                time.sleep(1)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    with running_app(root) as url:
        yield url, root


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
