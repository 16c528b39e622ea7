"""The pieces of ``benchmarks/policy_quality.py`` on a tiny scale: LeRobot's ACT trained by
the budgeted loop and run by our closed-loop evaluator (``lerobot:<folder>``), our model
trained on the same budget, and the world-model metrics against their baselines."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest

pytest.importorskip("lerobot", reason="the lerobot extra is not installed")
pytest.importorskip("skimage", reason="scikit-image (sim extra) is not installed")

spec = importlib.util.spec_from_file_location(
    "policy_quality", Path(__file__).resolve().parents[1] / "benchmarks" / "policy_quality.py")
quality = importlib.util.module_from_spec(spec)
spec.loader.exec_module(quality)


@pytest.mark.slow
def test_quality_pipeline_on_a_tiny_budget(tmp_path):
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

    ours = quality.train_cosmos3(data, tmp_path / "cosmos3", "tiny", minutes=0.1, batch=4)
    assert ours["steps"] >= 1
    wm = quality.world_model(tmp_path / "cosmos3", ["reach"], 1, steps=2)
    assert wm["windows"] >= 1 and wm["future_frames"] == 4
    for table in ("fd_psnr_db", "fd_ssim", "id_mae_normalised"):
        assert all(math.isfinite(v) for v in wm[table].values()), wm
    assert wm["fd_psnr_db"]["copy_last"] > 10  # consecutive frames of a reach are alike
