"""Workspace handlers: the one canvas where the annotator looks and corrects (box and click prompts, the
brush, undo and redo, several lesions, the ruler), over ``models.annotation``. Plain functions, tested
without a browser; ``app.ui`` binds them to components."""
from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from functools import lru_cache

import cv2
import numpy as np

from models.annotation import canvas, editing, spacing
from models.annotation.lesions import LesionMasks
from models.annotation.prompts import Click, Prompt, PromptError, PromptSegmenter, in_region, mask_logits
from models.inference.explain import heatmap_overlay
from models.inference.measure import measure

from . import review
from .review import ReviewError, ReviewSession

BOX, ADD, REMOVE, BRUSH, RULER = "Box", "Add (click)", "Remove (click)", "Brush / eraser", "Ruler"
TOOLS = (BOX, ADD, REMOVE, BRUSH, RULER)
NEW = "+ new lesion"
_embedder = ThreadPoolExecutor(max_workers=1, thread_name_prefix="embed")  # one at a time on the 2 cores


_loading = threading.Lock()


def segmenter() -> PromptSegmenter:
    """LiteMedSAM, loaded once per process (the warm-up, the embedding thread and a prompt may all ask at once)."""
    with _loading:
        return _segmenter()


@lru_cache(maxsize=1)
def _segmenter() -> PromptSegmenter:
    return PromptSegmenter()


def _sentence(exc: Exception) -> str:
    text = str(exc)
    return text[:1].upper() + text[1:] + ("" if text.endswith(".") else ".")


def warm_up() -> None:
    """Load LiteMedSAM at start-up (its encoder's ONNX export takes a few seconds); a problem is shown later."""
    try:
        segmenter()
    except Exception as e:  # noqa: BLE001 - a background thread has nobody else to tell
        print(f"SonoMark: the box and click tool could not be loaded at start-up: {e}", flush=True)


def start_embedding(session: ReviewSession) -> None:
    """Compute the scan's image embedding in the background while the person reads the analysis."""
    session.embedding = _embedder.submit(lambda g: segmenter().embed(g), session.scan.model_view)


def _embedding(session: ReviewSession):
    future: Future | None = session.embedding
    if future is None:
        start_embedding(session)
        future = session.embedding
    try:
        return future.result()
    except Exception as exc:  # noqa: BLE001 - shown to the person; the analysis itself still works
        session.embedding = None
        raise ReviewError(f"The box and click tool could not start: {exc}. The brush still works.") from exc


def state(session: ReviewSession) -> LesionMasks:
    review._require(session)
    if session.lesions is None:
        session.lesions = LesionMasks.from_mask(session.analysis.mask, split=True)
    return session.lesions


def lesion_choices(session: ReviewSession) -> dict:
    s = state(session)
    choices = [f"Lesion {k + 1}" for k in range(len(s.lesions))] + [NEW]
    return {"choices": choices, "value": choices[min(s.active, len(choices) - 1)]}


