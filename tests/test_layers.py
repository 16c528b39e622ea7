"""Layers point one way: library code (model, data, runtime, sim, codec, ...) imports neither
training, nor the benchmarks, nor the applications over it (the CLI, the demo); benchmarks
import nothing from ``tests/``. Read from the source, lazy imports inside functions included."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = {"cosmos3_robot": REPO / "cosmos3_robot", "cosmos3_robot.sim": REPO / "sim",
            "cosmos3_robot.embodiments": REPO / "embodiments"}
APPS = {"cosmos3_robot.cli", "cosmos3_robot.cli_deploy", "cosmos3_robot.demo", "cosmos3_robot.__main__"}
ABOVE_THE_LIBRARY = ("cosmos3_robot.train", "cosmos3_robot.benchmarks", *sorted(APPS))


def imported(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return names


def test_library_modules_do_not_import_training_benchmarks_or_the_applications():
    wrong, seen = [], 0
    for package, root in PACKAGES.items():
        for f in sorted(root.rglob("*.py")):
            module = ".".join([package, *f.relative_to(root).with_suffix("").parts])
            if module in APPS or module.startswith("cosmos3_robot.train"):
                continue
            seen += 1
            wrong += [f"{module} imports {n}" for n in sorted(imported(f))
                      if any(n == a or n.startswith(a + ".") for a in ABOVE_THE_LIBRARY)]
    assert seen > 50 and not wrong, wrong


def test_benchmarks_import_nothing_from_the_tests():
    files = sorted((REPO / "benchmarks").glob("*.py"))
    assert files
    for f in files:
        assert not any(n == "tests" or n.startswith(("tests.", "conftest", "helpers")) for n in imported(f)), f
        assert "sys.path" not in f.read_text(), f  # what they need lives in the package
