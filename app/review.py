"""Review handlers: a scan in, the analysis, views and mask edits out, a saved case at the end.

Plain functions over the ``models`` library, tested without a browser. Each browser session owns a
``ReviewSession`` with a private workspace; on a public deployment its exports live there too and
are deleted with the session: when the tab closes, after ``idle_seconds()`` without a request (API
clients included), and with the server process.
"""
from __future__ import annotations

import atexit
import hashlib
import os
import re
import shutil
import tempfile
import threading
import time
from concurrent.futures import Future
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

from models.annotation import editing, export
from models.annotation.lesions import LesionMasks
from models.data import CLASSES
from models.inference import onnx_cache
from models.inference.analysis import Analysis, Analyzer
from models.inference.explain import heatmap_overlay
from models.inference.measure import Measurements
from models.inference.overlay import overlay_mask
from models.inference.scan import Scan, ScanError, frame_count, read_scan
from models.weights import WEIGHTS_DIR, Manifest

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"
PREDICTED = "predicted class"
MAX_ANNOTATOR = 100  # characters
IDLE_MINUTES = 20.0  # a public session's data is deleted after this long without a request (SONOMARK_IDLE_MINUTES)
ZIP_PREFIX = "sonomark-export-"
VIEW_MAX_SIDE = 1600  # px: the scan, mask and Grad-CAM views the page shows; analysis and export keep full size
CANVAS_MIN_SIDE = 1000  # px: the workspace canvas is drawn at least this large; the browser only ever scales down


def is_public() -> bool:
    """On a Hugging Face Space (or with SONOMARK_PUBLIC=1) every visitor's data stays in their session."""
    return bool(os.environ.get("SPACE_ID")) or os.environ.get("SONOMARK_PUBLIC") == "1"


def idle_seconds() -> float:
    return 60.0 * float(os.environ.get("SONOMARK_IDLE_MINUTES", IDLE_MINUTES))


def local_export_dir() -> Path:
    return Path(os.environ.get("SONOMARK_EXPORT_DIR", Path.home() / "SonoMark" / "exports"))


class ReviewError(Exception):
    """A problem the person can fix; the UI shows the message."""


@dataclass
class ReviewSession:
    workspace: Path  # private to this browser session, deleted with it
    export_dir: Path
    scan: Scan | None = None
    analysis: Analysis | None = None
    opened_at: str | None = None
    lesions: LesionMasks | None = None  # the masks being edited (app.workspace)
    embedding: Future | None = None  # the scan's LiteMedSAM embedding, computed in the background
    cam: np.ndarray | None = None  # the last Grad-CAM map, at the scan's size
    ruler: list = field(default_factory=list)  # up to two points on the depth ruler (scan pixels)
    tool: str = "Box"  # the workspace's tool; with the brush, the editor's layers hold the lesions
    presets: object | None = None  # the public demo's spacing presets live in the session (app.workspace)
    # one edit at a time per session: Gradio runs a session's events side by side (the "edit" lane), and two fast
    # clicks must not both take the box's first corner
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False, compare=False)


@lru_cache(maxsize=1)
def process_root() -> Path:
    """One private folder per server process, removed when the process exits: it holds Gradio's file cache
    (uploads and files handed to the browser, see ``use_private_gradio_cache``) and every session workspace,
    so that neither a session the browser never closed nor a stopped server leaves a visitor's data behind."""
    root = Path(tempfile.mkdtemp(prefix="sonomark-", dir=os.environ.get("GRADIO_TEMP_DIR") or None))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    return root


def sessions_root() -> Path:
    root = process_root() / "sessions"
    root.mkdir(exist_ok=True)
    return root


def use_private_gradio_cache() -> None:
    """Point Gradio's file cache at this process's folder (before the Blocks are built). Gradio serves a file
    already in its cache as it is, so the export zip in a workspace is never copied to a shared place."""
    os.environ["GRADIO_TEMP_DIR"] = str(process_root())


def keep_public_writes_in_process() -> None:
    """A public server writes nothing outside its process folder: no ONNX graphs in the home folder
    (``models.inference.onnx_cache``) unless the operator names a folder in SONOMARK_ONNX_CACHE."""
    if is_public():
        os.environ.setdefault(onnx_cache.ENV, onnx_cache.OFF)


def _workspace_prefix(owner: str | None) -> str:
    # The owner (Gradio's session hash) is hashed into the folder name, so that the end of a browser session
    # finds its workspaces without a registry, and no visitor-supplied text becomes a path.
    return f"session-{hashlib.sha256(owner.encode()).hexdigest()[:16]}-" if owner else "session-"


def new_session(public: bool | None = None, owner: str | None = None) -> ReviewSession:
    workspace = Path(tempfile.mkdtemp(prefix=_workspace_prefix(owner), dir=sessions_root()))
    public = is_public() if public is None else public
    return ReviewSession(workspace, workspace / "exports" if public else local_export_dir())