def view(session: ReviewSession, fill: bool = True, contour: bool = True, opacity: float = 0.35,
         show_cam: bool = False) -> np.ndarray:
    """The canvas: the scan (under Grad-CAM when shown), the lesions, the prompt and the ruler, drawn at
    ``review.canvas_scale``."""
    scan, _ = review._require(session)
    h, w = scan.shape
    scale = review.canvas_scale(scan.shape)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    base = cv2.resize(scan.display, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    if show_cam and session.cam is not None:  # a new scan has no map until Explain is pressed
        base = heatmap_overlay(base, cv2.resize(session.cam, size, interpolation=cv2.INTER_LINEAR), opacity,
                               review.region_in_view(scan, size))
    return canvas.draw(base, state(session), fill, contour, opacity, session.ruler, scan.region)


def measurements(session: ReviewSession) -> str:
    """The measurements of the mask as it is now (the largest lesion), with the spacing in use."""
    scan, a = review._require(session)
    m = measure(state(session).union, scan.spacing_mm)
    return review.measurements_markdown(a, scan, m)


def to_scan(session: ReviewSession, index: tuple[int, int] | list[int]) -> tuple[float, float]:
    """A click on the canvas (view pixels) in scan pixels."""
    scan, _ = review._require(session)
    h, w = scan.shape
    scale = review.canvas_scale(scan.shape)
    x, y = index
    return float(np.clip(x / scale, 0, w - 1)), float(np.clip(y / scale, 0, h - 1))


def click(session: ReviewSession, tool: str, index: tuple[int, int] | list[int]) -> str:
    """A click on the canvas with ``tool``; returns what happened (for the status line)."""
    s = state(session)
    x, y = to_scan(session, index)
    if tool == RULER:
        session.ruler = [*session.ruler, (x, y)][-2:] if len(session.ruler) < 2 else [(x, y)]
        return ("Ruler: click the second tick." if len(session.ruler) == 1 else
                "Ruler: type the distance between the two ticks (mm) and press *Set from ruler*.")
    if tool == BRUSH:
        return "Paint in the editor."
    if tool == BOX:
        if s.corner is None:
            s.corner = (x, y)
            s.box = None
            return "Box: click the opposite corner."
        box = (*s.corner, x, y)
        s.corner, s.clicks, s.last = None, [], None
        return _prompt(session, s, Prompt(box=box))
    if tool in (ADD, REMOVE):
        s.corner = None
        clicks = (*s.clicks, Click(x, y, tool == ADD))
        base = s.last.base if s.last is not None else None
        if base is None and s.active < len(s.lesions):  # a lesion drawn another way: its mask is the base
            base = mask_logits(session.scan.to_view(s.lesions[s.active]), _embedding(session))
        if base is None:
            raise ReviewError("Draw a box around the lesion first (B), then click to add or remove.")
        return _prompt(session, s, Prompt(clicks=clicks), base)
    raise ReviewError(f"Unknown tool {tool!r}; choose one of {', '.join(TOOLS)}.")


def _prompt(session: ReviewSession, s: LesionMasks, prompt: Prompt, base=None) -> str:
    try:  # the embedding is of what the models read: a screen capture's region
        result = segmenter().segment(_embedding(session), in_region(prompt, session.scan.region), base)
    except PromptError as exc:
        s.corner = None
        raise ReviewError(_sentence(exc)) from exc
    box = prompt.box if prompt.box is not None else s.box
    mask = session.scan.place(result.mask)
    s.set_active(mask, keep_prompt=True)
    if not mask.any():  # the lesion is gone: the next prompt starts a new one, not on its neighbour
        s.new_lesion()
        return ("No lesion in that box: draw it around the lesion, or paint it." if prompt.box is not None
                else "The lesion is removed (Z to undo).")
    s.box, s.clicks, s.last = box, list(prompt.clicks), result
    n = len(s.clicks)
    what = ("box" if box else "mask") + (f" + {n} click{'s' * (n > 1)}" if n else "")
    confidence = f" (model's confidence {result.score:.2f})" if not n else ""
    return f"Lesion {s.active + 1}: {what}{confidence}. Click to add (F) or remove (G); Z undoes."


def undo(session: ReviewSession) -> str:
    return "Undone." if state(session).undo() else "Nothing to undo."


def redo(session: ReviewSession) -> str:
    return "Redone." if state(session).redo() else "Nothing to redo."


def new_lesion(session: ReviewSession) -> str:
    s = state(session)
    s.new_lesion()
    return f"Lesion {s.active + 1}: draw a box around it (or paint it)."


def pick(session: ReviewSession, choice: str) -> str:
    s = state(session)
    if choice == NEW or not choice:
        return new_lesion(session)
    s.select(int(choice.split()[-1]) - 1)
    return f"Lesion {s.active + 1} selected."


def remove_lesion(session: ReviewSession) -> str:
    s = state(session)
    if s.active >= len(s.lesions):
        return "No lesion selected."
    s.remove_active()
    return "Lesion removed (Z to undo)."


def clear(session: ReviewSession) -> str:
    state(session).clear()
    return "Mask cleared (Z to undo)."


def reset(session: ReviewSession) -> str:
    s = state(session)
    s.replace(LesionMasks.from_mask(session.analysis.mask, split=True).lesions)
    s.active = 0
    return "Back to the models' mask (Z to undo)."


def smooth(session: ReviewSession) -> str:
    s = state(session)
    if s.active >= len(s.lesions):
        raise ReviewError("Select a lesion to smooth.")
    s.set_active(editing.smooth_mask(s.lesions[s.active]), keep_prompt=False)
    return "Smoothed (Z to undo)."


def grabcut(session: ReviewSession) -> str:
    s = state(session)
    if s.active >= len(s.lesions):
        raise ReviewError("Paint a rough mask over the lesion first; refinement snaps it to the edges.")
    s.set_active(editing.grabcut_refine(session.scan.gray, s.lesions[s.active]), keep_prompt=False)
    return "Edges refined with GrabCut (Z to undo)."


def editor_value(session: ReviewSession) -> dict:
    scan, _ = review._require(session)
    return editing.editor_value(scan.display, state(session).lesions)


def from_editor(session: ReviewSession, value: dict | None) -> str:
    """The brush's layers (one per lesion) become the lesions."""
    scan, _ = review._require(session)
    s = state(session)
    try:
        masks = editing.masks_from_editor(value, scan.shape)
    except editing.LayerError as exc:
        raise ReviewError(str(exc)) from exc
    s.replace(masks)
    return "Brush edits kept."


def presets(session: ReviewSession | None) -> spacing.Presets:
    """Scanner presets: in ``~/SonoMark/spacing_presets.json`` locally, in the session on the public demo."""
    if not review.is_public():
        return _local_presets()
    if session is None:
        return spacing.Presets(None)
    if session.presets is None:
        session.presets = spacing.Presets(None)
    return session.presets


@lru_cache(maxsize=1)
def _local_presets() -> spacing.Presets:
    return spacing.Presets(review.local_export_dir().parent / "spacing_presets.json")


def set_spacing(session: ReviewSession, presets: spacing.Presets, preset: str, typed: float | None,
                ruler_mm: float | None) -> str:
    """Give a scan without calibration a pixel spacing: from the ruler (two clicks and their distance in mm) when
    both points are there, else the typed mm per pixel, else the preset's remembered value."""
    scan, _ = review._require(session)
    if scan.spacing_mm and scan.spacing_source and not scan.spacing_source.startswith((spacing.TYPED, spacing.RULER)):
        raise ReviewError(f"This scan carries its own pixel spacing ({scan.spacing_source}); it is kept.")
    try:
        if len(session.ruler) == 2 and ruler_mm:
            value, source = spacing.from_ruler(*session.ruler, float(ruler_mm)), spacing.RULER
        elif typed:
            value, source = spacing.checked(float(typed)), spacing.TYPED
        elif presets.get(preset):
            value, source = presets.get(preset)["mm_per_pixel"], presets.get(preset)["source"]
        else:
            raise spacing.SpacingError("type the mm per pixel, or click two ruler ticks (Ruler tool) and type their "
                                       "distance in mm, or pick a preset you saved before")
        name = presets.set(preset, value, source) if (preset or "").strip() else ""
    except spacing.SpacingError as exc:
        raise ReviewError(_sentence(exc)) from exc
    session.scan = spacing.with_spacing(replace(scan, spacing_mm=None), value, source, name)
    session.ruler = []
    return f"Pixel spacing {value:.4f} mm ({source}{f', saved as preset {name!r}' if name else ''})."
