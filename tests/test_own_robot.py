"""A third-party embodiment from plugin to a trained, served policy (README "Bring your own
robot"), and every block layout the codec accepts through train batch -> ``infer`` -> robot
units with chunk lengths that agree."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from cosmos3_robot import embodiments
from cosmos3_robot.codec import (ActionCodec, DeltaPoseCommandBlock, DeltaPositionCommandBlock, GripperBlock,
                                 PointsBlock, PoseBlock, ScalarCommandBlock)
from cosmos3_robot.data.episode import Episode
from cosmos3_robot.data.windows import WindowDataset, WindowSpec, collate
from cosmos3_robot.embodiment import Embodiment
from cosmos3_robot.model import Cosmos3, preset
from cosmos3_robot.model.config import DEFAULT_DOMAINS
from cosmos3_robot.transforms import PoseFromPosition, PoseFromPosRotation, Split, Squeeze, apply_for

ROOT = Path(__file__).resolve().parents[1]
CHUNK = 6


# ---- every block layout: encode -> train batch -> infer -> robot units -------------------
def _walk(rng: np.random.Generator, T: int, n: int, step: float = 0.01) -> np.ndarray:
    return np.cumsum(rng.normal(0, step, (T, n)), 0)


def _layouts() -> dict[str, tuple[Embodiment, dict[str, str]]]:
    """name -> (embodiment, raw key -> "state" | "command"), one per kind of layout."""
    pos = PoseFromPosition(pos="p", out="ee")
    quat = PoseFromPosRotation(pos="p", rot="q", out="ee", rotation="quat_wxyz")
    layouts = {
        "pose_gripper": (ActionCodec((PoseBlock("ee", relative="absolute"), GripperBlock("g"))),
                         (quat, Squeeze("g")), {"p": "state", "q": "state", "g": "state"}),
        "framewise_position_gripper": (ActionCodec((PoseBlock("ee"), GripperBlock("g"))),
                                       (pos, Squeeze("g")), {"p": "state", "g": "state"}),
        "pose_points": (ActionCodec((PoseBlock("ee", relative="anchored"), PointsBlock("tips", frame="ee",
                                                                                       n_points=2))),
                        (pos,), {"p": "state", "tips": "state"}),
        "commands_only": (ActionCodec((DeltaPositionCommandBlock("move", limit=0.05), ScalarCommandBlock("close"))),
                          (Split("action", (("move", 0, 3), ("close", 3, 4))), Squeeze("close")),
                          {"action": "command"}),
        # the case: a pose (state) and a scalar command side by side
        "position_and_scalar_command": (ActionCodec((PoseBlock("ee", relative="absolute"), ScalarCommandBlock("c"))),
                                        (pos, Squeeze("c")), {"p": "state", "c": "command"}),
        "pose_gripper_and_delta_pose_command": (
            ActionCodec((PoseBlock("ee", relative="absolute"), GripperBlock("g"), DeltaPoseCommandBlock("osc", limit=1))),
            (pos, Squeeze("g")), {"p": "state", "g": "state", "osc": "command"}),
    }
    return {name: (Embodiment(f"t_{name}", codec, fps=10.0, chunk=CHUNK, adapters=adapters), kinds)
            for name, (codec, adapters, kinds) in layouts.items()}


def _raw_episode(kinds: dict[str, str], rng: np.random.Generator, T: int) -> tuple[dict, dict]:
    """Raw state ``(T, ...)`` and commands ``(T-1, ...)`` for the keys of ``_layouts``."""
    make = {
        "p": lambda n: _walk(rng, n, 3) + [0.4, 0.0, 0.3],
        "q": lambda n: np.tile([1.0, 0, 0, 0], (n, 1)),
        "g": lambda n: rng.uniform(0, 1, (n, 1)),
        "tips": lambda n: rng.normal(0, 0.05, (n, 2, 3)),
        "c": lambda n: rng.uniform(-1, 1, (n, 1)),
        "osc": lambda n: rng.uniform(-1, 1, (n, 6)),
        "action": lambda n: np.c_[rng.uniform(-0.05, 0.05, (n, 3)), rng.uniform(-1, 1, (n, 1))],
    }
    state = {k: make[k](T) for k, kind in kinds.items() if kind == "state"}
    commands = {k: make[k](T - 1) for k, kind in kinds.items() if kind == "command"}
    return state, commands


@pytest.mark.parametrize("layout", list(_layouts()))
def test_every_block_layout_round_trips_through_a_policy_in_robot_units(layout):
    from cosmos3_robot.runtime import Cosmos3Policy

    emb, kinds = _layouts()[layout]
    embodiments.register(emb.name, emb, overwrite=True)
    try:
        rng = np.random.default_rng(0)
        T = 30
        eps = []
        for i in range(2):
            state, commands = _raw_episode(kinds, rng, T)
            frames = rng.integers(0, 255, (T, 32, 32, 3), dtype=np.uint8)
            eps.append(Episode(f"t:{i}", np.arange(T) / 10.0, {"cam": frames}, state, commands, "do it").validate())
        spec = WindowSpec(embodiment=emb.name, camera="cam", fps=10, n_future=2, chunk=CHUNK, image_size=32)
        ds = WindowDataset(eps, spec)
        ds.normalizer = ds.action_statistics()
        # the state the robot reports carries only the keys the state blocks are made from
        state_keys = sorted(k for k, kind in kinds.items() if kind == "state")
        assert list(emb.state_keys() or ()) == state_keys

        # decoding a window's own pseudo-actions gives back the raw data, step for step:
        # targets t+1..t+chunk of the state keys, commands t..t+chunk-1
        t = 5
        ep = eps[0]
        start = emb.start_from_raw({k: ep.state[k][t:t + 1] for k in state_keys}) if state_keys else None
        raw = {k: v[t:t + CHUNK + 1] for k, v in ep.state.items()} | {k: v[t:t + CHUNK] for k, v in ep.commands.items()}
        back = emb.chunk_to_raw(emb.encode_raw(raw), start)
        assert set(back) == set(kinds)
        for k, v in back.items():
            want = ep.state[k][t + 1:t + CHUNK + 1] if kinds[k] == "state" else ep.commands[k][t:t + CHUNK]
            np.testing.assert_allclose(v, want, atol=1e-9, err_msg=k)

        # a train batch, a loss, and a policy chunk in the robot's keys, every one CHUNK long
        model = Cosmos3(preset("tiny").with_domains([emb.name]))
        batch = collate([ds[0], ds[len(ds) - 1]])
        loss, _ = model.loss("policy", batch)
        assert torch.isfinite(loss)
        policy = Cosmos3Policy(model, emb.name, ds.normalizer,
                               {"embodiment": emb.name, "camera": "cam", "fps": 10, "chunk": CHUNK, "image_size": 32})
        now = {k: ep.state[k][t] for k in state_keys}
        out = policy.infer(ep.frames["cam"][t], now, "do it")
        layout_shapes = emb.raw_action_layout()
        assert {k: v.shape for k, v in out.items()} == {k: (CHUNK, *s) for k, s in layout_shapes.items()}
        # a pinned prefix continues from the current state for state keys only
        prefix = {k: v[:2] for k, v in out.items()}
        pinned = policy.infer(ep.frames["cam"][t], now, "do it", prefix=prefix)
        for k, v in prefix.items():
            np.testing.assert_allclose(pinned[k][:2], v, atol=1e-3, err_msg=k)
    finally:
        embodiments.unregister(emb.name)


def test_state_side_adapters_run_without_command_keys():
    emb, _ = _layouts()["position_and_scalar_command"]
    # the whole adapter needs the command key; the state side does not
    with pytest.raises(ValueError, match="'c'"):
        emb.from_raw({"p": np.zeros((1, 3))})
    out = apply_for(emb.adapters, {"p": np.zeros((1, 3))}, ["ee"])
    assert set(out) == {"ee"} and out["ee"].shape == (1, 4, 4)
    np.testing.assert_allclose(emb.start_from_raw({"p": np.ones((1, 3))})["ee"][:3, 3], 1.0)


def test_an_adapter_that_does_not_declare_its_keys_runs_with_everything_before_it():
    from cosmos3_robot.transforms import Transform, needed_steps

    class Tag(Transform):  # a plugin's step: unhashable, no reads/writes
        __hash__ = None  # type: ignore[assignment]

        def __call__(self, d):
            return dict(d)

    steps = [Squeeze("c"), PoseFromPosition(pos="p", out="ee"), Tag()]
    flags, raw = needed_steps(steps, ["ee"])
    assert flags == (True, True, True) and raw is None
    flags, raw = needed_steps(steps[:2], ["ee"])
    assert flags == (False, True) and raw == {"p"}
    assert needed_steps(steps[:2], ["ee"]) is needed_steps(steps[:2], ["ee"])  # worked out once


def test_position_only_pose_round_trips():
    t = PoseFromPosition(pos="hand", out="pose")
    p = np.random.default_rng(0).normal(size=(5, 3))
    pose = t({"hand": p})["pose"]
    np.testing.assert_allclose(pose[:, :3, :3], np.broadcast_to(np.eye(3), (5, 3, 3)))
    np.testing.assert_allclose(t.invert({"pose": pose})["hand"], p)
    assert torch.is_tensor(t({"hand": torch.zeros(2, 3)})["pose"])
    with pytest.raises(ValueError, match=r"'hand' expected shape \(\.\.\., 3\)"):
        t({"hand": np.zeros((5, 2))})


def test_delta_position_commands_check_their_limit_and_scale():
    b = DeltaPositionCommandBlock("move", scale=0.01, limit=1.0)
    codec = ActionCodec((b,))
    cmd = np.array([[0.5, -1.0, 0.0], [1.0, 0.2, -0.3]])
    x = codec.encode({"move": cmd})
    np.testing.assert_allclose(x, cmd * 0.01)
    np.testing.assert_allclose(codec.decode(x)["move"], cmd)
    np.testing.assert_allclose(codec.project(np.full((1, 3), 0.5)), 0.01)  # clipped to the limit
    with pytest.raises(ValueError, match=r"outside \[-1, 1\]"):
        codec.encode({"move": cmd * 2})
    with pytest.raises(ValueError, match=r"\(\.\.\., T-1, 3\)"):
        codec.encode({"move": np.zeros((2, 6))})
    with pytest.raises(ValueError, match="scale"):
        DeltaPositionCommandBlock("move", scale=0.0)


# ---- action domains from the recipe, fine-tuning, transforms by import path ------------
def _recipe(tmp_path: Path, embodiment: str, **model) -> dict:
    return {"_path": str(tmp_path / "r.yaml"), "model": model or {"preset": "tiny"},
            "window": {"embodiment": "sim_arm", "camera": "front"},
            "data": [{"format": "lerobot"}, {"format": "lerobot", "window": {"embodiment": embodiment}}]}


def test_a_recipe_gives_each_named_embodiment_a_domain_and_builtins_keep_theirs(tmp_path):
    from cosmos3_robot.train.recipe import model_config

    cfg = model_config(_recipe(tmp_path, "acme_arm"))
    assert cfg.action_domains == DEFAULT_DOMAINS + ("acme_arm",)
    assert model_config(_recipe(tmp_path, "sim_arm")).action_domains == DEFAULT_DOMAINS
    full = preset("tiny", n_action_domains=len(DEFAULT_DOMAINS))
    with pytest.raises(ValueError, match=r"\['acme_arm'\] need action domains.*n_action_domains"):
        full.with_domains(["acme_arm"])
    with pytest.raises(ValueError, match="data entry 0: no window.embodiment"):
        model_config({"_path": "r.yaml", "model": {"preset": "tiny"}, "data": [{"format": "lerobot"}]})


def test_fine_tuning_a_checkpoint_on_a_new_embodiment_adds_its_domain(tmp_path):
    from cosmos3_robot.train.recipe import build_model
    from cosmos3_robot.train.state import save_checkpoint

    torch.manual_seed(0)
    old = Cosmos3(preset("tiny"))
    save_checkpoint(tmp_path / "run", 10, old, None, torch.optim.SGD(old.parameters(), lr=0.1), {"step": 10})
    new = build_model(_recipe(tmp_path, "acme_arm", init="run"))
    assert new.config.action_domains == DEFAULT_DOMAINS + ("acme_arm",)
    for (k, a), b in zip(old.state_dict().items(), new.state_dict().values()):
        assert torch.equal(a, b), k
    with pytest.raises(ValueError, match=r"\['preset'\] cannot be combined with model.init"):
        build_model(_recipe(tmp_path, "acme_arm", init="run", preset="tiny"))


def test_recipe_transforms_by_import_path(tmp_path, monkeypatch):
    from cosmos3_robot.train.recipe import parse_transforms

    (tmp_path / "acme_adapters.py").write_text(
        "from dataclasses import dataclass\nfrom cosmos3_robot.transforms import Transform\n"
        "@dataclass(frozen=True)\nclass Double(Transform):\n    key: str\n"
        "    def __call__(self, d):\n        return {**d, self.key: d[self.key] * 2}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    a, b, c = parse_transforms([{"acme_adapters:Double": {"key": "x"}}, {"acme_adapters.Double": {"key": "x"}},
                                {"Squeeze": {"key": "x"}}])
    assert a({"x": 2})["x"] == 4 and type(a) is type(b) and isinstance(c, Squeeze)
    with pytest.raises(ValueError, match="unknown transform 'Nope'.*built-in: .*PoseFromPosition"):
        parse_transforms([{"Nope": {}}])
    with pytest.raises(ValueError, match="cannot import 'no_such_pkg'"):
        parse_transforms([{"no_such_pkg:Step": {}}])
    with pytest.raises(ValueError, match="unknown transform 'acme_adapters:Transform2'"):
        parse_transforms([{"acme_adapters:Transform2": {}}])


def test_train_cli_budget_flags_become_recipe_settings(monkeypatch):
    from cosmos3_robot import cli
    from cosmos3_robot.train import recipe

    seen = {}
    monkeypatch.setattr(recipe, "run", lambda path, out, overrides, resume, device: seen.update(
        overrides=overrides, resume=resume, device=device))
    assert cli.main(["train", "--recipe", "r.yaml", "--minutes", "2.5", "--steps", "40", "--device", "cpu",
                     "--resume", "--set", "train.lr=1e-4"]) == 0
    assert seen == {"overrides": ["train.lr=1e-4", "train.max_minutes=2.5", "train.steps=40"], "resume": True,
                    "device": "cpu"}
    for bad in (["--minutes", "0"], ["--steps", "-3"], ["--minutes", "inf"]):
        with pytest.raises(SystemExit):
            cli.main(["train", "--recipe", "r.yaml", *bad])


# ---- the README tutorial, end to end, through a throwaway install of examples/my_arm --------
def _tutorial() -> tuple[list[str], str]:
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Bring your own robot"):]
    section = section[:section.index("\n## ")]
    commands = [line.split("  #")[0].strip() for line in
                re.search(r"```bash\n(.*?)```", section, re.S).group(1).strip().splitlines()]
    code = re.search(r"```python\n(import numpy as np\nfrom cosmos3_robot.runtime import Cosmos3Policy.*?)```",
                     section, re.S).group(1)
    return commands, code


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _sub(command: str, old: str, new: str) -> str:
    assert old in command, f"the README command {command!r} no longer has {old!r}"
    return command.replace(old, new)


@pytest.mark.slow
def test_readme_tutorial_plugin_to_trained_and_served_policy(tmp_path, monkeypatch):
    from cosmos3_robot.runtime.server import PolicyClient

    commands, code = _tutorial()
    assert [c.split()[0] for c in commands] == [".venv/bin/pip", ".venv/bin/python", ".venv/bin/cosmos3-robot",
                                                ".venv/bin/cosmos3-robot"]
    install, record, train, serve = commands
    shutil.copytree(ROOT / "examples" / "my_arm", tmp_path / "examples" / "my_arm",
                    ignore=shutil.ignore_patterns("*.egg-info", "__pycache__", "build"))
    site = tmp_path / "site"
    bindir = Path(sys.executable).parent
    env = {**os.environ, "PYTHONPATH": str(site), "HF_HUB_OFFLINE": "1"}

    def sh(command: str, **kw) -> subprocess.CompletedProcess:
        argv = command.split()
        argv[0] = str(bindir / Path(argv[0]).name)
        return subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600, **kw)

    # a throwaway install: into a folder of its own, not this environment
    install = _sub(install, "install -e examples/my_arm",
                   f"install --quiet --no-deps --no-build-isolation --target {site} examples/my_arm")
    for command in (install, _sub(record, "--episodes 40", "--episodes 6"),
                    _sub(train, "--minutes 5", "--minutes 0.4 --steps 30")):
        r = sh(command)
        assert r.returncode == 0, f"{command}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
        if "train" in command:
            # the console holds our own lines: no library warnings, the budget's step count said
            assert "Warning" not in r.stderr, r.stderr[-2000:]
            assert re.search(r"steps fit the 0\.4-minute budget|step +30/30", r.stdout), r.stdout[-2000:]
        if "record" in command:
            assert r.stderr.strip() == "", r.stderr[-2000:]
    assert (tmp_path / "runs" / "my_arm" / "checkpoints" / "latest").exists()

    # the runtime API, as the README shows it
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(site))
    ns: dict = {}
    exec(compile(code, "README.md", "exec"), ns)
    assert ns["targets"][0].shape == (8, 3) and ns["targets"][1].shape == (8, 1)
    assert np.all(np.isfinite(ns["targets"][0])) and np.all((0 <= ns["targets"][1]) & (ns["targets"][1] <= 1))

    # the server, with no setting beyond the checkpoint: state keys come from the embodiment
    port = _free_port()
    argv = _sub(serve, "--port 8000", f"--port {port}").split()
    argv[0] = str(bindir / "cosmos3-robot")
    proc = subprocess.Popen(argv, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 120
        while True:
            try:
                client = PolicyClient(port=port)
                break
            except OSError:
                assert proc.poll() is None and time.time() < deadline, proc.stdout.read() if proc.poll() else "timeout"
                time.sleep(0.5)
        with client:
            reply = client.infer({"observation/image": np.zeros((64, 64, 3), np.uint8),
                                  "observation/hand": np.array([0.0, 0.1, 0.15], np.float32),
                                  "observation/grip": np.zeros(1, np.float32), "prompt": "go to the red dot and grasp"})
        assert reply["action_keys"] == ["hand", "grip"] or reply["action_keys"] == ["grip", "hand"]
        assert reply["actions"].shape == (8, 4)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
