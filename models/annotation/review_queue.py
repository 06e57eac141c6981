"""The review queue: a folder of scans, pre-annotated in the background, most uncertain first.

The annotator steps through it (next, previous, skip); the position and the skipped scans are kept
in the queue's work folder, so a restart resumes where they left off. A scan whose case is in the
export folder counts as done.
"""
from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass
from pathlib import Path

from models.data.sonomark import current_entries
from models.inference.analysis import Analyzer
from models.inference.predict import find_inputs, predict, read_rows
from models.inference.scan import safe_stem

STATE = "queue_state.json"


@dataclass(frozen=True)
class QueueItem:
    path: str
    label: str
    uncertainty: float
    review: bool
    case_id: str  # the export case id this scan would get
    done: bool  # exported
    skipped: bool
    error: str


class ReviewQueue:
    def __init__(self, scans: Path, exports: Path, work_root: Path):
        self.scans, self.exports = Path(scans), Path(exports)
        if not self.scans.is_dir():
            raise FileNotFoundError(f"{self.scans}: no such folder; give the folder holding the scans to review")
        key = hashlib.sha1(str(self.scans.resolve()).encode()).hexdigest()[:10]
        self.work = Path(work_root) / f"{safe_stem(self.scans.name)}-{key}"
        self.work.mkdir(parents=True, exist_ok=True)
        self.inputs = find_inputs([self.scans])
        self._thread: threading.Thread | None = None
        self.failure: str | None = None

    # --- background pre-annotation -------------------------------------------------------------
    def start(self, analyzer: Analyzer) -> None:
        """Pre-annotate every scan not yet done, in a background thread (resumes a stopped run)."""
        if self._thread and self._thread.is_alive():
            return

        def run() -> None:
            try:
                predict(self.inputs, self.work, analyzer, sort="uncertainty", progress=False)
            except Exception as exc:  # noqa: BLE001 - reported to the person through `failure`
                self.failure = f"pre-annotation stopped: {exc}"

        self._thread = threading.Thread(target=run, name="sonomark-queue", daemon=True)
        self._thread.start()

    def wait(self, timeout: float | None = None) -> None:
        if self._thread:
            self._thread.join(timeout)

    @property
    def running(self) -> bool:
        return bool(self._thread and self._thread.is_alive())

    def progress(self) -> tuple[int, int]:
        """(pre-annotated, total) scans."""
        return len(read_rows(self.work / "predictions.csv")), len(self.inputs)

    # --- the ordered queue and the annotator's position ----------------------------------------------
    def _state(self) -> dict:
        path = self.work / STATE
        return json.loads(path.read_text()) if path.is_file() else {"current": None, "skipped": []}

    def _save_state(self, state: dict) -> None:
        tmp = self.work / (STATE + ".tmp")
        tmp.write_text(json.dumps(state))
        tmp.replace(self.work / STATE)

    def items(self) -> list[QueueItem]:
        rows = read_rows(self.work / "predictions.csv")
        exported = set(current_entries(self.exports)) if self.exports.is_dir() else set()
        skipped = set(self._state()["skipped"])
        items = []
        for r in rows:
            case_id = f"{safe_stem(Path(r['path']).name)}-{r['sha256'][:10]}" if r["sha256"] else ""
            items.append(QueueItem(r["path"], r["label"], float(r["uncertainty"] or 0), r["review"] == "true",
                                   case_id, case_id in exported, r["path"] in skipped, r["error"]))
        # most uncertain first; unreadable files last
        return sorted(items, key=lambda i: (bool(i.error), -i.uncertainty, i.path))

    def done_count(self) -> tuple[int, int]:
        items = self.items()
        return sum(i.done for i in items), len(self.inputs)

    def current(self) -> QueueItem | None:
        """The scan to annotate: where the annotator left off, else the first one not done."""
        items = [i for i in self.items() if not i.error]
        if not items:
            return None
        at = self._state()["current"]
        for i in items:
            if i.path == at:
                return i
        return next((i for i in items if not i.done and not i.skipped), items[0])

    def _move(self, step: int, skip: bool = False) -> QueueItem | None:
        items = [i for i in self.items() if not i.error]
        cur = self.current()
        if cur is None:
            return None
        state = self._state()
        if skip and cur.path not in state["skipped"]:
            state["skipped"].append(cur.path)
        k = [i.path for i in items].index(cur.path)
        state["current"] = items[max(0, min(len(items) - 1, k + step))].path
        self._save_state(state)
        return self.current()

    def next(self) -> QueueItem | None:
        return self._move(+1)

    def previous(self) -> QueueItem | None:
        return self._move(-1)

    def skip(self) -> QueueItem | None:
        return self._move(+1, skip=True)
