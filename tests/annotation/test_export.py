"""Exports: round trip through the dataset reader, revisions, concurrency, crashes, hostile names, COCO."""
import io
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from models.annotation import export
from models.data import read_dataset
from models.data.images import load_gray, load_mask
from models.inference.scan import read_scan


def make_scan(name="scan.png", seed=0, shape=(60, 80)):
    arr = np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return read_scan(buf.getvalue(), name=name)


def disc(shape, cx, cy, r):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r


def annotation(scan, label="malignant", r=10, **kw):
    return export.Annotation(scan=scan, label=label, label_set_by=kw.pop("by", "annotator"),
                             mask=disc(scan.shape, 40, 30, r), annotator="dr. a",
                             model_mask=disc(scan.shape, 42, 30, 10), model_label="benign",
                             probabilities={"benign": 0.6, "malignant": 0.3, "normal": 0.1},
                             model_versions={"unet_lite0": "abc"}, **kw)


def test_round_trip_through_the_dataset_reader(tmp_path):
    scan = make_scan()
    saved = export.save_case(tmp_path, annotation(scan))
    read = read_dataset(tmp_path)
    assert read.source == "sonomark" and not read.problems and len(read.cases) == 1
    case = read.cases[0]
    assert case.label == "malignant" and case.image_path == saved.image_path
    assert np.array_equal(load_gray(case.image_path), scan.gray)
    assert np.array_equal(load_mask(case.mask_paths, scan.shape), disc(scan.shape, 40, 30, 10))
    assert set(np.unique(np.asarray(Image.open(saved.mask_path)))) == {0, 255}
    e = saved.entry
    assert e["source_sha256"] == scan.sha256 and e["label_set_by"] == "annotator" and e["model_label"] == "benign"
    assert 0 < e["dice_model_vs_final"] < 1 and e["annotator"] == "dr. a" and e["saved_at"]


def test_revisions_keep_history_and_relabel_moves_the_case(tmp_path):
    scan = make_scan()
    first = export.save_case(tmp_path, annotation(scan, "benign", r=8))
    second = export.save_case(tmp_path, annotation(scan, "malignant", r=12))
    assert (first.revision, second.revision) == (1, 2) and first.case_id == second.case_id
    assert not first.image_path.exists() and second.image_path.exists()  # moved to malignant/
    old = np.asarray(Image.open(tmp_path / "revisions" / first.case_id / "r1" / "mask.png")) > 0
    assert np.array_equal(old, disc(scan.shape, 40, 30, 8))
    assert [e["revision"] for e in export.read_manifest(tmp_path)] == [1, 2]
    assert [c.label for c in read_dataset(tmp_path).cases] == ["malignant"]


def test_concurrent_saves_lose_nothing(tmp_path):
    scans = [make_scan(f"s{k}.png", seed=k) for k in range(4)]
    errors = []

    def work(k):
        try:
            for _ in range(3):
                export.save_case(tmp_path, annotation(scans[k % 2]))  # two threads per case
        except Exception as exc:  # noqa: BLE001 - surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    entries = export.read_manifest(tmp_path)
    assert len(entries) == 12
    for case in {e["case_id"] for e in entries}:
        assert sorted(e["revision"] for e in entries if e["case_id"] == case) == list(range(1, 7))
    assert len(read_dataset(tmp_path).cases) == 2


def test_crash_before_the_commit_point_leaves_the_old_state(tmp_path, monkeypatch):
    scan = make_scan()
    first = export.save_case(tmp_path, annotation(scan, r=8))
    before = (tmp_path / export.MANIFEST).read_bytes()
    real = export.write_atomic

    def crash(path, data):
        if path.name == export.MANIFEST:
            raise OSError(28, "No space left on device")
        real(path, data)

    monkeypatch.setattr(export, "write_atomic", crash)
    with pytest.raises(OSError, match="No space"):
        export.save_case(tmp_path, annotation(scan, r=14))
    assert (tmp_path / export.MANIFEST).read_bytes() == before
    assert np.array_equal(np.asarray(Image.open(first.mask_path)) > 0, disc(scan.shape, 40, 30, 8))
    assert not list(tmp_path.rglob("*.tmp"))
    monkeypatch.setattr(export, "write_atomic", real)
    assert export.save_case(tmp_path, annotation(scan, r=14)).revision == 2


