"""The Gradio Blocks layout. Handlers only adapt the library's functions to components."""
from __future__ import annotations

import contextlib
import functools
import os
import threading
from pathlib import Path

import gradio as gr

from models.annotation import editing
from models.data import CLASSES, DEFAULT_DATA_DIR
from models.inference.explain import CAM_METHODS

from . import explorer, queue_ui, review, workspace

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
    workspace.start_embedding(session)  # box and clicks cost only the decoder by the time they are used
    a = session.analysis
    tool_note = "" if session.tool != workspace.BRUSH else " (the brush now shows the new scan's mask)"
    return (session, review.verdict_markdown(a), review.per_model_rows(a),
            workspace.view(session, fill, contour, opacity), workspace.measurements(session),
            workspace.editor_value(session), a.label, review.summary(a),
            gr.update(**workspace.lesion_choices(session)), f"Analysed `{session.scan.name}`.{tool_note}")


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


def _one_at_a_time(session):
    return session.lock if session is not None else contextlib.nullcontext()


def _canvas(action):
    """A workspace action, then the canvas, the lesion list, the measurements, what happened, the session, and,
    with the brush, the editor: its layers are taken in first and given back changed (undo, clear, ... act on
    what was painted, and what is shown is what will be saved)."""
    @_shown
    @functools.wraps(action)
    def handler(session, fill, contour, opacity, show_cam, value, *args):
        with _one_at_a_time(session):  # drawn under the lock too: see ``canvas_click``
            brush = session is not None and session.scan is not None and session.tool == workspace.BRUSH
            if brush:
                workspace.from_editor(session, value)
            message = action(session, *args)
            return (workspace.view(session, fill, contour, opacity, show_cam),
                    gr.update(**workspace.lesion_choices(session)), workspace.measurements(session), message,
                    session, workspace.editor_value(session) if brush else gr.update())
    return handler


@_shown
def canvas_click(session, fill, contour, opacity, show_cam, tool, evt: gr.SelectData):
    # Edits of one session run concurrently (Gradio's concurrency is per event, not per session). Each draws
    # the canvas under the session's lock, so every canvas is a consistent snapshot and the last edit's shows
    # every edit. Replies go out after the lock is released, so two can still arrive in either order.
    with _one_at_a_time(session):
        message = workspace.click(session, tool, evt.index)
        return (workspace.view(session, fill, contour, opacity, show_cam),
                gr.update(**workspace.lesion_choices(session)), workspace.measurements(session), message, session)


@_shown
def choose_tool(session, tool, value, fill, contour, opacity, show_cam):
    """The brush paints in the editor (shown in the canvas's place); every other tool works on the canvas."""
    if session is None or session.scan is None:
        return gr.update(), gr.update(), gr.update(), gr.update(), "Analyze a scan first.", session
    message = f"{tool}."
    brush = tool == workspace.BRUSH
    with _one_at_a_time(session):
        left_brush = session.tool == workspace.BRUSH and not brush
        session.tool = tool
        if left_brush:  # the brush's edits come back: the canvas, lesion list and measurements show them
            message = workspace.from_editor(session, value)
            canvas = gr.update(visible=True, value=workspace.view(session, fill, contour, opacity, show_cam))
            lesions, sizes = gr.update(**workspace.lesion_choices(session)), workspace.measurements(session)
        else:
            # Nothing else changed, so nothing else is sent: a reply sent after a quick click's result
            # replaced the click's canvas, lesion list and measurements with older ones.
            canvas, lesions, sizes = gr.update(visible=not brush), gr.update(), gr.update()
    if brush:
        message = "Brush: loading the lesion layers..."  # fill_editor says when they are there to paint on
    # the editor is shown first and given its layers after (``fill_editor``): a hidden ImageEditor that gets a
    # value and is shown in the same update draws an empty canvas (gradio 6.31)
    return canvas, gr.update(visible=brush), lesions, sizes, message, session


def fill_editor(session):
    """The editor's layers, and only then the word to paint: a stroke drawn before they arrive is replaced."""
    if session is None or session.scan is None or session.tool != workspace.BRUSH:
        return gr.update(), gr.update()
    return (workspace.editor_value(session),
            "Brush: paint on the active layer (one layer per lesion); the eraser and undo are in the editor.")


@_shown
def save_case(session, value, label, annotator):
    with _one_at_a_time(session):
        if session is not None and session.tool == workspace.BRUSH:
            workspace.from_editor(session, value)
        return review.save_lesions(workspace.state(session).lesions, label, annotator, session), session


