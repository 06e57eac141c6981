"""Where the repository's own files live (the committed split, reports, weights, runs)."""
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
