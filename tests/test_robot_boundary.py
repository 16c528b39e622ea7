"""The robot-facing boundary under bad input: the node core's tick never raises and never
commands from bad input, the policy and server name the field they refuse, the wire decoder
bounds what it builds, and the real openpi client talks to our server."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from cosmos3_robot.synthetic import sim_state, tiny_sim_policy

from cosmos3_robot.runtime.node_core import NodeConfig, PolicyNodeCore
from cosmos3_robot.runtime.safety import SafetyConfig


class _Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def _core(infer, safety: SafetyConfig = SafetyConfig(max_obs_age_s=None), **kw) -> tuple[PolicyNodeCore, _Clock]:
    clock = _Clock()
    cfg = NodeConfig(cameras=("front",), instruction="reach the red target", safety=safety, **kw)
    return PolicyNodeCore(infer, cfg, clock=clock), clock


def _feed(core: PolicyNodeCore, clock: _Clock, state=None) -> None:
    core.on_image("front", clock.t, np.zeros((16, 16, 3), np.uint8))
    core.on_state(clock.t, {"state": sim_state() if state is None else state})


def _ticks(core: PolicyNodeCore, clock: _Clock, n: int) -> list:
    out = []
    for _ in range(n):
        _feed(core, clock)
        cmd, status = core.tick()
        out.append(cmd)
        time.sleep(0.002)  # the worker thread
        clock.t += 0.1
    return out


@pytest.mark.parametrize("chunk, reason", [
    (np.zeros((0, 8)), "policy_error"),  # used to raise out of scheduler.add_chunk
    (np.full((4, 8), np.nan), "policy_error"),
    ("not numbers", "policy_error"),
])
def test_tick_holds_and_counts_when_the_policy_returns_garbage(chunk, reason):
    good = np.tile(sim_state(), (4, 1)).astype(float)
    calls = []

    def infer(frames, state, text, prefix):
        calls.append(1)
        return good if len(calls) == 1 else chunk

    core, clock = _core(infer)
    cmds = _ticks(core, clock, 12)
    assert core.counts[reason] >= 1
    sent = [c for c in cmds if c is not None]
    assert sent and all(np.array_equal(c, good[0]) for c in sent)  # only ever the good chunk, held
    core.close()


def test_a_wrong_gripper_dim_holds_in_the_loop_and_is_refused_when_the_node_is_built(tmp_path):
    """gripper_dim 8 for 8-wide commands used to raise IndexError out of tick after 18 steps."""
    good = np.tile(sim_state(), (4, 1)).astype(float)
    core, clock = _core(lambda *a: good, SafetyConfig(gripper_dim=8, max_obs_age_s=None))
    cmds = _ticks(core, clock, 20)
    assert all(c is None for c in cmds) and core.safety.counts["config_mismatch"] >= 1
    core.close()

    from cosmos3_robot.runtime.node_params import safety_config

    with pytest.raises(ValueError, match="max_accel_step"):
        safety_config({"max_accel_step": [-1.0]})
    assert safety_config({"max_accel_step": [0.01] * 8}).max_accel_step == [0.01] * 8
    _build_with(tmp_path, {"gripper_dim": 8}, match="gripper_dim 8: outside 8-wide commands")
    _build_with(tmp_path, {"max_step": [0.1] * 3}, match="max_step: 3 values for 8-wide")


def _build_with(tmp_path, overrides: dict, match: str) -> None:
    from pathlib import Path

    from cosmos3_robot.model import save_model
    from cosmos3_robot.runtime.node_params import build_node, load_params

    pol = tiny_sim_policy()
    ckpt = tmp_path / "ckpt"
    if not ckpt.exists():
        save_model(pol.model, ckpt / "model.safetensors")
        (ckpt / "trainer.json").write_text(json.dumps({"windows": [pol.window], "normalizers": [pol.normalizer.to_dict()]}))
    yaml = Path(__file__).resolve().parent.parent / "ros2_ws/src/cosmos3_robot/config/policy.yaml"
    with pytest.raises(ValueError, match=match):
        build_node({**load_params(yaml), "checkpoint": str(ckpt), **overrides})


def test_tick_never_raises_even_when_its_parts_do():
    core, clock = _core(lambda *a: np.tile(sim_state(), (4, 1)))

    def boom(step):
        raise RuntimeError("scheduler bug")

    core.scheduler.action = boom  # type: ignore[method-assign]
    _feed(core, clock)
    cmd, status = core.tick()
    assert cmd is None and status["counts"]["tick_error"] == 1 and "scheduler bug" in status["last_problem"]
    core.close()


@pytest.mark.parametrize("bad", [None, 42, b"bytes", ["reach"]])
def test_non_string_instructions_are_refused(bad):
    core, clock = _core(lambda *a: np.tile(sim_state(), (4, 1)))
    assert core.on_instruction(bad) is False
    assert core.instruction == "reach the red target" and core.counts["bad_instruction"] == 1
    core.close()
    pol = tiny_sim_policy()
    with pytest.raises(ValueError, match="instruction: expected a string"):
        pol.infer(np.zeros((32, 32, 3), np.uint8), {"state": sim_state()}, bad)


@pytest.mark.parametrize("state, match", [
    (np.r_[0.5, 0, 0.6, 0, 0, 0, 0, 0.0], "norm 0"),  # a zero quaternion used to give the identity's chunk
    (np.r_[0.5, 0, 0.6, 2.0, 0, 0, 0, 0.0], "norm 2"),
    (np.array(["0.5"] * 8), "expected numbers"),
    (np.array(["2026-01-01"] * 8, dtype="datetime64[D]"), "expected numbers"),
])
def test_invalid_states_are_refused_by_name(state, match):
    pol = tiny_sim_policy()
    with pytest.raises(ValueError, match=match):
        pol.infer(np.zeros((32, 32, 3), np.uint8), {"state": state}, "reach")
    core, clock = _core(lambda *a: np.tile(sim_state(), (4, 1)))
    if state.dtype.kind not in "biuf":
        assert core.on_state(clock.t, {"state": state}) is False and core.counts["bad_state"] == 1
    core.close()


# ---- server ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def served():
    from cosmos3_robot.runtime.server import BackgroundServer, PolicyServer, ServerConfig, policy_infer_fn, server_metadata

    pol = tiny_sim_policy()
    server = PolicyServer(policy_infer_fn(pol), ServerConfig(port=0, token="s3cret"), server_metadata(pol))
    with BackgroundServer(server) as bg:
        yield bg.port, pol


def _obs(state=None):
    return {"observation/image": np.zeros((32, 32, 3), np.uint8),
            "observation/state": sim_state() if state is None else state, "prompt": "reach the red target"}


def test_server_errors_name_the_request_field_and_never_send_inf(served):
    from cosmos3_robot.runtime.server import PolicyClient, PolicyServerError

    port, _ = served
    with PolicyClient(port=port, token="s3cret") as c:
        for state, match in [(np.r_[1e39, 0, 0.6, 1, 0, 0, 0, 0], "observation/state"),
                             (np.r_[0.5, 0, 0.6, 0, 0, 0, 0, 0.0], "observation/state: .*norm 0"),
                             (np.array(["x"] * 8), "observation/state: expected numbers")]:
            with pytest.raises(PolicyServerError, match=match):
                c.infer(_obs(state))
        assert np.all(np.isfinite(c.infer(_obs())["actions"]))  # and the connection still works


def test_metadata_describes_the_replies(served):
    from cosmos3_robot.runtime.server import PolicyClient

    port, pol = served
    with PolicyClient(port=port, token="s3cret") as c:
        reply = c.infer(_obs())
        meta = c.metadata
    assert meta["action_dim"] == reply["actions"].shape[1] == 8
    assert meta["action_keys"] == {"state": [8]} and meta["pseudo_action_dim"] == pol.embodiment.width == 10


@pytest.mark.parametrize("header, ok", [("Bearer s3cret", True), ("bearer s3cret", True), ("Api-Key s3cret", True),
                                        ("API-KEY s3cret", True), ("Api-Key wrong", False), ("s3cret", False),
                                        ("Basic s3cret", False)])
def test_token_schemes_bearer_and_openpi_api_key(served, header, ok):
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    port, _ = served
    if ok:
        with connect(f"ws://127.0.0.1:{port}", additional_headers={"Authorization": header}, max_size=None) as ws:
            assert ws.recv(timeout=10)
    else:
        with pytest.raises(InvalidStatus):
            connect(f"ws://127.0.0.1:{port}", additional_headers={"Authorization": header})


def test_token_from_a_file_or_the_environment(tmp_path, monkeypatch):
    import argparse

    from cosmos3_robot.cli_deploy import _serve_token

    f = tmp_path / "token"
    f.write_text("from-file\n")
    assert _serve_token(argparse.Namespace(token=None, token_file=str(f))) == "from-file"
    monkeypatch.setenv("COSMOS3_TOKEN", "from-env")
    assert _serve_token(argparse.Namespace(token=None, token_file=None)) == "from-env"
    (tmp_path / "empty").write_text("")
    with pytest.raises(ValueError, match="--token-file .*empty"):
        _serve_token(argparse.Namespace(token=None, token_file=str(tmp_path / "empty")))


def test_a_message_of_millions_of_empty_arrays_is_refused_fast_and_health_stays_up(served):
    import threading
    import urllib.request

    import msgpack

    from cosmos3_robot.runtime.wire import WireError, unpack

    bomb = msgpack.packb([[] for _ in range(2_000_000)])
    t0 = time.perf_counter()
    with pytest.raises(WireError, match="exceeds max_array_len"):
        unpack(bomb)
    assert time.perf_counter() - t0 < 2.0  # refused at the bound, not after building 2M lists
    nested = msgpack.packb([[[] for _ in range(50_000)] for _ in range(40)])  # no container too long, too many in all
    with pytest.raises(WireError, match="more than"):
        unpack(nested)

    port, _ = served
    from websockets.sync.client import connect

    def send_bomb():
        with connect(f"ws://127.0.0.1:{port}", additional_headers={"Authorization": "Bearer s3cret"},
                     max_size=None) as ws:
            ws.recv(timeout=10)
            ws.send(nested)
            assert ws.recv(timeout=30).startswith("error: ")

    th = threading.Thread(target=send_bomb)
    th.start()
    t0 = time.perf_counter()
    assert urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10).status == 200
    assert time.perf_counter() - t0 < 2.0
    th.join(30)


def test_the_real_openpi_client_drives_the_server(served):
    """openpi-client (PyPI 0.1.2, installed with --no-deps by scripts/setup.sh: it declares
    numpy<2) with its own Api-Key header and openpi's LIBERO request keys."""
    wcp = pytest.importorskip("openpi_client.websocket_client_policy", reason="openpi-client is not installed")
    port, pol = served
    client = wcp.WebsocketClientPolicy(host="127.0.0.1", port=port, api_key="s3cret")
    assert client.get_server_metadata()["action_dim"] == 8
    obs = {"observation/image": np.zeros((32, 32, 3), np.uint8),
           "observation/wrist_image": np.zeros((32, 32, 3), np.uint8),
           "observation/state": sim_state(), "prompt": "reach the red target"}
    out = client.infer(obs)
    assert out["actions"].shape == (pol.chunk, 8) and out["actions"].dtype == np.float32
    with pytest.raises(RuntimeError, match="prompt"):
        client.infer({**obs, "prompt": 7})


