"""Inference: a user's scan in, a typed ``Analysis`` out.

``scan`` reads PNG/JPEG/DICOM with typed errors; ``ensemble`` runs and fuses the models (``runtime``:
ONNX Runtime); ``postprocess`` cleans masks, ``measure`` measures lesions, ``review`` says why a person
should look, ``explain`` draws Grad-CAM, ``overlay`` draws a mask; ``analysis`` ties them together;
``predict`` is batch pre-annotation (``sonomark predict``).
"""