KILLED_WHILE_COMMITTING = """
import os, signal, sys
from pathlib import Path
from models.annotation import export
from tests.annotation.test_export import annotation, make_scan

real_replace = os.replace

def replace(src, dst):  # the process dies after the new manifest is written and before it is renamed over the old
    if Path(dst).name == export.MANIFEST:
        os.kill(os.getpid(), signal.SIGKILL)
    real_replace(src, dst)

os.replace = replace
export.save_case(Path(sys.argv[1]), annotation(make_scan(), r=14))
"""


def test_a_process_killed_inside_the_atomic_write_leaves_the_old_state(tmp_path):
    import signal
    import subprocess
    import sys

    from tests.conftest import REPO
    scan = make_scan()
    first = export.save_case(tmp_path, annotation(scan, r=8))
    before = (tmp_path / export.MANIFEST).read_bytes()
    child = subprocess.run([sys.executable, "-c", KILLED_WHILE_COMMITTING, str(tmp_path)], cwd=REPO,
                           capture_output=True, text=True, timeout=120)
    assert child.returncode == -signal.SIGKILL, child.stderr  # it did die inside the write
    assert (tmp_path / export.MANIFEST).read_bytes() == before
    cases = read_dataset(tmp_path).cases
    assert len(cases) == 1 and np.array_equal(load_mask(cases[0].mask_paths, scan.shape), disc(scan.shape, 40, 30, 8))
    assert cases[0].image_path == first.image_path and np.array_equal(load_gray(first.image_path), scan.gray)
    again = export.save_case(tmp_path, annotation(scan, r=14))  # the lock died with the process
    assert again.revision == 2
    assert np.array_equal(load_mask(read_dataset(tmp_path).cases[0].mask_paths, scan.shape), disc(scan.shape, 40, 30, 14))


def test_crash_after_the_commit_point_is_repaired_on_read(tmp_path, monkeypatch):
    scan = make_scan()
    export.save_case(tmp_path, annotation(scan, r=8))
    real = export.sync_view

    def power_cut_after_the_commit(folder):
        if len(export.read_manifest(folder)) == 2:
            raise OSError("power cut")
        real(folder)

    monkeypatch.setattr(export, "sync_view", power_cut_after_the_commit)
    with pytest.raises(OSError):
        export.save_case(tmp_path, annotation(scan, r=14))
    monkeypatch.undo()
    case = read_dataset(tmp_path).cases[0]  # the reader re-syncs the view from the manifest
    assert np.array_equal(load_mask(case.mask_paths, scan.shape), disc(scan.shape, 40, 30, 14))


@pytest.mark.parametrize("name", ["../../etc/passwd", "..\\..\\win.png", ".hidden.png", "a/b/c d.png",
                                  "scan\x00.png", "ünïcødé scan.png", "x" * 300 + ".png", ""])
def test_hostile_file_names_stay_inside(tmp_path, name):
    saved = export.save_case(tmp_path / "out", annotation(make_scan(name or "upload")))
    for p in (saved.image_path, saved.mask_path):
        assert p.resolve().is_relative_to((tmp_path / "out").resolve())
        assert not p.name.startswith(".") and len(p.name) < 100
    assert export.safe_stem(name) == export.safe_stem(export.safe_stem(name))