@_shown
def explain(session, model, target, method, fill, contour, opacity):
    review.cam_view(session, model, target, method, opacity)  # keeps the map in the session; seconds: no lock
    with _one_at_a_time(session):
        return workspace.view(session, fill, contour, opacity, True), True, session


@_shown
def redraw(session, fill, contour, opacity, show_cam):
    """The canvas after a view control (mask, contour, opacity, Grad-CAM) changed."""
    with _one_at_a_time(session):
        return workspace.view(session, fill, contour, opacity, show_cam), session


@_shown
def set_spacing(session, preset, typed, ruler_mm, fill, contour, opacity, show_cam):
    with _one_at_a_time(session):
        message = workspace.set_spacing(session, workspace.presets(session), preset, typed, ruler_mm)
        return (workspace.view(session, fill, contour, opacity, show_cam), workspace.measurements(session), message,
                gr.update(choices=workspace.presets(session).names()), session)


@_shown
def save_and_next(queue, session, value, label, annotator, fill, contour, opacity, request: gr.Request = None):
    """Save the case, then open the queue's next scan (the queue counts a saved scan as done)."""
    saved, session = save_case(session, value, label, annotator)
    if queue is None:
        return (session, *[gr.update()] * 8, saved + " No queue open: open a folder in the Queue tab to go on.")
    queue_ui.step(queue, "next")
    out = analyze(queue_ui.current_path(queue), session, fill, contour, opacity, None, request)
    return (*out[:-1], saved + " " + out[-1])


@_shown
def queue_step(queue, session, action, fill, contour, opacity, request: gr.Request = None):
    """Previous or next scan of the open queue, analysed."""
    queue_ui.step(queue, action)
    return analyze(queue_ui.current_path(queue), session, fill, contour, opacity, None, request)


KEYS = [("A", "analyze"), ("S", "save"), ("D", "save & next"), ("[ / ]", "previous / next in the queue"),
        ("B", "box"), ("F", "add click"), ("G", "remove click"), ("E", "brush / eraser"), ("R", "ruler"),
        ("Z / Y", "undo / redo"), ("L", "new lesion"), ("M", "mask on / off")]
# Keys click the workspace's buttons (by elem_id); none fire while the person types in a field.
KEY_SCRIPT = """<script>
document.addEventListener("keydown", (e) => {
  const t = e.target, tag = (t && t.tagName || "").toLowerCase();
  if (e.ctrlKey || e.metaKey || e.altKey || tag === "input" || tag === "textarea" || tag === "select"
      || (t && t.isContentEditable)) return;
  const buttons = {a: "sm-analyze", s: "sm-save", d: "sm-save-next", "[": "sm-prev", "]": "sm-next",
                   z: "sm-undo", y: "sm-redo", l: "sm-new-lesion"};
  const tools = {b: "Box", f: "Add (click)", g: "Remove (click)", e: "Brush / eraser", r: "Ruler"};
  const k = e.key.toLowerCase();
  let el = null;
  if (buttons[k]) el = document.getElementById(buttons[k]);
  else if (tools[k]) el = document.querySelector(`#sm-tool input[value="${tools[k]}"]`);
  else if (k === "m") el = document.querySelector("#sm-fill input");
  if (!el) return;
  e.preventDefault();
  el.click();
});
</script>"""


