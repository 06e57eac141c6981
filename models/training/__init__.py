"""Training and evaluation: ``train``, ``calibrate`` (fitting on validation), ``evaluate`` (test
metrics and plots) with ``metrics`` and the quality ``floors``, and the ``model_card``."""
