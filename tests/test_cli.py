"""The ``sonomark`` command line: every subcommand answers --help under its own name, and the
console script the README's set-up installs runs."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from models import cli
from tests.conftest import REPO


@pytest.mark.parametrize("name", list(cli.COMMANDS))
def test_every_command_has_help_under_its_own_name(name, capsys):
    with pytest.raises(SystemExit) as stop:
        cli.main([name, "--help"])
    assert stop.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: sonomark {name}"), out[:200]


def test_the_overview_lists_every_command(capsys):
    with pytest.raises(SystemExit) as stop:
        cli.main(["--help"])
    assert stop.value.code == 0
    out = capsys.readouterr().out
    assert all(f"    {name}" in out for name in cli.COMMANDS), out


def test_an_unknown_command_names_the_choices(capsys):
    with pytest.raises(SystemExit) as stop:
        cli.main(["trian"])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'trian'" in err and "train" in err


def test_no_command_prints_the_overview_and_fails(capsys):
    assert cli.main([]) == 2
    assert "usage: sonomark" in capsys.readouterr().out


def test_a_command_runs_with_its_arguments(tmp_path, capsys):
    # `verify` reads the shipped manifest and checks every checksum: a real run, not just its help
    assert cli.main(["verify"]) == 0
    assert "models," in capsys.readouterr().out


def test_the_console_script_and_python_dash_m_agree():
    script = Path(sys.executable).parent / "sonomark"
    if not script.is_file():
        pytest.fail(f"{script} is missing: the README's set-up installs the project (`pip install -e .`)")
    a = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=120, cwd=REPO)
    b = subprocess.run([sys.executable, "-m", "models", "--help"], capture_output=True, text=True, timeout=120,
                       cwd=REPO)
    assert a.returncode == b.returncode == 0, a.stderr + b.stderr
    assert a.stdout == b.stdout and "usage: sonomark" in a.stdout