def test_coco_is_valid_and_matches_the_masks(tmp_path):
    from pycocotools.coco import COCO

    a = export.save_case(tmp_path, annotation(make_scan("a.png", 1), "malignant"))
    export.save_case(tmp_path, export.Annotation(make_scan("n.png", 2), "normal", "model",
                                                 np.zeros((60, 80), bool), "dr. a"))
    coco = COCO(str(export.write_coco(tmp_path)))
    assert len(coco.getImgIds()) == 2 and len(coco.getAnnIds()) == 1
    ann = coco.loadAnns(coco.getAnnIds())[0]
    assert coco.loadCats(ann["category_id"])[0]["name"] == "malignant"
    assert np.array_equal(coco.annToMask(ann).astype(bool), np.asarray(Image.open(a.mask_path)) > 0)
    assert ann["area"] == float(disc((60, 80), 40, 30, 10).sum())
    # the fields COCO readers use, as the standard spells them (mutation testing found them unchecked)
    ys, xs = np.nonzero(disc((60, 80), 40, 30, 10))
    assert ann["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
    assert ann["iscrowd"] == 0 and ann["id"] == 1 and ann["image_id"] in coco.getImgIds()
    assert sorted(coco.getImgIds()) == [1, 2] and sorted(coco.getCatIds()) == [1, 2]
    assert [c["name"] for c in coco.loadCats([1, 2])] == ["benign", "malignant"]
    img = coco.loadImgs(ann["image_id"])[0]
    assert (tmp_path / img["file_name"]) == a.image_path and (img["width"], img["height"]) == (80, 60)
    assert img["sonomark_case_id"] == a.case_id and img["sonomark_label"] == "malignant"
    assert coco.dataset["info"] == {"description": "SonoMark export", "version": export.APP_VERSION}


def test_zip_holds_the_export(tmp_path):
    export.save_case(tmp_path / "e", annotation(make_scan()))
    dest = export.zip_export(tmp_path / "e", tmp_path / "export.zip")
    names = zipfile.ZipFile(dest).namelist()
    assert "manifest.jsonl" in names and "coco.json" in names
    assert any(n.startswith("malignant/") and n.endswith("_mask.png") for n in names)
    assert not any(n.startswith(".") for n in names)


def test_annotation_validates(tmp_path):
    scan = make_scan()
    with pytest.raises(ValueError, match="mask is 5x5"):
        export.Annotation(scan, "benign", "annotator", np.zeros((5, 5), bool), "a")
    with pytest.raises(ValueError, match="not one of"):
        export.Annotation(scan, "cyst", "annotator", np.zeros(scan.shape, bool), "a")


def test_the_atomic_write_stages_beside_its_target_and_cleans_up_when_the_rename_fails(tmp_path, monkeypatch):
    import os

    from models.data import sonomark
    target = tmp_path / "manifest.jsonl"
    target.write_bytes(b"old")
    staged, real = [], os.replace

    def cross_device(src, dst):
        staged.append(Path(src))
        raise OSError(18, "Invalid cross-device link")

    monkeypatch.setattr(os, "replace", cross_device)
    with pytest.raises(OSError, match="cross-device"):
        sonomark.write_atomic(target, b"new")
    # staged in the target's folder (a rename is atomic only within one file system), hidden, and removed
    assert staged[0].parent == tmp_path and staged[0].name.startswith(".manifest.jsonl.") and staged[0].suffix == ".tmp"
    assert target.read_bytes() == b"old" and sorted(tmp_path.iterdir()) == [target]
    monkeypatch.setattr(os, "replace", real)
    sonomark.write_atomic(target, b"new")
    assert target.read_bytes() == b"new" and sorted(tmp_path.iterdir()) == [target]


def test_a_view_file_changed_in_place_is_restored_from_its_revision(tmp_path):
    saved = export.save_case(tmp_path, annotation(make_scan(), r=8))
    good = saved.mask_path.read_bytes()
    bad = bytearray(good)
    bad[len(bad) // 2] ^= 0xFF  # same size, other bytes
    saved.mask_path.write_bytes(bytes(bad))
    case = read_dataset(tmp_path).cases[0]
    assert saved.mask_path.read_bytes() == good
    assert case.meta == {"source_sha256": saved.entry["source_sha256"], "revision": "1", "annotator": "dr. a"}
    assert case.group_id == case.case_id == f"sonomark/{saved.case_id}"


def test_an_export_whose_mask_no_longer_fits_its_scan_is_reported_not_read(tmp_path):
    cases = [export.save_case(tmp_path, annotation(make_scan(f"s{k}.png", seed=k), r=8)) for k in range(2)]
    saved = min(cases, key=lambda c: c.case_id)  # read first: the case after it must still be read
    wrong = np.zeros((10, 10), np.uint8)
    revision = tmp_path / "revisions" / saved.case_id / "r1" / "mask.png"
    for path in (revision, saved.mask_path):  # the revision and its view: nothing left to repair from
        Image.fromarray(wrong).save(path)
    read = read_dataset(tmp_path)
    assert [(p.path, p.kind) for p in read.problems] == [(saved.mask_path, "mask_size")]
    assert [c.case_id for c in read.cases] == [f"sonomark/{c.case_id}" for c in cases if c is not saved]
    assert read.problems[0].message == "mask and scan differ in size; save the case again"


def test_an_export_whose_scan_no_longer_reads_is_reported_and_the_others_are_read(tmp_path):
    """A scan file broken in its revision and its view is that case's ``unreadable`` problem, naming the file and
    what to do; the cases after it are still read, an annotator left blank reads as blank."""
    from dataclasses import replace
    cases = [export.save_case(tmp_path, replace(annotation(make_scan(f"s{k}.png", seed=k)), annotator=""))
             for k in range(3)]
    broken = min(cases, key=lambda c: c.case_id)  # read first: sorted by case id
    for path in (tmp_path / "revisions" / broken.case_id / "r1" / "image.png", broken.image_path):
        path.write_bytes(b"not an image")
    read = read_dataset(tmp_path)
    assert read.root == tmp_path
    assert [(p.path, p.kind) for p in read.problems] == [(broken.image_path, "unreadable")]
    assert read.problems[0].message.endswith("; save the case again from the app")
    assert sorted(c.case_id for c in read.cases) == sorted(f"sonomark/{c.case_id}" for c in cases if c is not broken)
    assert {c.meta["annotator"] for c in read.cases} == {""}


SAVING_FOREVER = """
import sys
from pathlib import Path
from models.annotation import export
from tests.annotation.test_export import annotation, make_scan

scans = [make_scan(f"s{k}.png", seed=k, shape=(120, 160)) for k in range(3)]
print("ready", flush=True)
k = 0
while True:
    export.save_case(Path(sys.argv[1]), annotation(scans[k % 3], ("benign", "malignant")[k % 2], r=5 + k % 20))
    k += 1
"""


def test_saves_killed_at_random_moments_lose_nothing_and_leave_nothing(tmp_path):
    """kill -9 during a stream of saves, eight times: every committed revision is whole and in its class
    folder after the next save, no temporary folder or file is left, and the manifest reads line by line."""
    import json
    import random
    import signal
    import subprocess
    import sys
    import time

    from tests.conftest import REPO
    rng = random.Random(0)
    for _ in range(8):
        child = subprocess.Popen([sys.executable, "-c", SAVING_FOREVER, str(tmp_path)], cwd=REPO,
                                 stdout=subprocess.PIPE, text=True)
        assert child.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0.05, 0.6))
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    lines = (tmp_path / export.MANIFEST).read_text().splitlines()
    entries = [json.loads(line) for line in lines]  # no torn line
    assert len(entries) >= 8
    last = export.save_case(tmp_path, annotation(make_scan("last.png", seed=9), "benign"))
    assert not [p for p in tmp_path.rglob(".*") if p.name != ".lock"]  # no .rN.* folder, no .tmp file
    entries = export.read_manifest(tmp_path)
    for e in entries:  # every committed revision is whole
        rev = tmp_path / "revisions" / e["case_id"] / f"r{e['revision']}"
        for name in ("image.png", "mask.png", "model_mask.png"):
            Image.open(rev / name).load()
    current = export.current_entries(tmp_path)
    assert last.case_id in current
    for case_id, e in current.items():  # and the class folders show the latest revision of every case
        view = tmp_path / e["label"] / f"{case_id}_mask.png"
        rev = tmp_path / "revisions" / case_id / f"r{e['revision']}" / "mask.png"
        assert view.read_bytes() == rev.read_bytes()
        others = [c for c in ("benign", "malignant", "normal") if c != e["label"]]
        assert not any((tmp_path / c / f"{case_id}.png").exists() for c in others)
