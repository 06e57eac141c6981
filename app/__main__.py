"""``python -m app``: run SonoMark locally (http://127.0.0.1:7860)."""
import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from app.ui import build  # noqa: E402  (analytics must be off before gradio is imported)

if __name__ == "__main__":
    build().launch(server_name=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"))
