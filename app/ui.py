"""The Gradio Blocks layout. Handlers only adapt the library's functions to components."""
from __future__ import annotations

from pathlib import Path

import gradio as gr

from models.data import DEFAULT_DATA_DIR

from . import explorer

DISCLAIMER = ("SonoMark is research software, **not a medical device**: it must not be used to diagnose "
              "or to decide on treatment.")


def build(data_dir: Path = DEFAULT_DATA_DIR) -> gr.Blocks:
    with gr.Blocks(title="SonoMark") as demo:
        gr.Markdown(f"# SonoMark\nBreast-ultrasound reading and annotation assistant.\n\n{DISCLAIMER}")
        with gr.Tab("Ground truth"):
            try:
                index = explorer.case_index(Path(data_dir))
            except FileNotFoundError as exc:
                gr.Markdown(f"**No datasets to show.** {exc}\n\nSet `SONOMARK_DATA` to the folder holding "
                            "`Dataset_BUSI_with_GT` and `BUSBRA`.")
                return demo
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
    return demo
