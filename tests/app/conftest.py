"""The app as a real server for the API and browser tests: ``running_app`` and the module-wide ``server``."""
import os
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager

import pytest

from tests.conftest import REPO
from tests.inference.test_analysis import ship_random


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running_app(root, shipped: bool = False, **extra_env):
    """``python -m app`` on a free port with random-initialised weights shipped under ``root`` (or, with
    ``shipped``, the repository's own weights); its output goes to ``root / "server.log"``."""
    port = free_port()
    weights = REPO / "weights" if shipped else ship_random(root)
    (root / "tmp").mkdir()
    env = dict(os.environ, GRADIO_SERVER_PORT=str(port), SONOMARK_WEIGHTS=str(weights),
               SONOMARK_EXPORT_DIR=str(root / "exports"), SONOMARK_DATA=str(root / "no-data"),
               TMPDIR=str(root / "tmp"), OMP_NUM_THREADS="1")
    env.update(extra_env)
    log = open(root / "server.log", "w")  # a file, not a pipe: a chatty server never blocks on a full pipe
    proc = subprocess.Popen([sys.executable, "-m", "app"], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
                            text=True)
    (root / "server.pid").write_text(str(proc.pid))
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            if proc.poll() is not None:
                raise RuntimeError((root / "server.log").read_text())
            try:
                urllib.request.urlopen(url, timeout=2)
                break
            except OSError:
                time.sleep(1)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    with running_app(root) as url:
        yield url, root
