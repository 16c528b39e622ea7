"""Embodiment registry: entry points for built-ins and third-party plugins alike."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from cosmos3_robot import embodiments
from cosmos3_robot.codec import ActionCodec, GripperBlock
from cosmos3_robot.embodiment import Embodiment

BUILTINS = {"single_arm", "single_arm_10d", "dual_arm", "humanoid", "agibot", "av", "camera",
            "libero", "libero_10d", "droid"}


def test_builtins_come_from_entry_points():
    from importlib.metadata import entry_points

    eps = {ep.name for ep in entry_points(group=embodiments.ENTRY_POINT_GROUP)}
    assert BUILTINS <= eps
    assert BUILTINS <= set(embodiments.available())
    for name in BUILTINS:
        assert embodiments.get(name).name == name


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown embodiment 'nope'; available: \[.*'single_arm'"):
        embodiments.get("nope")


def test_runtime_registration():
    emb = Embodiment("gripper_only", ActionCodec((GripperBlock("g"),)), fps=10, chunk=4)
    embodiments.register("gripper_only", lambda: emb)
    try:
        assert embodiments.get("gripper_only") is emb
        with pytest.raises(ValueError, match="already registered"):
            embodiments.register("gripper_only", emb)
        with pytest.raises(ValueError, match="already registered"):
            embodiments.register("single_arm", emb)
    finally:
        embodiments.unregister("gripper_only")
    assert "gripper_only" not in embodiments.available()


def test_third_party_plugin_installed_in_a_temporary_path(tmp_path: Path):
    """A separate distribution adds an embodiment through the entry-point group alone."""
    src = tmp_path / "src"
    (src / "acme_arm").mkdir(parents=True)
    (src / "acme_arm" / "__init__.py").write_text(textwrap.dedent('''
        from cosmos3_robot.codec import ActionCodec, GripperBlock, PoseBlock
        from cosmos3_robot.embodiment import Embodiment

        def acme_arm():
            return Embodiment("acme_arm", ActionCodec((PoseBlock("tool"), GripperBlock("jaw"))),
                              fps=50.0, chunk=25)
    '''))
    (src / "pyproject.toml").write_text(textwrap.dedent('''
        [build-system]
        requires = ["setuptools>=61"]
        build-backend = "setuptools.build_meta"
        [project]
        name = "acme-arm"
        version = "0.0.1"
        [project.entry-points."cosmos3_robot.embodiments"]
        acme_arm = "acme_arm:acme_arm"
        [tool.setuptools]
        packages = ["acme_arm"]
    '''))
    target = tmp_path / "site"
    pip = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--no-index", "--target", str(target), str(src)],
        capture_output=True, text=True, timeout=300,
    )
    assert pip.returncode == 0, pip.stderr
    code = textwrap.dedent('''
        from cosmos3_robot import embodiments
        assert "acme_arm" in embodiments.available(), embodiments.available()
        e = embodiments.get("acme_arm")
        print(e.name, e.width, e.fps)
    ''')
    env = {**os.environ, "PYTHONPATH": str(target)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["acme_arm", "10", "50.0"]
    # Without the plugin on the path it is not there: the registry reads installed metadata.
    out = subprocess.run([sys.executable, "-c", "from cosmos3_robot import embodiments as e; print('acme_arm' in e.available())"],
                         capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "False"
