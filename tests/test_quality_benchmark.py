"""The pieces of ``benchmarks/policy_quality.py`` on a tiny scale: LeRobot's ACT trained by
the budgeted loop and run by our closed-loop evaluator (``lerobot:<folder>``), our model
trained on the same budget, and the world-model metrics against their baselines."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("lerobot", reason="the lerobot extra is not installed")
pytest.importorskip("skimage", reason="scikit-image (sim extra) is not installed")

spec = importlib.util.spec_from_file_location(
    "policy_quality", Path(__file__).resolve().parents[1] / "benchmarks" / "policy_quality.py")
quality = importlib.util.module_from_spec(spec)
spec.loader.exec_module(quality)


@pytest.mark.slow
def test_quality_pipeline_on_a_tiny_budget(tmp_path, monkeypatch):
    rec = quality.record_data(tmp_path, ["reach"], 3, 64)
    assert rec["kept"]["reach"] == 3
    data = tmp_path / "data"

    act = quality.train_lerobot("act", data, tmp_path / "act", minutes=0.05, batch=2, chunk=8, n_action_steps=4,
                                preset="tiny")
    assert act["steps"] >= 1 and math.isfinite(act["last_loss"])
    s = quality.closed_loop(f"lerobot:{tmp_path / 'act'}", ["reach"], 1, tmp_path / "eval_act", workers=0, replan=4)
    assert s["overall"]["episodes"] == 1 and 0 <= s["overall"]["success_rate"] <= 1
    assert s["overall"]["errors"] == 0, s["episodes"]  # the LeRobot policy ran the episode without raising
    assert s["episodes"][0]["steps"] > 1

    ours = quality.train_cosmos3(data, tmp_path / "cosmos3", "tiny", minutes=0.1, batch=4,
                                 overrides=["model.overrides.video_prior=true", "train.prior_steps=5"])
    assert ours["steps"] >= 1
    wm = quality.world_model(tmp_path / "cosmos3", ["reach"], 2, steps=2)
    assert set(wm["fd_psnr_db"]) == {"model", "copy_last", "autoencoder", "still", "prior"}
    assert wm["windows"] >= 1 and wm["future_frames"] == 4
    for table in ("fd_psnr_db", "fd_ssim", "id_mae_normalised"):
        assert all(math.isfinite(v) for v in wm[table].values()), wm
    assert wm["fd_psnr_db"]["copy_last"] > 10  # consecutive frames of a reach are alike
    # the tiny preset's latents are pixels: "nothing moves" decodes to the last frame exactly
    assert wm["fd_psnr_db"]["still"] == pytest.approx(wm["fd_psnr_db"]["copy_last"])
    for name, frames in wm["fd_psnr_db_per_frame"].items():  # every window has 4 future frames
        assert len(frames) == 4 and np.mean(frames) == pytest.approx(wm["fd_psnr_db"][name]), name
    swap = wm["camera_swap"]  # own frame vs the frame of a window of the other episode
    assert all(math.isfinite(v) and v >= 0 for v in swap.values()), swap
    assert swap["mae_own"] > 0

    # The sampler study on that run: every setting answers the same requests (same noise),
    # so Euler at the reference's step count reproduces the reference exactly.
    monkeypatch.syspath_prepend(str(Path(quality.__file__).parent))
    sampler = importlib.util.module_from_spec(importlib.util.spec_from_file_location(
        "sampler_steps", Path(quality.__file__).parent / "sampler_steps.py"))
    monkeypatch.setitem(sys.modules, "sampler_steps", sampler)  # its dataclasses look their module up
    sampler.__spec__.loader.exec_module(sampler)
    res = sampler.main(["--run", str(tmp_path / "cosmos3"), "--tasks", "reach", "--wm-episodes", "1",
                        "--windows", "2", "--steps", "1", "3", "--reference-steps", "3", "--episodes", "1",
                        "--workers", "0"])
    errors = res["errors"]
    assert set(errors) == {"euler 1", "euler 3", "heun 3", "copy_last"}
    assert errors["euler 3"]["reference_mae"] == 0 < errors["euler 1"]["reference_mae"]
    assert errors["copy_last"]["fd_psnr_db"] > 10
    assert all(math.isfinite(errors[k]["expert_mae"]) and math.isfinite(errors[k]["fd_psnr_db"])
               and errors[k]["ms"] > 0 for k in ("euler 1", "euler 3", "heun 3"))
    assert res["success"]["heun 3"]["overall"]["episodes"] == 1
    assert (tmp_path / "cosmos3" / "sampler_steps" / "results.json").exists()
    with pytest.raises(SystemExit):
        sampler.main(["--run", str(tmp_path / "missing")])


def test_reach_probe_tells_the_named_target_from_the_other(capsys):
    """The scripted expert reaches the named target every time; a policy that always heads
    for the other target is counted as never nearest to the named one."""
    probe_spec = importlib.util.spec_from_file_location(
        "reach_probe", Path(__file__).resolve().parents[1] / "benchmarks" / "reach_probe.py")
    probe = importlib.util.module_from_spec(probe_spec)
    sys.modules["reach_probe"] = probe  # dataclasses look their module up while being made
    probe_spec.loader.exec_module(probe)
    from cosmos3_robot.sim.envs import make_env
    from cosmos3_robot.sim.policies import make_policy
    from cosmos3_robot.sim.tasks import DOWN

    class WrongTarget:
        def reset(self, env, seed):
            self.env = env.unwrapped

        def act(self, obs, instruction):
            other = next(n for n in ("target0", "target1") if n != self.env.layout.goal["target"])
            return np.r_[self.env.body_pos(other), DOWN, 0.0][None].astype(np.float32)

    env = make_env("reach", image_size=64)
    good = [probe.rollout(env, make_policy("scripted"), 100_000 + i, 8) for i in range(2)]
    bad = probe.rollout(env, WrongTarget(), 100_000, 8)
    env.close()
    assert all(t.success and t.named.min() < 0.03 and t.named.min() < t.other.min() for t in good)
    assert not bad.success and bad.other.min() < bad.named.min() and len(bad.named) == 40
    probe.main(["scripted", "--episodes", "2"])
    out = capsys.readouterr().out
    assert "2/2" in out and "100%" in out


def test_reach_probe_frozen_camera_control(capsys):
    """``--frozen-camera``: the wrapped policy sees the first image it was given at every later
    step and episode (state and instruction still live); the expert, which reads the
    simulator and not the camera, reaches as before."""
    probe_spec = importlib.util.spec_from_file_location(
        "reach_probe", Path(__file__).resolve().parents[1] / "benchmarks" / "reach_probe.py")
    probe = importlib.util.module_from_spec(probe_spec)
    sys.modules["reach_probe"] = probe
    probe_spec.loader.exec_module(probe)
    from cosmos3_robot.sim.envs import make_env
    from cosmos3_robot.sim.policies import make_policy

    class Recorder:
        def __init__(self):
            self.inner, self.seen, self.states = make_policy("scripted"), [], []

        def reset(self, env, seed):
            self.inner.reset(env, seed)

        def act(self, obs, instruction):
            self.seen.append(obs["front"].copy())
            self.states.append(obs["state"].copy())
            return self.inner.act(obs, instruction)

    env = make_env("reach", image_size=64)
    live, frozen = Recorder(), Recorder()
    wrapped = probe.FrozenCamera(frozen)
    for seed in (100_000, 100_001):
        probe.rollout(env, live, seed, 8)
        probe.rollout(env, wrapped, seed, 8)
    env.close()
    assert any(not np.array_equal(live.seen[0], x) for x in live.seen)  # the camera moves
    assert all(np.array_equal(frozen.seen[0], x) for x in frozen.seen)  # ... but not for the wrapped one
    assert np.array_equal(frozen.seen[0], live.seen[0])
    assert any(not np.array_equal(frozen.states[0], s) for s in frozen.states)  # state stays live
    probe.main(["scripted", "--episodes", "2", "--frozen-camera"])
    out = capsys.readouterr().out
    assert "scripted (camera frozen)" in out and out.count("2/2") == 2


def test_curve_table_has_a_row_per_policy_and_budget(capsys):
    def ev(k: int) -> dict:
        x = {"successes": k, "episodes": 50, "success_rate": k / 50, "ci95": (max(k - 10, 0) / 50, min(k + 10, 50) / 50)}
        return {"overall": x, "tasks": {"reach": x}}

    results = {"config": {"episodes": 50, "threads": 2, "tasks": ["reach"]},
               "budgets": {m: {"cosmos3": {"train": {"steps": 10 * i}, "eval": ev(10 * i)},
                               "act": {"train": {"steps": 5 * i}, "eval": ev(5 * i)}}
                           for i, m in enumerate(("5", "10", "20"), start=1)}}
    quality.print_curve(results)
    out = capsys.readouterr().out
    assert "Success against training time" in out
    rows = [line for line in out.splitlines() if line.strip().startswith(("│ cosmos3", "│ act", "cosmos3", "act"))]
    assert len(rows) == 6 and "30/50" in out and "15/50" in out
