"""``reports/multiscale_tta.py``: lesion maps read at several sizes, averaged at the model's size."""
import importlib.util
import sys

import numpy as np

from models.data.paths import REPO

sys.path.insert(0, str(REPO / "reports"))
spec = importlib.util.spec_from_file_location("multiscale_tta", REPO / "reports" / "multiscale_tta.py")
multiscale_tta = importlib.util.module_from_spec(spec)
spec.loader.exec_module(multiscale_tta)


def test_only_the_chosen_sizes_are_averaged_at_the_models_size():
    maps = {8: np.full((2, 8, 8), 0.2, np.float32), 16: np.full((2, 16, 16), 0.6, np.float32),
            32: np.full((2, 32, 32), 1.0, np.float32)}
    out = multiscale_tta.averaged(maps, (8, 16), 16)
    assert out.shape == (2, 16, 16)
    assert np.allclose(out, 0.4)
    assert np.allclose(multiscale_tta.averaged(maps, (16,), 16), 0.6)


def test_a_lesion_keeps_its_place_when_read_larger():
    """The left half called lesion at 32 px is the left half at 16 px: resizing does not shift the map."""
    big = np.zeros((1, 32, 32), np.float32)
    big[:, :, :16] = 1.0
    out = multiscale_tta.averaged({32: big}, (32,), 16)
    assert (out[0, :, :7] > 0.99).all() and (out[0, :, 9:] < 0.01).all()