def close_session(session: ReviewSession | None) -> None:
    """Gradio's delete_callback for the session state (expired or evicted state)."""
    if session is not None:
        shutil.rmtree(session.workspace, ignore_errors=True)


def expire_idle(max_idle_s: float | None = None, now: float | None = None) -> int:
    """Delete the workspaces not used for ``max_idle_s`` (default ``idle_seconds()``); returns how many. A
    workspace's modification time is its last use (``_require`` touches it)."""
    max_idle_s = idle_seconds() if max_idle_s is None else max_idle_s
    now = time.time() if now is None else now
    gone = 0
    for workspace in sessions_root().iterdir():
        try:
            if now - workspace.stat().st_mtime > max_idle_s:
                shutil.rmtree(workspace, ignore_errors=True)
                gone += 1
        except FileNotFoundError:  # ended meanwhile
            continue
    return gone


def sweep_seconds() -> int:
    """How often idle data is looked for: several times per idle period, at least every minute."""
    return max(1, min(60, int(idle_seconds() / 4)))


def start_idle_expiry() -> threading.Thread:
    """Expire idle workspaces in the background, every ``sweep_seconds()``."""
    def loop() -> None:
        while True:
            time.sleep(sweep_seconds())
            expire_idle()
    thread = threading.Thread(target=loop, name="idle-expiry", daemon=True)
    thread.start()
    return thread


def end_browser_session(owner: str | None) -> None:
    """The browser session ``owner`` ended (tab closed or reloaded): delete its workspaces now. Gradio keeps a
    closed session's state, and so would keep the visitor's scans, for an hour."""
    if owner:
        for workspace in sessions_root().glob(_workspace_prefix(owner) + "*"):
            shutil.rmtree(workspace, ignore_errors=True)


@lru_cache(maxsize=2)
def analyzer(weights: Path = WEIGHTS_DIR) -> Analyzer:
    return Analyzer(weights)


def shipped_classifiers(weights: Path = WEIGHTS_DIR) -> list[str]:
    """The classifiers Grad-CAM can explain: those with shipped weights, not every registered one."""
    return Manifest.read(weights).shipped("classify")


def warm_up() -> None:
    """Load the models while the server starts, so that the first visitor does not wait for them; a
    problem is printed here and shown again to whoever analyses a scan."""
    try:
        analyzer().warm_up()
    except Exception as e:  # noqa: BLE001 - a background thread has nobody else to tell
        print(f"SonoMark: the models could not be loaded at start-up: {e}", flush=True)


def examples() -> list[str]:
    return [str(p) for p in sorted(EXAMPLES.glob("*.png"))]


def verdict_markdown(a: Analysis) -> str:
    probs = " · ".join(f"{c} **{100 * p:.0f}%**" for c, p in sorted(a.probabilities.items(), key=lambda kv: -kv[1]))
    lines = [f"## {a.label.capitalize()}", probs, f"Uncertainty {a.uncertainty:.2f} (0 sure, 1 unsure)"]
    if a.review:
        lines.append("**⚠ Review needed:** " + "; ".join(a.review_reasons))
    else:
        lines.append("The models agree.")
    if a.region:
        lines.append(f"<small>Screen frame: {a.region.describe(a.mask.shape)}.</small>")
    return "\n\n".join(lines)


def per_model_rows(a: Analysis) -> list[list]:
    """Each classifier's calibrated probabilities, the lesion graders' (benign or malignant of the lesion found, no
    normal call), then the ensemble's."""
    graded = ([["lesion graders (crop around the mask)", *(round(a.lesion_grade[c], 3) if c in a.lesion_grade else ""
                                                          for c in CLASSES)]] if a.lesion_grade else [])
    return [[name, *(round(p[c], 3) for c in CLASSES)] for name, p in a.per_model.items()] + graded + \
        [["ensemble", *(round(a.probabilities[c], 3) for c in CLASSES)]]


def measurements_markdown(a: Analysis, scan: Scan, m: Measurements | None | str = "analysis") -> str:
    """The lesion's measurements: the analysis's own, or ``m`` (of the mask as edited)."""
    m = a.measurements if isinstance(m, str) else m
    versions = ", ".join(f"{n} `{v}`" for n, v in a.model_versions.items())
    if m is None:
        body = "No lesion segmented."
    else:
        u = m.unit
        spacing = (f" (pixel spacing {scan.spacing_mm[0]:.3f} x {scan.spacing_mm[1]:.3f} mm from {scan.spacing_source})"
                   if scan.spacing_mm else f" ({scan.spacing_refused})" if scan.spacing_refused
                   else " (no pixel spacing in the file: pixels)")
        body = "\n".join([
            f"- area **{m.area:.1f} {u}²**{spacing}",
            f"- longest diameter **{m.longest_diameter:.1f} {u}**, across it {m.perpendicular_diameter:.1f} {u}",
            f"- depth / width **{m.depth_to_width:.2f}**" + (" — taller than wide" if m.taller_than_wide else ""),
            f"- circularity {m.circularity:.2f}, margin irregularity {m.margin_irregularity:.2f}",
        ] + ([f"- {m.components} separate regions; the largest is measured"] if m.components > 1 else []))
    where = f"cine frame {scan.frame}; " if scan.frame is not None else ""
    return f"### Lesion\n{body}\n\n<small>{where}Models: {versions}; mask threshold {a.threshold:.2f}</small>"


