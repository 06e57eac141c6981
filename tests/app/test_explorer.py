import gradio as gr
import numpy as np
import pytest

from app import explorer
from app.ui import build
from models.data import load_cases
from models.data.splits import make_split, save_split
from models.data.survey import survey
from models.inference.overlay import overlay_mask
from tests.conftest import write_busi
from tests.data.test_audit import add_duplicates


def test_overlay_fills_and_outlines_only_the_lesion():
    img = np.full((40, 50), 100, np.uint8)
    mask = np.zeros((40, 50), bool)
    mask[10:30, 10:30] = True
    out = overlay_mask(img, mask, color=(0, 255, 0), alpha=0.5, thickness=1)
    assert out.shape == (40, 50, 3) and out.dtype == np.uint8
    assert (out[0, 0] == 100).all()  # outside untouched
    assert tuple(out[20, 20]) == (50, 178, 50)  # inside: half scan, half green
    assert out[10, 20, 1] > 200 and out[10, 20, 0] < 60  # antialiased contour on the border
    with pytest.raises(ValueError, match="mask is 5x5"):
        overlay_mask(img, np.zeros((5, 5), bool))


@pytest.fixture
def index(tmp_path):
    busi = write_busi(tmp_path / "data" / "busi", {"benign": 30, "malignant": 25, "normal": 25})
    add_duplicates(busi)
    cases = load_cases([busi])
    split_path = save_split(make_split(cases, survey(cases, progress=False)), tmp_path / "split.json")
    return explorer.case_index(tmp_path / "data", split_path)


def test_list_filters_by_split_and_label(index):
    test_ids = explorer.list_cases(index, split="test")
    assert test_ids and all(index.split.assignment[c] == "test" for c in test_ids)
    assert explorer.list_cases(index, split="excluded") == ["busi/benign (1)", "busi/malignant (5)"]
    normals = explorer.list_cases(index, label="normal")
    assert len(normals) == 25 and all("normal" in c for c in normals)
    assert explorer.list_cases(index, source="busbra") == []


def test_show_case_draws_the_mask_and_explains_exclusion(index):
    image, text = explorer.show_case(index, "busi/malignant (5)")
    assert image.shape == (48, 64, 3)
    assert "excluded: label conflict" in text and "busi/benign (1)" in text
    with pytest.raises(KeyError, match="pick one"):
        explorer.show_case(index, "busi/nothing")


def test_app_builds_with_and_without_datasets(index, tmp_path):
    assert isinstance(build(index.data_dir), gr.Blocks)
    demo = build(tmp_path / "nowhere")
    assert any("No datasets to show" in (b.value or "") for b in demo.blocks.values() if isinstance(b, gr.Markdown))
