"""``python -m app`` (or ``python app/__main__.py``, as a Hugging Face Space runs it): the app.

Serves on http://127.0.0.1:7860 unless GRADIO_SERVER_NAME / GRADIO_SERVER_PORT say otherwise.
"""
import os
import signal
import sys
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
# A Space runs this file as a script, which puts app/ first on sys.path: a module there named like
# one of the standard library's (app/queue.py once was) would then shadow it for torch and gradio.
# The repository root replaces it, which also makes `app` importable.
if not __package__:
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

from app.ui import build, launch  # noqa: E402  (analytics must be off before gradio is imported)

if __name__ == "__main__":
    # A stop request (a Space restarting, `kill`) exits through Python, so that the visitors'
    # session folders are deleted (review.sessions_root) rather than left on disk.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    launch(build(), server_name=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"))
