"""The malformed-input corpus (``tests/inference/corpus.py``, ~350 files) through the reader, the app's
handlers and the batch command line: every file is read or refused by name with a message, nothing
else escapes, valid files still read, and the batch run gives every file its row within bounded memory."""
import csv
import subprocess
import sys
import warnings

import pytest

from app import review
from models.inference.analysis import Analyzer
from models.inference.predict import find_inputs
from models.inference.scan import ScanError, read_scan
from tests.conftest import REPO
from tests.inference.corpus import make_corpus
from tests.inference.test_analysis import ship_random

MEMORY_MB = 3000  # the batch process's peak resident memory over the whole corpus (the models take ~1 GB)
# The peak is VmHWM, the high-water mark of this program's own memory: ru_maxrss would also count the pytest
# process it was forked from (Linux keeps it across exec), which grows with the tests run before.
BATCH = """
import re, sys
from models.cli import main
folder, out, weights = sys.argv[1:]
code = main(["predict", folder, "--out", out, "--weights", weights])
print("PEAK_KB", re.search(r"VmHWM:\\s+(\\d+) kB", open("/proc/self/status").read()).group(1))
sys.exit(code)
"""


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("corpus")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns about the invalid values the corpus is made of
        return folder, make_corpus(folder)


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return ship_random(tmp_path_factory.mktemp("w"))


def test_the_corpus_is_several_hundred_files_of_every_kind(corpus):
    folder, expected = corpus
    assert len(expected) >= 300 and sum(expected.values()) >= 40
    prefixes = {n.split("_")[0] for n in expected}
    assert {"valid", "cut05", "cutlast", "flip", "hdr", "ts", "bomb", "strip", "random", "empty", "name"} <= prefixes


def test_every_file_is_read_or_refused_by_name(corpus):
    folder, expected = corpus
    escaped, refused_valid = [], []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, valid in expected.items():
            try:
                scan = read_scan(folder / name)
                assert scan.gray.ndim == 2 and scan.display.shape == (*scan.gray.shape, 3)
            except ScanError as exc:
                if valid:
                    refused_valid.append(f"{name}: {exc}")
                # the file's name first, then what is wrong and what to do, on one line
                assert str(exc).startswith(f"{exc.name}: ") and len(str(exc)) > len(exc.name) + 20, str(exc)
            except Exception as exc:  # noqa: BLE001 - collected: nothing but ScanError may escape
                escaped.append(f"{name}: {type(exc).__name__}: {exc}")
    assert not escaped and not refused_valid, (escaped, refused_valid)


def test_the_review_handler_answers_every_file_with_a_message(corpus, weights, monkeypatch):
    folder, expected = corpus
    engine = Analyzer(weights)
    monkeypatch.setattr(review, "analyzer", lambda: engine)
    before = set(review.sessions_root().iterdir())
    answered = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, valid in expected.items():
            try:
                session = review.open_scan(str(folder / name), None, owner="corpus")
                review.mask_view(session)
                review.close_session(session)
                answered += 1
            except review.ReviewError as exc:
                assert not valid, f"{name}: {exc}"
                assert str(exc).strip() and "Traceback" not in str(exc)
    assert answered >= sum(expected.values())
    assert set(review.sessions_root().iterdir()) == before  # refused files leave no workspace


def test_the_batch_command_gives_every_file_a_row_and_stays_bounded(corpus, weights, tmp_path):
    folder, expected = corpus
    out = tmp_path / "out"
    run = subprocess.run([sys.executable, "-W", "ignore", "-c", BATCH, str(folder), str(out), str(weights)], cwd=REPO,
                         capture_output=True, text=True, timeout=900)  # a hang guard, not a speed target
    assert run.returncode == 0, run.stderr[-3000:]
    peak_mb = int(run.stdout.rsplit("PEAK_KB ", 1)[1]) / 1024
    assert "Traceback" not in run.stdout + run.stderr
    with open(out / "predictions.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    found = find_inputs([folder])
    assert len(found) >= 300 and sorted(r["path"] for r in rows) == sorted(str(p) for p in found)
    by_name = {r["path"].rsplit("/", 1)[1]: r for r in rows}
    for name, valid in expected.items():
        if name in by_name:
            row = by_name[name]
            assert bool(row["error"]) != bool(row["label"]), row  # a label or an error, never both or neither
            assert not valid or not row["error"], row
    assert peak_mb < MEMORY_MB, f"the batch run peaked at {peak_mb:.0f} MB"
