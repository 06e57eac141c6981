"""The Space configuration and the way a Space starts the app."""
import os
import subprocess
import sys
import time
import urllib.request

import yaml

from tests.app.conftest import free_port
from tests.conftest import REPO


def front_matter() -> dict:
    text = (REPO / "README.md").read_text()
    assert text.startswith("---\n"), "README.md must start with the Space's YAML front matter"
    return yaml.safe_load(text.split("---\n")[1])


def test_space_yaml_and_readme_front_matter_agree():
    space = yaml.safe_load((REPO / "space.yaml").read_text())
    assert front_matter() == space
    assert space["sdk"] == "gradio" and (REPO / space["app_file"]).is_file()
    import gradio
    assert space["sdk_version"] == gradio.__version__
    pinned = [l for l in (REPO / "requirements.txt").read_text().splitlines() if l.startswith("gradio==")]
    assert pinned == [f"gradio=={space['sdk_version']}"]
    assert space["python_version"] == f"{sys.version_info.major}.{sys.version_info.minor}"


def test_app_starts_as_a_space_starts_it(tmp_path):
    """`python <app_file>` from the repository root, as the Space runner does."""
    port = free_port()
    env = dict(os.environ, GRADIO_SERVER_PORT=str(port), GRADIO_SERVER_NAME="127.0.0.1",
               SONOMARK_DATA=str(tmp_path / "no-data"))
    app_file = yaml.safe_load((REPO / "space.yaml").read_text())["app_file"]
    proc = subprocess.Popen([sys.executable, app_file], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            assert proc.poll() is None, proc.stdout.read()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as r:
                    assert r.status == 200 and "SonoMark" in r.read().decode()
                    return
            except OSError:
                time.sleep(1)
        raise AssertionError("the app did not answer within 120 s")
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_no_app_module_shadows_the_standard_library():
    """The Space runs app/__main__.py as a script; app/queue.py once shadowed `queue` and the app died
    importing torch. Keep the folder free of standard-library names."""
    clashes = {p.stem for p in (REPO / "app").glob("*.py")} & set(sys.stdlib_module_names)
    assert not clashes, f"rename app/{', app/'.join(sorted(clashes))}: they shadow the standard library"
