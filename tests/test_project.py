"""Project wiring: the README's commands, CI, package layout, the docs' examples and links."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def test_readme_opens_with_the_two_commands_and_ci_runs_the_test_one():
    readme = (ROOT / "README.md").read_text()
    first_block = re.search(r"```bash\n(.*?)```", readme, re.S).group(1)
    commands = [line.split("#")[0].strip() for line in first_block.strip().splitlines()]
    assert commands == ["bash scripts/demo.sh", "bash scripts/test.sh"]
    assert readme.index("```bash") < readme.index("## "), "the commands come before any section"
    assert "bash scripts/test.sh" in (ROOT / ".ci" / "run").read_text()
    for script in ("demo.sh", "test.sh", "setup.sh"):
        assert (ROOT / "scripts" / script).exists()


def test_subpackages_import_from_their_design_card_folders():
    import cosmos3_robot.embodiments as emb
    import cosmos3_robot.sim as sim

    assert Path(emb.__file__).resolve().parent == ROOT / "embodiments"
    assert Path(sim.__file__).resolve().parent == ROOT / "sim"


def test_embodiments_page_python_example_runs():
    readme = (ROOT / "docs" / "embodiments.md").read_text()
    code = re.search(r"```python\n(import numpy as np\nfrom cosmos3_robot import embodiments.*?)```", readme, re.S).group(1)
    rng = np.random.default_rng(0)
    T = 40
    cart = np.c_[rng.normal(size=(T, 3)) * 0.1, rng.uniform(-3, 3, size=(T, 3))]
    grip = rng.uniform(0, 1, (T, 1))
    ns = {"cart": cart, "grip": grip}
    exec(compile(code, "docs/embodiments.md", "exec"), ns)
    assert ns["actions"].shape == (T - 1, 10)
    assert ns["robot"]["cartesian_position"].shape == (17, 6)
    np.testing.assert_allclose(ns["robot"]["cartesian_position"][:, :3], cart[:17, :3], atol=1e-9)


def test_model_page_example_runs():
    readme = (ROOT / "docs" / "model.md").read_text()
    code = re.search(r"```python\n(import torch\nfrom cosmos3_robot.model import.*?)```", readme, re.S).group(1)
    ns: dict = {}
    exec(compile(code, "docs/model.md", "exec"), ns)
    assert ns["chunk"].shape == (1, 16, 19)


def test_readme_is_for_users_and_its_links_resolve():
    """The README stays short (reference pages live under docs/), and every relative link in
    the README and docs/ names a file that exists."""
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 250
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
            if "://" in target:
                continue
            assert (page.parent / target).exists(), f"{page.relative_to(ROOT)}: broken link {target}"


def test_layout_table_names_every_top_level_folder():
    table = (ROOT / "docs" / "layout.md").read_text()
    folders = {p.name for p in ROOT.iterdir() if p.is_dir() and not p.name.startswith(".")
               and p.name not in {"runs", "data", "outputs", "build"} and not p.name.endswith(".egg-info")
               and (ROOT / ".git").exists() and _tracked(p)}
    for name in folders:
        assert f"`{name}/" in table, f"docs/layout.md does not mention {name}/"


def _tracked(path: Path) -> bool:
    import subprocess

    out = subprocess.run(["git", "ls-files", str(path.relative_to(ROOT))], cwd=ROOT, capture_output=True, text=True)
    return bool(out.stdout.strip())