def summary(a: Analysis) -> dict:
    """The analysis as plain data (what the API returns besides images)."""
    m = a.measurements
    return {"scan": a.scan_name, "sha256": a.scan_sha256, "label": a.label, "probabilities": a.probabilities,
            "per_model": a.per_model, "lesion_grade": a.lesion_grade, "uncertainty": a.uncertainty, "review": a.review,
            "review_reasons": list(a.review_reasons), "lesion_pixels": int(a.mask.sum()),
            "measurements": None if m is None else {k: getattr(m, k) for k in (
                "unit", "area", "longest_diameter", "perpendicular_diameter", "depth_to_width", "circularity",
                "margin_irregularity", "components")},
            "region": None if a.region is None else asdict(a.region),
            "model_versions": a.model_versions}


def frames(path: str | None) -> int:
    """How many frames the upload holds: more than one for a cine DICOM loop, whose frame the person picks."""
    return frame_count(path) if path else 1


def open_scan(path: str | None, session: ReviewSession | None, owner: str | None = None,
              frame: int | None = None) -> ReviewSession:
    """Read and analyse the scan at ``path`` (frame ``frame`` of a cine loop) in ``session`` (a new one, owned
    by browser session ``owner``, if there is none yet or it expired)."""
    if not path:
        raise ReviewError("Upload a scan or pick an example first.")
    try:
        # the frame counts only for a cine loop (a slider's value is sent for every upload)
        scan = read_scan(path, frame=None if frame is None or frames(path) == 1 else int(frame))
    except ScanError as exc:
        raise ReviewError(str(exc)) from exc
    try:
        engine = analyzer()
    except FileNotFoundError as exc:
        raise ReviewError(f"No models to analyze with: {exc}") from exc
    analysis = engine.analyze(scan)
    if session is None or not session.workspace.is_dir():  # only now: a failed first analysis leaves no workspace
        session = new_session(owner=owner)
    with session.lock:  # never while an edit of the previous scan is under way
        if session.embedding is not None:
            session.embedding.cancel()  # the previous scan's, if it has not started: never computed for nothing
        session.scan, session.analysis = scan, analysis
        session.lesions, session.embedding, session.cam, session.ruler = None, None, None, []
    session.opened_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return session


def view_of(image: np.ndarray, nearest: bool = False) -> np.ndarray:
    """``image`` at most ``VIEW_MAX_SIDE`` on its longer side: drawing and sending a view costs what is shown,
    not what was uploaded (a 6000 x 6000 scan took 1.4 s to overlay and 5 s to encode, at every change)."""
    h, w = image.shape[:2]
    scale = VIEW_MAX_SIDE / max(h, w)
    if scale >= 1:
        return image
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_NEAREST if nearest else cv2.INTER_AREA)


def canvas_scale(shape: tuple[int, int]) -> float:
    """View pixels per scan pixel on the workspace canvas: small scans drawn larger (Gradio's image only ever
    scales a picture down to fit, and maps a click back on that assumption), large ones at most VIEW_MAX_SIDE."""
    side = max(shape)
    return min(VIEW_MAX_SIDE, max(CANVAS_MIN_SIDE, side)) / side


def scan_view(session: ReviewSession) -> np.ndarray:
    scan, _ = _require(session)
    return view_of(scan.display)


def mask_view(session: ReviewSession, fill: bool = True, contour: bool = True, opacity: float = 0.35) -> np.ndarray:
    scan, a = _require(session)
    mask = view_of(a.mask.astype(np.uint8), nearest=True) > 0
    return overlay_mask(view_of(scan.display), mask, alpha=opacity if fill else 0.0, contour=contour)


def cam_view(session: ReviewSession, model: str, target: str, method: str, opacity: float = 0.5) -> np.ndarray:
    scan, _ = _require(session)
    try:
        heat = analyzer().explain(scan, model, None if target == PREDICTED else target, method)
    except ValueError as exc:
        raise ReviewError(str(exc)) from exc
    session.cam = heat.cam.astype(np.float32)
    shown = view_of(scan.display)
    return heatmap_overlay(shown, view_of(heat.cam.astype(np.float32)), opacity,
                           region_in_view(scan, (shown.shape[1], shown.shape[0])))