# ---- a fuzzed control loop -------------------------------------------------------------
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(events=st.lists(st.sampled_from(["good", "nan_state", "str_state", "future", "bad_image", "none_text",
                                        "empty_chunk", "wide_chunk", "estop", "release"]), min_size=5, max_size=30))
def test_fuzzed_inputs_never_raise_and_never_leave_the_limits(events):
    safety = SafetyConfig(workspace_low=[0.2, -0.3, 0.3], workspace_high=[0.8, 0.3, 0.9], max_step=[0.05] * 8,
                          max_accel_step=[0.02] * 8, gripper_dim=7, max_obs_age_s=None)
    mode = {"chunk": "good"}

    def infer(frames, state, text, prefix):
        if mode["chunk"] == "empty_chunk":
            return np.zeros((0, 8))
        if mode["chunk"] == "wide_chunk":
            return np.zeros((4, 9))
        c = np.tile(sim_state(), (8, 1)).astype(float)
        c[:, 0] += np.linspace(0, 2.0, 8)  # far out of the box
        return c

    core, clock = _core(infer, safety)
    core.safety.reset(sim_state().astype(float))
    lo, hi = safety.bounds(8)
    prev = core.safety.last_command
    for ev in events:
        mode["chunk"] = ev if ev.endswith("_chunk") else "good"
        state = {"nan_state": np.full(8, np.nan), "str_state": np.array(["a"] * 8)}.get(ev, sim_state())
        core.on_image("front", clock.t + (100 if ev == "future" else 0),
                      np.zeros((16, 16), np.uint8) if ev == "bad_image" else np.zeros((16, 16, 3), np.uint8))
        core.on_state(clock.t, {"state": state})
        if ev == "none_text":
            core.on_instruction(None)
        if ev in ("estop", "release"):
            core.on_estop(ev == "estop")
        cmd, _ = core.tick()
        time.sleep(0.001)
        clock.t += 0.1
        if cmd is not None:
            assert np.all(cmd >= lo - 1e-9) and np.all(cmd <= hi + 1e-9)
            assert np.all(np.abs(cmd - prev) <= 0.05 + 1e-9)
            prev = cmd
    core.close()
