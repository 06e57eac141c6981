"""SonoMark's library, one folder per pipeline stage; imports point down this list only
(``tests/test_layout.py`` keeps it so):

- ``models.cli``: the ``sonomark`` command line (``python -m models``).
- ``models.annotation`` / ``models.training``: correcting and exporting cases; training,
  calibration, evaluation, metrics and the model card.
- ``models.inference``: reading a user's scan, running and fusing the models, measurements,
  Grad-CAM, batch pre-annotation.
- ``models.zoo``, ``models.preprocess``, ``models.weights``: what a model is (the registry), its
  input, and its shipped weights with their manifest.
- ``models.data``: dataset readers, the export layout, survey, near-duplicate grouping, the fixed
  split and the data audit.

The Gradio app (``app/``) sits between the command line and the stages it calls.
"""