def review_tab(public: bool = False) -> tuple[gr.State, gr.State, list, list]:
    """The Review workspace; returns its session, the queue, the analyze inputs after the path, and its outputs."""
    # Public: a session's state (scans in memory) expires after the idle time, API clients' too (they never unload).
    session = gr.State(None, delete_callback=review.close_session,
                       time_to_live=review.idle_seconds() if public else None)
    queue = gr.State(None)
    classifiers = review.shipped_classifiers()
    with gr.Row(equal_height=False):
        with gr.Column(scale=1, min_width=300):
            upload = gr.File(label="Scan (PNG, JPEG, BMP, TIFF, WebP or DICOM)", file_types=UPLOAD_TYPES,
                             type="filepath", height=90)
            frame = gr.Slider(0, 1, 0, step=1, label="Cine frame", visible=False)
            run = gr.Button("Analyze", variant="primary", elem_id="sm-analyze")
            verdict = gr.Markdown()
            label = gr.Radio(list(CLASSES), label="Label")
            annotator = gr.Textbox(label="Annotator", placeholder="your name or initials")
            with gr.Row():
                save = gr.Button("Save case", variant="primary", elem_id="sm-save", min_width=90)
                save_next = gr.Button("Save & next", elem_id="sm-save-next", min_width=90)
            with gr.Row():
                prev_btn = gr.Button("◀ Previous", elem_id="sm-prev", size="sm", min_width=60)
                next_btn = gr.Button("Next ▶", elem_id="sm-next", size="sm", min_width=60)
            status = gr.Markdown()
            measurements = gr.Markdown()
            with gr.Accordion("Pixel spacing (scans without calibration)", open=False):
                preset = gr.Dropdown(workspace.presets(None).names(), value=None, allow_custom_value=True,
                                     label="Scanner preset", info="remembered on this machine" if not public
                                     else "remembered in this session")
                typed = gr.Number(None, label="mm per pixel", minimum=0)
                ruler_mm = gr.Number(None, label="or: distance between two ruler ticks (mm), after two Ruler clicks",
                                     minimum=0)
                spacing_btn = gr.Button("Set spacing")
            with gr.Accordion("Probabilities per classifier", open=False):
                table = gr.Dataframe(headers=["model", *CLASSES], label="Calibrated probabilities", interactive=False)
            with gr.Accordion("Grad-CAM", open=False):
                cam_model = gr.Dropdown(classifiers, value=classifiers[0] if classifiers else None, label="Classifier")
                cam_class = gr.Dropdown([review.PREDICTED, *CLASSES], value=review.PREDICTED, label="Class")
                cam_method = gr.Dropdown(list(CAM_METHODS), value="Grad-CAM", label="Method")
                explain_btn = gr.Button("Explain")
            with gr.Accordion("Export", open=False):
                pack = gr.Button("Download the export (zip)")
                download = gr.File(label="Export so far (BUSI layout + manifest + COCO, zip)", interactive=False)
            gr.Examples(review.examples(), inputs=upload, label="Examples (test split, cited in examples/README.md)")
            gr.Markdown("<small>**Keys** " + " · ".join(f"<kbd>{k}</kbd> {what}" for k, what in KEYS) + "</small>",
                        elem_id="sm-keys")
        with gr.Column(scale=3, min_width=640):
            with gr.Row():
                tool = gr.Radio(list(workspace.TOOLS), value=workspace.BOX, label="Tool", elem_id="sm-tool", scale=3)
                lesion = gr.Dropdown([workspace.NEW], value=workspace.NEW, label="Lesion", scale=1, min_width=120)
            canvas = gr.Image(label="Scan — Box: click two corners; Add/Remove: click on the lesion", type="numpy",
                              format="png", interactive=False, height=620, elem_id="sm-canvas",
                              buttons=["fullscreen"])
            editor = gr.ImageEditor(label="Brush and eraser (one layer per lesion)", type="numpy", image_mode="RGBA",
                                    format="png", sources=(), transforms=(), layers=True, fixed_canvas=True,
                                    canvas_size=editing.CANVAS, interactive=True, visible=False, height=620,
                                    brush=gr.Brush(colors=["rgba(0,220,90,0.6)"], color_mode="fixed", default_size=12),
                                    eraser=gr.Eraser(default_size=16))
            with gr.Row():
                fill = gr.Checkbox(True, label="Mask", elem_id="sm-fill", min_width=60)
                contour = gr.Checkbox(True, label="Contour", min_width=60)
                show_cam = gr.Checkbox(False, label="Grad-CAM", min_width=60)
                opacity = gr.Slider(0, 1, 0.35, step=0.05, label="Opacity", min_width=120)
            with gr.Row():
                undo = gr.Button("Undo", elem_id="sm-undo", size="sm", min_width=60)
                redo = gr.Button("Redo", elem_id="sm-redo", size="sm", min_width=60)
                new_lesion = gr.Button("New lesion", elem_id="sm-new-lesion", size="sm", min_width=60)
                remove = gr.Button("Remove lesion", size="sm", min_width=60)
                clear = gr.Button("Clear", size="sm", min_width=60)
                reset = gr.Button("Reset to prediction", size="sm", min_width=60)
                smooth = gr.Button("Smooth", size="sm", min_width=60)
                refine = gr.Button("GrabCut edges", size="sm", min_width=60)
        summary = gr.JSON(label="Analysis data", visible=False)
        api_save = gr.Button("API save", visible=False)

    outputs = [session, verdict, table, canvas, measurements, editor, label, summary, lesion, status]
    view = [fill, contour, opacity, show_cam]
    refresh = [canvas, lesion, measurements, status, session]
    edit = {"concurrency_id": "edit", "concurrency_limit": EDITS}
    upload.change(frame_control, upload, frame, api_visibility="private")
    run.click(analyze, [upload, session, fill, contour, opacity, frame], outputs, api_name="analyze",
              concurrency_id="analysis", concurrency_limit=ANALYSES)
    for control in view:
        control.change(redraw, [session, *view], [canvas, session], api_visibility="private", **edit)
    canvas.select(canvas_click, [session, *view, tool], refresh, api_visibility="private", **edit)
    tool.change(choose_tool, [session, tool, editor, *view], [canvas, editor, lesion, measurements, status, session],
                api_visibility="private", **edit).then(fill_editor, session, [editor, status], api_visibility="private", **edit)
    lesion.input(_canvas(workspace.pick), [session, *view, editor, lesion], [*refresh, editor],
                 api_visibility="private", **edit)
    for btn, action in ((undo, workspace.undo), (redo, workspace.redo), (new_lesion, workspace.new_lesion),
                        (remove, workspace.remove_lesion), (clear, workspace.clear), (reset, workspace.reset),
                        (smooth, workspace.smooth), (refine, workspace.grabcut)):
        btn.click(_canvas(action), [session, *view, editor], [*refresh, editor], api_visibility="private", **edit)
    explain_btn.click(explain, [session, cam_model, cam_class, cam_method, fill, contour, opacity],
                      [canvas, show_cam, session], api_name="explain", concurrency_id="explain")
    spacing_btn.click(set_spacing, [session, preset, typed, ruler_mm, *view],
                      [canvas, measurements, status, preset, session], api_visibility="private", **edit)
    save.click(save_case, [session, editor, label, annotator], [status, session], api_visibility="private", **edit)
    api_save.click(_shown(_kept(review.save)), [editor, label, annotator, session], [status, session],
                   api_name="export", **edit)
    pack.click(_shown(_kept(review.export_zip)), session, [download, session], api_name="download_export")

    save_next.click(save_and_next, [queue, session, editor, label, annotator, fill, contour, opacity], outputs,
                    api_visibility="private", concurrency_id="analysis", concurrency_limit=ANALYSES)
    for btn, action in ((prev_btn, "previous"), (next_btn, "next")):
        btn.click(queue_step, [queue, session, gr.State(action), fill, contour, opacity], outputs,
                  api_visibility="private",
                  concurrency_id="analysis", concurrency_limit=ANALYSES)
    return session, queue, [fill, contour, opacity], outputs


