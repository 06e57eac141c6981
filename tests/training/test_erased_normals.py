"""Lesion scans with the lesion erased, as normal training scans, and decoys that keep the blend from being a cue."""
import numpy as np
import pytest

from models.data.records import CLASSES
from models.preprocess import CaseArrays
from models.training import erased_normals
from models.training.erased_normals import (DECOY, ERASED, ErasureRecipe, dilated, synthesize,
                                             with_erased_normals)
from models.weights import training_command

NORMAL, BENIGN, MALIGNANT = (CLASSES.index(c) for c in ("normal", "benign", "malignant"))
SIZE = 64


def scans(n=12, seed=0, sources=("busbra",)) -> CaseArrays:
    """Bright speckled tissue, each with a dark round lesion somewhere (the last two: normal scans)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:SIZE, :SIZE]
    images, masks, labels = [], [], []
    for k in range(n):
        images.append(np.clip(150 + 20 * rng.standard_normal((SIZE, SIZE)), 0, 255).astype(np.uint8))
        if k >= n - 2:
            masks.append(np.zeros((SIZE, SIZE), bool))
            labels.append(NORMAL)
            continue
        cy, cx = rng.integers(18, SIZE - 18, 2)
        masks.append((yy - cy) ** 2 + (xx - cx) ** 2 <= 36)
        images[-1][masks[-1]] = 40
        labels.append(BENIGN if k % 2 else MALIGNANT)
    ids = tuple(f"bb/{k}" for k in range(n))
    return CaseArrays(ids, tuple(sources[k % len(sources)] for k in range(n)), tuple(f"g{k}" for k in range(n)), np.array(labels), np.stack(images),
                      np.stack(masks))


def test_an_erased_copy_is_normal_tissue_where_the_lesion_was_and_the_scan_elsewhere():
    arrays = scans()
    recipe = ErasureRecipe(0.5, seed=1)
    extra = synthesize(arrays, recipe)
    erased = [i for i, c in enumerate(extra.case_ids) if c.endswith(ERASED)]
    assert len(erased) == 5  # half of the ten lesion scans
    for i in erased:
        k = arrays.case_ids.index(extra.case_ids[i].removesuffix(ERASED))
        region = dilated(arrays.masks[k], recipe)
        assert extra.labels[i] == NORMAL and not extra.masks[i].any() and extra.groups[i] == arrays.groups[k]
        # the dark lesion is gone: its pixels now look like the tissue around it
        assert extra.images[i][arrays.masks[k]].mean() > 120 > arrays.images[k][arrays.masks[k]].mean()
        assert np.array_equal(extra.images[i][~region], arrays.images[k][~region])  # nothing else changes


def test_as_many_decoys_keep_their_lesion_label_and_mask_and_change_only_tissue_clear_of_it():
    arrays = scans()
    recipe = ErasureRecipe(0.5, seed=1)
    extra = synthesize(arrays, recipe)
    decoys = [i for i, c in enumerate(extra.case_ids) if c.endswith(DECOY)]
    assert len(decoys) == sum(c.endswith(ERASED) for c in extra.case_ids)
    for i in decoys:
        k = arrays.case_ids.index(extra.case_ids[i].removesuffix(DECOY))
        assert extra.labels[i] == arrays.labels[k] != NORMAL and np.array_equal(extra.masks[i], arrays.masks[k])
        changed = extra.images[i] != arrays.images[k]
        assert changed.any() and not (changed & dilated(arrays.masks[k], recipe)).any()
    erased_from = {c.removesuffix(ERASED) for c in extra.case_ids if c.endswith(ERASED)}
    assert all(arrays.labels[arrays.case_ids.index(c)] != NORMAL for c in erased_from)  # normal scans give none
    assert len(set(extra.case_ids)) == len(extra)  # a scan gives one copy of each kind at most


def test_the_copies_follow_the_seed_and_come_after_the_scans():
    arrays = scans()
    a, b = synthesize(arrays, ErasureRecipe(0.5, seed=3)), synthesize(arrays, ErasureRecipe(0.5, seed=3))
    assert a.case_ids == b.case_ids and np.array_equal(a.images, b.images)
    assert synthesize(arrays, ErasureRecipe(0.5, seed=4)).case_ids != a.case_ids
    whole = with_erased_normals(arrays, ErasureRecipe(0.5, seed=3))
    assert whole.case_ids == arrays.case_ids + a.case_ids and len(whole.images) == len(whole.labels) == len(whole)
    assert np.array_equal(whole.images[:len(arrays)], arrays.images)


@pytest.mark.parametrize("share", [0.0, -0.1, 1.5])
def test_a_share_outside_0_to_1_is_an_error_naming_the_flag(share):
    with pytest.raises(ValueError, match="--erased-normals"):
        ErasureRecipe(share)


def test_erased_from_takes_copies_and_decoys_from_those_datasets_and_donors_from_the_scans_own():
    arrays = scans(24, sources=("busbra", "busi"))
    extra = synthesize(arrays, ErasureRecipe(0.5, seed=1, sources=("busbra",)))
    assert len(extra) and set(extra.sources) == {"busbra"}
    assert sum(c.endswith(ERASED) for c in extra.case_ids) == 6  # half of busbra's 11 lesion scans, rounded
    both = synthesize(arrays, ErasureRecipe(0.5, seed=1))
    assert set(both.sources) == {"busbra", "busi"}


def test_a_donor_is_a_scan_of_the_same_dataset(monkeypatch):
    arrays, picked = scans(24, sources=("busbra", "busi")), []

    def spy(arrays, k, *args):
        picked.append((k, real(arrays, k, *args)))
        return picked[-1][1]
    real = erased_normals.pick_donor
    monkeypatch.setattr(erased_normals, "pick_donor", spy)
    synthesize(arrays, ErasureRecipe(1.0, seed=1))
    assert len(picked) >= 20 and all(j is not None for _, j in picked)
    assert all(arrays.sources[j] == arrays.sources[k] for k, j in picked)


def test_erased_from_a_dataset_the_split_lacks_is_an_error_naming_it():
    with pytest.raises(ValueError, match="--erased-from busy.*busbra"):
        synthesize(scans(), ErasureRecipe(0.5, sources=("busy",)))


def test_the_recorded_command_repeats_the_flag():
    assert training_command("efficientnet_lite0", {"epochs": 5, "erased_normals": 0.5, "erased_from": ["busbra"]}
                            ).endswith("--erased-normals 0.5 --erased-from busbra")
    assert training_command("efficientnet_lite0", {"epochs": 5, "erased_normals": 0.5}).endswith(
        "--epochs 5 --erased-normals 0.5")
    assert "--erased-normals" not in training_command("efficientnet_lite0", {"epochs": 5, "erased_normals": 0.0})
