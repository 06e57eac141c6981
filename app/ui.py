"""The Gradio Blocks layout. Handlers only adapt the library's functions to components."""
from __future__ import annotations

import functools
import os
import threading
from pathlib import Path

import gradio as gr

from models.annotation import editing
from models.data import CLASSES, DEFAULT_DATA_DIR
from models.inference.explain import CAM_METHODS

from . import explorer, queue_ui, review

DISCLAIMER = ("SonoMark is research software, **not a medical device**: it must not be used to diagnose "
              "or to decide on treatment.")
UPLOAD_TYPES = [".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".dcm", ".dicom"]
MAX_UPLOAD = "25mb"
# Analyses of different visitors run side by side up to this many (the 2-core CPU: 2); mask views and edits have
# their own lane, so that they never wait behind an analysis.
ANALYSES = int(os.environ.get("SONOMARK_CONCURRENT_ANALYSES", "2"))
EDITS = 4


def _shown(fn):
    """Turn the library's person-facing errors into Gradio's error toast."""
    @functools.wraps(fn)
    def wrapper(*args):
        try:
            return fn(*args)
        except review.ReviewError as exc:  # the person's to fix: a message, no traceback in the server log
            raise gr.Error(str(exc), print_exception=False) from exc
    return wrapper


def _owner(request: gr.Request | None) -> str | None:
    return request.session_hash if request is not None else None


def _end_session(request: gr.Request) -> None:
    review.end_browser_session(_owner(request))


@_shown
def analyze(path, session, fill, contour, opacity, frame=None, request: gr.Request = None):
    session = review.open_scan(path, session, _owner(request), frame)
    a = session.analysis
    return (session, review.verdict_markdown(a), review.per_model_rows(a), review.scan_view(session),
            review.mask_view(session, fill, contour, opacity), review.measurements_markdown(a, session.scan),
            review.editor_start(session), a.label, review.summary(a), None)


def frame_control(path):
    """The cine-frame slider: shown, with the loop's frames, only for a multi-frame DICOM."""
    n = review.frames(path)
    return gr.update(visible=n > 1, maximum=max(n - 1, 1), value=0, label=f"Cine frame (0-{n - 1})")


def _kept(fn):
    """A handler that also returns the session, which restarts its idle clock (Gradio's time_to_live)."""
    @functools.wraps(fn)
    def wrapper(*args):
        return fn(*args), next(a for a in args if isinstance(a, review.ReviewSession))
    return wrapper


def review_tab(public: bool = False) -> tuple[gr.State, list, list]:
    """The Review tab; returns its session, the analyze inputs after the path, and its outputs."""
    # Public: a session's state (scans in memory) expires after the idle time, API clients' too (they never unload).
    session = gr.State(None, delete_callback=review.close_session,
                       time_to_live=review.idle_seconds() if public else None)
    classifiers = review.shipped_classifiers()
    with gr.Row():
        with gr.Column(scale=1, min_width=280):
            upload = gr.File(label="Scan (PNG, JPEG, BMP, TIFF, WebP or DICOM)", file_types=UPLOAD_TYPES,
                             type="filepath")
            gr.Examples(review.examples(), inputs=upload, label="Examples (test split, cited in examples/README.md)")
            frame = gr.Slider(0, 1, 0, step=1, label="Cine frame", visible=False)
            run = gr.Button("Analyze", variant="primary")
            verdict = gr.Markdown()
            table = gr.Dataframe(headers=["model", *CLASSES], label="Calibrated probabilities per classifier",
                                 interactive=False)
        with gr.Column(scale=2):
            with gr.Row():
                scan_img = gr.Image(label="Scan", type="numpy", format="png", interactive=False)
                mask_img = gr.Image(label="Predicted lesion", type="numpy", format="png", interactive=False)
                cam_img = gr.Image(label="Grad-CAM", type="numpy", format="png", interactive=False)
            with gr.Row():
                fill = gr.Checkbox(True, label="Mask fill")
                contour = gr.Checkbox(True, label="Mask contour")
                opacity = gr.Slider(0, 1, 0.35, step=0.05, label="Opacity")
            with gr.Row():
                cam_model = gr.Dropdown(classifiers, value=classifiers[0] if classifiers else None, label="Classifier")
                cam_class = gr.Dropdown([review.PREDICTED, *CLASSES], value=review.PREDICTED, label="Class")
                cam_method = gr.Dropdown(list(CAM_METHODS), value="Grad-CAM", label="Method")
                explain = gr.Button("Explain")
            measurements = gr.Markdown()
    with gr.Accordion("Correct the mask and save the case", open=True):
        editor = gr.ImageEditor(label="Mask editor (brush, eraser, undo)", type="numpy", image_mode="RGBA",
                                format="png", sources=(), transforms=(), layers=False, fixed_canvas=True,
                                canvas_size=editing.CANVAS, interactive=True,
                                brush=gr.Brush(colors=["rgba(0,220,90,0.6)"], color_mode="fixed", default_size=12),
                                eraser=gr.Eraser(default_size=16))
        with gr.Row():
            reset = gr.Button("Reset to prediction")
            clear = gr.Button("Clear")
            smooth = gr.Button("Smooth")
            refine = gr.Button("Refine edges (GrabCut)")
        with gr.Row():
            label = gr.Radio(list(CLASSES), label="Label")
            annotator = gr.Textbox(label="Annotator", placeholder="your name or initials")
            save = gr.Button("Save case", variant="primary")
        status = gr.Markdown()
        with gr.Row():
            pack = gr.Button("Download the export (zip)")
            download = gr.File(label="Export so far (BUSI layout + manifest + COCO, zip)", interactive=False)
        summary = gr.JSON(label="Analysis data", visible=False)

    outputs = [session, verdict, table, scan_img, mask_img, measurements, editor, label, summary, cam_img]
    upload.change(frame_control, upload, frame, api_visibility="private")
    run.click(analyze, [upload, session, fill, contour, opacity, frame], outputs, api_name="analyze",
              concurrency_id="analysis", concurrency_limit=ANALYSES)
    edit = {"concurrency_id": "edit", "concurrency_limit": EDITS}
    for control in (fill, contour, opacity):
        control.change(_shown(_kept(review.mask_view)), [session, fill, contour, opacity], [mask_img, session],
                       api_visibility="private", **edit)
    explain.click(_shown(_kept(review.cam_view)), [session, cam_model, cam_class, cam_method, opacity],
                  [cam_img, session], api_name="explain", concurrency_id="explain")
    reset.click(_shown(_kept(review.editor_start)), session, [editor, session], api_visibility="private", **edit)
    clear.click(_shown(_kept(review.editor_clear)), session, [editor, session], api_visibility="private", **edit)
    smooth.click(_shown(_kept(review.editor_smooth)), [editor, session], [editor, session], api_visibility="private",
                 **edit)
    refine.click(_shown(_kept(review.editor_refine)), [editor, session], [editor, session], api_visibility="private",
                 **edit)
    save.click(_shown(_kept(review.save)), [editor, label, annotator, session], [status, session], api_name="export",
               **edit)
    pack.click(_shown(_kept(review.export_zip)), session, [download, session], api_name="download_export")
    return session, [fill, contour, opacity], outputs


def queue_tab(tabs: gr.Tabs, session: gr.State, view_inputs: list, review_outputs: list) -> None:
    queue = gr.State(None)
    with gr.Row():
        folder = gr.Textbox(label="Folder of scans on this machine", placeholder="/path/to/scans", scale=4)
        open_btn = gr.Button("Open", variant="primary", scale=1)
    progress = gr.Markdown("No folder open.")
    table = gr.Dataframe(headers=["", "scan", "label", "uncertainty", "review", "done", "error"],
                         label="Most uncertain first", interactive=False)
    with gr.Row():
        prev_btn, next_btn, skip_btn = gr.Button("◀ Previous"), gr.Button("Next ▶"), gr.Button("Skip")
        review_btn = gr.Button("Open in Review", variant="primary")
    timer = gr.Timer(2.0)

    @_shown
    def do_open(path):
        q = queue_ui.open_queue(path)
        return (q, *queue_ui.status(q))

    @_shown
    def do_step(q, action):
        queue_ui.step(q, action)
        return queue_ui.status(q)

    @_shown
    def do_review(q, s, fill, contour, opacity, request: gr.Request):
        return (*analyze(queue_ui.current_path(q), s, fill, contour, opacity, None, request),
                gr.Tabs(selected="review"))

    open_btn.click(do_open, folder, [queue, progress, table], api_visibility="private")
    timer.tick(queue_ui.status, queue, [progress, table], api_visibility="private", show_progress="hidden")
    for btn, action in ((prev_btn, "previous"), (next_btn, "next"), (skip_btn, "skip")):
        btn.click(do_step, [queue, gr.State(action)], [progress, table], api_visibility="private")
    review_btn.click(do_review, [queue, session, *view_inputs], [*review_outputs, tabs], api_visibility="private",
                     concurrency_id="analysis", concurrency_limit=ANALYSES)


def explorer_tab(demo: gr.Blocks, data_dir: Path) -> None:
    try:
        index = explorer.case_index(Path(data_dir))
    except FileNotFoundError as exc:
        gr.Markdown(f"**No datasets to show.** {exc}\n\nSet `SONOMARK_DATA` to the folder holding "
                    "`Dataset_BUSI_with_GT` and `BUSBRA`.")
        return
    sources = sorted({c.source for c in index.cases.values()})
    with gr.Row():
        source = gr.Dropdown([explorer.ALL, *sources], value=explorer.ALL, label="Dataset")
        split = gr.Dropdown(explorer.SPLIT_CHOICES, value="test", label="Split")
        label = gr.Dropdown(explorer.LABEL_CHOICES, value=explorer.ALL, label="Class")
    first = explorer.list_cases(index, split="test")
    case = gr.Dropdown(first, value=first[0] if first else None, label="Case")
    alpha = gr.Slider(0, 1, value=0.3, step=0.05, label="Mask fill opacity")
    with gr.Row():
        image = gr.Image(label="Scan with ground-truth mask", type="numpy", format="png", interactive=False)
        info = gr.Markdown()

    def filter_cases(src: str, spl: str, lab: str):
        ids = explorer.list_cases(index, src, spl, lab)
        return gr.update(choices=ids, value=ids[0] if ids else None)

    def show(case_id: str | None, opacity: float):
        if not case_id:
            return None, "No case matches these filters."
        return explorer.show_case(index, case_id, opacity)

    for control in (source, split, label):
        control.change(filter_cases, [source, split, label], case, api_visibility="private")
    for control in (case, alpha):
        control.change(show, [case, alpha], [image, info], api_visibility="private")
    demo.load(show, [case, alpha], [image, info], api_visibility="private")


def build(data_dir: Path = DEFAULT_DATA_DIR) -> gr.Blocks:
    public = review.is_public()
    review.use_private_gradio_cache()  # uploads and downloads in this process's folder, deleted with it
    idle = review.idle_seconds()
    # Public: Gradio deletes cached uploads and downloads once they are older than the idle time.
    with gr.Blocks(title="SonoMark", delete_cache=(review.sweep_seconds(), int(idle)) if public else None) as demo:
        gr.Markdown(f"# SonoMark\nBreast-ultrasound reading and annotation assistant. {DISCLAIMER}"
                    + (f"\n\nThis public demo keeps your scans and saved cases in your session only; they are "
                       f"deleted when you leave, after {idle / 60:g} minutes without use, or when the server "
                       "restarts. Download the zip to keep them." if public else ""))
        with gr.Tabs() as tabs:
            with gr.Tab("Review", id="review"):
                session, view_inputs, review_outputs = review_tab(public)
            if not public:  # a public demo never browses the server's folders
                with gr.Tab("Queue", id="queue"):
                    queue_tab(tabs, session, view_inputs, review_outputs)
            with gr.Tab("Ground truth", id="truth"):
                explorer_tab(demo, data_dir)
        demo.unload(_end_session)
    return demo


def launch(demo: gr.Blocks, server_name: str = "127.0.0.1", server_port: int | None = None) -> None:
    threading.Thread(target=review.warm_up, name="warm-up", daemon=True).start()
    if review.is_public():
        review.start_idle_expiry()
    demo.launch(server_name=server_name, server_port=server_port, max_file_size=MAX_UPLOAD, show_error=True)