def queue_tab(tabs: gr.Tabs, session: gr.State, queue: gr.State, view_inputs: list, review_outputs: list) -> None:
    """Open a folder and watch its pre-annotation; the Review workspace then steps through it (Save & next)."""
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
    review.keep_public_writes_in_process()
    idle = review.idle_seconds()
    # Public: Gradio deletes cached uploads and downloads once they are older than the idle time.
    with gr.Blocks(title="SonoMark", delete_cache=(review.sweep_seconds(), int(idle)) if public else None) as demo:
        gr.Markdown(f"# SonoMark\nBreast-ultrasound reading and annotation assistant. {DISCLAIMER}"
                    + (f"\n\nThis public demo keeps your scans and saved cases in your session only; they are "
                       f"deleted when you leave, after {idle / 60:g} minutes without use, or when the server "
                       "restarts. Download the zip to keep them." if public else ""))
        with gr.Tabs() as tabs:
            with gr.Tab("Review", id="review"):
                session, queue, view_inputs, review_outputs = review_tab(public)
            if not public:  # a public demo never browses the server's folders
                with gr.Tab("Queue", id="queue"):
                    queue_tab(tabs, session, queue, view_inputs, review_outputs)
            with gr.Tab("Ground truth", id="truth"):
                explorer_tab(demo, data_dir)
        demo.unload(_end_session)
    return demo


def launch(demo: gr.Blocks, server_name: str = "127.0.0.1", server_port: int | None = None) -> None:
    threading.Thread(target=review.warm_up, name="warm-up", daemon=True).start()
    threading.Thread(target=workspace.warm_up, name="warm-up-prompts", daemon=True).start()
    if review.is_public():
        review.start_idle_expiry()
    demo.launch(server_name=server_name, server_port=server_port, max_file_size=MAX_UPLOAD, show_error=True,
                head=KEY_SCRIPT)