def region_in_view(scan: Scan, size: tuple[int, int]) -> np.ndarray | None:
    """Where a view of ``scan`` ``size`` = (width, height) shows what the models read; None when they read it all."""
    if scan.region is None:
        return None
    return cv2.resize(scan.region.inside(scan.shape).astype(np.uint8), size, interpolation=cv2.INTER_NEAREST) > 0


def editor_start(session: ReviewSession) -> dict:
    scan, a = _require(session)
    return editing.editor_value(scan.display, a.mask)


def editor_clear(session: ReviewSession) -> dict:
    scan, _ = _require(session)
    return editing.editor_value(scan.display, np.zeros(scan.shape, bool))


def save(value: dict, label: str, annotator: str, session: ReviewSession) -> str:
    """Save the case with the mask painted in the editor's layers (one per lesion): the API's ``/export``."""
    scan, _ = _require(session)
    try:
        lesions = editing.masks_from_editor(value, scan.shape)
    except editing.LayerError as exc:
        raise ReviewError(str(exc)) from exc
    return save_lesions(lesions, label, annotator, session)


def save_lesions(lesions: list[np.ndarray], label: str, annotator: str, session: ReviewSession) -> str:
    """Save the case with ``lesions`` (one mask each); returns the status (Markdown). ``export_zip`` packs the
    export on request."""
    scan, a = _require(session)
    if label not in CLASSES:
        raise ReviewError(f"Choose the label ({', '.join(CLASSES)}) before saving.")
    annotator = " ".join(re.sub(r"[\x00-\x1f\x7f]+", " ", annotator or "").split())  # one plain line
    if len(annotator) > MAX_ANNOTATOR:
        raise ReviewError(f"The annotator's name is {len(annotator):,} characters; use at most {MAX_ANNOTATOR} "
                          "(a name or initials).")
    lesions = [m for m in lesions if m.any()]
    mask = np.zeros(scan.shape, bool)
    for m in lesions:
        mask |= m
    if label == "normal" and mask.any():
        raise ReviewError("A normal scan has no lesion: clear the mask, or choose benign or malignant.")
    if label != "normal" and not mask.any():
        raise ReviewError(f"A {label} case needs its lesion painted; draw the mask or choose normal.")
    saved = export.save_case(session.export_dir, export.Annotation(
        scan=scan, label=label, label_set_by="model" if label == a.label else "annotator", mask=mask,
        annotator=annotator or "anonymous", model_mask=a.mask, model_label=a.label,
        probabilities=a.probabilities, per_model=a.per_model, model_versions=a.model_versions,
        started_at=session.opened_at, lesions=tuple(lesions) if len(lesions) > 1 else ()))
    dice = saved.entry["dice_model_vs_final"]
    where = "in this session's export (download the zip to keep it)" if is_public() else f"in `{session.export_dir}`"
    several = f", {len(lesions)} lesions" if len(lesions) > 1 else ""
    return (f"Saved **{saved.case_id}** revision {saved.revision} as {label}{several} "
            f"(Dice model vs yours {dice:.2f}) {where}.")


def export_zip(session: ReviewSession | None) -> str:
    """The export packed as one zip in the session's workspace, on request (packing grows with the export);
    the previous zip of the session is replaced, so one is kept."""
    workspace = _workspace(session)
    if not export.current_entries(session.export_dir):
        raise ReviewError("Nothing saved yet: save a case first, then download the export.")
    for old in workspace.glob(ZIP_PREFIX + "*.zip"):
        old.unlink(missing_ok=True)
    # a new name each time: a browser never serves an earlier zip from its cache
    dest = workspace / f"{ZIP_PREFIX}{datetime.now(timezone.utc):%Y%m%d-%H%M%S-%f}.zip"
    return str(export.zip_export(session.export_dir, dest))


def _analyze_first() -> str:
    return "Analyze a scan first." + (f" (A session's data is deleted after {idle_seconds() / 60:g} minutes without "
                                      "use.)" if is_public() else "")


def _workspace(session: ReviewSession | None) -> Path:
    """The session's workspace, marked as used now; a session whose workspace expired or ended is refused."""
    if session is None:
        raise ReviewError(_analyze_first())
    try:
        os.utime(session.workspace)
    except FileNotFoundError:
        raise ReviewError(f"This session's data was deleted after {idle_seconds() / 60:g} minutes without use; "
                          "analyze the scan again.") from None
    return session.workspace


def _require(session: ReviewSession | None) -> tuple[Scan, Analysis]:
    if session is None or session.scan is None or session.analysis is None:
        raise ReviewError(_analyze_first())
    _workspace(session)
    return session.scan, session.analysis
