"""SonoMark's library: data, models, training, evaluation and analysis.

Pipeline stages, one module or package each:
- ``models.data``: dataset readers (BUSI, BUS-BRA, SonoMark exports) producing ``Case`` records.
- ``models.survey``: one decoding pass over cases (pixel hashes, perceptual hashes, mask facts).
- ``models.audit``: the data audit report (``python -m models.audit``).
- ``models.grouping``: near-duplicate and patient groups.
- ``models.splits``: the grouped, fixed train/validation/test split (``python -m models.splits``).
- ``models.metrics``: classification and segmentation metrics with group-bootstrap intervals.
"""
