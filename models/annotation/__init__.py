"""Annotation: correcting masks (``editing``), saving cases as training data (``export``) and the
review queue over a folder of scans (``review_queue``)."""
