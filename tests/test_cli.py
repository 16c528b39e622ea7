"""The console script: installed, lists its subcommands, shows layouts."""

import json
import shutil
import subprocess
import sys

from cosmos3_robot.cli import SUBCOMMANDS, main


def test_console_script_help_lists_subcommands():
    exe = shutil.which("cosmos3-robot") or shutil.which("cosmos3-robot", path=str(__import__("pathlib").Path(sys.executable).parent))
    assert exe, "console script cosmos3-robot is not installed"
    out = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0
    for name, *_ in SUBCOMMANDS:
        assert name in out.stdout


def test_embodiments_json(capsys):
    assert main(["embodiments", "single_arm", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["width"] == 19 and len(info["dims"]) == 19
    assert info["dims"][9]["name"] == "ee.x" and info["dims"][9]["unit"] == "m"
    assert main(["embodiments", "--json"]) == 0
    names = {row["name"] for row in json.loads(capsys.readouterr().out)}
    assert {"single_arm", "humanoid", "droid"} <= names


def test_unknown_embodiment_exits_2(capsys):
    assert main(["embodiments", "nope"]) == 2
    assert "unknown embodiment 'nope'" in capsys.readouterr().err


def test_models_prints_parameter_counts(capsys):
    assert main(["models", "tiny"]) == 0
    out = capsys.readouterr().out
    assert "tiny" in out and "0.5" in out  # ~0.57M parameters
    assert main(["models", "huge"]) == 2
