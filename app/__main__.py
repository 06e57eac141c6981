"""``sonomark app`` (or ``python -m app``, or ``python app/__main__.py`` as a Hugging Face Space runs
it): the review app.

Serves on http://127.0.0.1:7860 unless --host / --port (or GRADIO_SERVER_NAME / GRADIO_SERVER_PORT)
say otherwise. ``--weights DIR`` (or SONOMARK_WEIGHTS) serves another weights folder, e.g. one
written by ``sonomark adapt``.
"""
import argparse
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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="sonomark app", description=__doc__.split("\n\n")[0].replace("\n", " "))
    ap.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
                    help="address to serve on (default: %(default)s; 0.0.0.0 serves the network)")
    ap.add_argument("--port", type=int, default=None,
                    help="port (default: GRADIO_SERVER_PORT, else the first free one from 7860, as Gradio picks)")
    ap.add_argument("--weights", type=Path, help="weights folder (default: SONOMARK_WEIGHTS, else the shipped weights/)")
    args = ap.parse_args(argv)
    if args.weights:
        if "models.weights" in sys.modules:
            raise SystemExit("error: --weights must be given before the app is imported; set SONOMARK_WEIGHTS instead")
        if not (args.weights / "manifest.json").is_file():
            raise SystemExit(f"error: {args.weights / 'manifest.json'} not found; give a folder written by "
                             "`sonomark ship` or `sonomark adapt`")
        # Read when models.weights is imported: every default weights folder in the app follows it.
        os.environ["SONOMARK_WEIGHTS"] = str(args.weights.resolve())
    from app.ui import build, launch  # analytics must be off before gradio is imported

    # A stop request (a Space restarting, `kill`) exits through Python, so that the visitors'
    # session folders are deleted (review.sessions_root) rather than left on disk.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    launch(build(), server_name=args.host, server_port=args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
