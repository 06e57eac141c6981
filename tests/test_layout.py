"""The pipeline's layout: stages import downwards only, without circles, and every module has a stage.

The rules live in pyproject.toml ([tool.importlinter]); import-linter checks them. The deliberate
breaks below run it on a copy of the code, so a contract that stopped checking would fail here.
"""
from __future__ import annotations

import os
import pkgutil
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.conftest import REPO

LINT = Path(sys.executable).parent / "lint-imports"


def lint(root: Path) -> subprocess.CompletedProcess:
    if not LINT.is_file():
        pytest.fail(f"{LINT} is missing: install requirements-test.txt (it pins import-linter)")
    env = dict(os.environ, PYTHONPATH=str(root))
    return subprocess.run([str(LINT), "--no-cache", "--config", str(root / "pyproject.toml")], cwd=root, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture
def copy(tmp_path):
    for name in ("models", "app"):
        shutil.copytree(REPO / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tmp_path)
    return tmp_path


def test_the_repository_keeps_its_import_contracts():
    result = lint(REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 kept, 0 broken" in result.stdout


@pytest.mark.parametrize("module, line, expected", [
    # data may not use inference: the contract fails and names the import
    ("data/records.py", "from models.inference.analysis import Analyzer",
     ["Pipeline stages import downwards only BROKEN", "models.data.records -> models.inference.analysis"]),
    # annotation and training sit side by side and stay independent
    ("annotation/export.py", "from models.training.metrics import Interval",
     ["models.annotation.export -> models.training.metrics"]),
    # evaluate imports model_card; model_card importing evaluate back is the circle this layout removed
    ("training/model_card.py", "from models.training import evaluate",
     ["No import circles between the modules of one stage BROKEN"]),
], ids=["upward", "sideways", "circle"])
def test_a_deliberate_break_fails_the_contracts_naming_it(copy, module, line, expected):
    path = copy / "models" / module
    path.write_text(path.read_text() + f"\n{line}  # noqa\n")
    result = lint(copy)
    assert result.returncode != 0
    for text in expected:
        assert text in result.stdout, result.stdout


def layer_modules() -> list[str]:
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]
    layers = next(c for c in config["contracts"] if c["id"] == "layers")["layers"]
    return [m.strip() for layer in layers for part in layer.split("|") for m in part.split(":")]


def test_every_module_of_the_library_sits_in_a_stage():
    import models

    covered = layer_modules()
    names = [m.name for m in pkgutil.walk_packages(models.__path__, "models.")]
    assert len(names) > 30  # the walk found the library, not an empty folder
    loose = [n for n in names if not any(n == c or n.startswith(c + ".") for c in covered)]
    assert not loose, (f"{loose}: put each module in its stage's folder (models/data, inference, annotation, "
                       "training) or name it in [tool.importlinter] layers in pyproject.toml")


def test_the_library_finds_the_repository_files_from_its_stage_folders():
    from models.data.paths import REPO as repo
    from models.data.splits import DEFAULT_SPLIT
    from models.weights import WEIGHTS_DIR

    assert repo == REPO and (repo / "pyproject.toml").is_file()
    assert DEFAULT_SPLIT == REPO / "splits" / "split.json" and DEFAULT_SPLIT.is_file()
    if "SONOMARK_WEIGHTS" not in os.environ:
        assert WEIGHTS_DIR == REPO / "weights" and (WEIGHTS_DIR / "manifest.json").is_file()
