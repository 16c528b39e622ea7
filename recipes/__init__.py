"""The shipped training recipes (YAML), installed as ``cosmos3_robot.recipes``."""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def recipe_path(name: str) -> Path:
    """A shipped recipe by its path in this folder, e.g. ``"sim/builtin_tasks.yaml"``."""
    return Path(str(resources.files(__name__).joinpath(name)))
