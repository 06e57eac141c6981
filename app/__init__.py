"""SonoMark's Gradio app: layout and thin handlers over the ``models`` library."""
