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


def test_bench_and_demo_recipe_from_an_installed_wheel(tmp_path):
    """``cosmos3-robot bench`` and the demo's recipe come from the installed package, not
    the source tree: a wheel installed into a folder of its own, run from elsewhere."""
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    src, wheels, target = tmp_path / "src", tmp_path / "wheels", tmp_path / "site"
    # build from a copy of the checkout's files: setuptools' build/ folder stays out of the tree
    files = subprocess.run(["git", "-C", str(repo), "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
                           check=True, capture_output=True, text=True).stdout.split("\0")
    for f in filter(None, files):
        if (repo / f).is_file():
            (src / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(repo / f, src / f)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    "-w", str(wheels), str(src)], check=True, timeout=600, capture_output=True)
    (wheel,) = wheels.glob("cosmos3_robot-*.whl")
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(target),
                    str(wheel)], check=True, timeout=600, capture_output=True)
    env = {**__import__("os").environ, "PYTHONPATH": str(target)}
    code = ("import cosmos3_robot, cosmos3_robot.demo as d; print(cosmos3_robot.__file__); "
            "print(d.REPO_RECIPE, d.REPO_RECIPE.is_file())")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    assert str(target) in out.stdout and out.stdout.strip().endswith("True"), out.stdout
    out = subprocess.run([sys.executable, "-m", "cosmos3_robot.cli", "bench", "codec", "--steps", "8",
                          "--batch", "4"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    assert "cosmos3_robot.benchmarks.codec_roundtrip" in out.stdout and "scipy" in out.stdout, out.stdout
