"""``benchmarks/inference_latency.py`` on a tiny scale: every row is built and timed
round-robin, and the table carries the LeRobot peers and ratios against ACT."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

pytest.importorskip("lerobot", reason="the lerobot extra is not installed")
pytest.importorskip("onnxruntime", reason="the export extra is not installed")

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture
def bench(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))  # the script imports its sibling common.py
    spec = importlib.util.spec_from_file_location("inference_latency", BENCH / "inference_latency.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "inference_latency", module)  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_latency_table_interleaves_ours_and_the_peers(bench, capsys):
    rows = bench.main(["--presets", "tiny", "--modes", "policy_actions", "forward_dynamics", "--steps", "2",
                       "--backends", "torch", "onnxruntime-int8", "--repeat", "3", "--warmup", "1",
                       "--diffusion-steps", "1"])
    labels = [(r.model, r.mode, r.backend) for r in rows]
    assert labels == [("cosmos3 tiny", "policy_actions", "torch"), ("cosmos3 tiny", "forward_dynamics", "torch"),
                      ("cosmos3 tiny", "policy_actions", "onnxruntime-int8"), ("LeRobot ACT", "actions", "torch"),
                      ("LeRobot Diffusion (1 steps)", "actions", "torch")]
    assert all(len(r.samples) == 3 and min(r.samples) > 0 for r in rows)
    out = capsys.readouterr().out
    assert "vs ACT" in out and "1.00x" in out and "peak RSS" in out


def test_latency_benchmark_rejects_an_unknown_mode(bench):
    with pytest.raises(SystemExit):
        bench.main(["--modes", "policy_action"])
