"""The policy runtime, the safety layer, the wire format and the websocket server on loopback."""

from __future__ import annotations

import time
import urllib.request

import numpy as np
import pytest
import torch
from cosmos3_robot.synthetic import sim_state, tiny_sim_policy

from cosmos3_robot.runtime import Cosmos3Policy
from cosmos3_robot.runtime.safety import SafetyConfig, SafetyFilter


_sim_state = sim_state


@pytest.fixture(scope="module")
def policy() -> Cosmos3Policy:
    return tiny_sim_policy()


# ---- policy runtime ------------------------------------------------------------------
def test_policy_returns_a_chunk_in_robot_units(policy):
    img = np.random.default_rng(1).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    out = policy.infer(img, {"state": _sim_state()}, "reach the red target", seed=3)
    assert set(out) == {"state"} and out["state"].shape == (8, 8) and np.isfinite(out["state"]).all()
    assert np.allclose(np.linalg.norm(out["state"][:, 3:7], axis=-1), 1, atol=1e-5)  # unit quaternions
    assert ((out["state"][:, 7] >= 0) & (out["state"][:, 7] <= 1)).all()  # gripper projected into range
    again = policy.infer(img, {"state": _sim_state()}, "reach the red target", seed=3)
    assert np.array_equal(out["state"], again["state"])
    assert set(policy.last_timing) == {"prepare_ms", "model_ms", "decode_ms", "total_ms"}


@pytest.mark.parametrize("frames, state, match", [
    (np.zeros((64, 64, 3), np.float32), _sim_state(), "uint8"),
    (np.zeros((64, 64), np.uint8), _sim_state(), "frames: expected"),
    (np.zeros((8, 8, 3), np.uint8), _sim_state(), "too small"),
    (np.zeros((64, 64, 3), np.uint8), np.r_[np.nan, _sim_state()[1:]], "non-finite"),
    (np.zeros((64, 64, 3), np.uint8), _sim_state()[:5], "does not fit embodiment"),
])
def test_policy_rejects_bad_inputs_by_name(policy, frames, state, match):
    with pytest.raises(ValueError, match=match):
        policy.infer(frames, {"state": state}, "reach")


def test_from_checkpoint_errors(tmp_path):
    with pytest.raises(ValueError, match="neither a checkpoint"):
        Cosmos3Policy.from_checkpoint(tmp_path)


# ---- safety --------------------------------------------------------------------------
def test_safety_clips_limits_workspace_gripper_and_rate():
    cfg = SafetyConfig(low=[-1] * 3 + [-1] * 4 + [0], high=[1] * 7 + [5], max_step=[0.05] * 3 + [1] * 5,
                       workspace_low=[0.2, -0.3, 0.4], workspace_high=[0.8, 0.3, 0.9], gripper_dim=7,
                       max_obs_age_s=None)
    f = SafetyFilter(cfg)
    f.reset(_sim_state())
    chunk = np.tile(_sim_state(), (4, 1)).astype(float)
    chunk[:, 0] = [0.6, 0.7, 5.0, 0.9]  # a jump, then out of every bound
    chunk[:, 7] = 3.0
    out = f.filter(chunk)
    assert np.all(np.abs(np.diff(np.r_[0.5, out[:, 0]])) <= 0.05 + 1e-12)
    assert out[:, 0].max() <= 0.8 and np.all(out[:, 7] == 1.0)
    assert {"clipped_limits", "clipped_workspace", "clipped_gripper", "rate_limited", "chunks_ok"} <= set(f.counts)


def test_safety_holds_on_nan_stale_and_estop():
    f = SafetyFilter(SafetyConfig(max_obs_age_s=0.2))
    good = np.tile(_sim_state(), (3, 1))
    assert f.filter(np.full((3, 8), np.nan)) is None  # nothing was ever sent: send nothing
    assert f.last_reason == "non_finite"
    now = time.monotonic()
    first = f.filter(good, obs_time=now, now=now)
    assert np.array_equal(first, good)
    moved = good + 0.1
    for bad, reason, kw in [(np.full((3, 8), np.inf), "non_finite", {}),
                            (moved, "stale_observation", {"obs_time": now - 1.0, "now": now})]:
        held = f.filter(bad, **kw)
        assert f.last_reason == reason and np.array_equal(held, np.tile(good[-1], (3, 1)))
    f.estop(True)
    assert np.array_equal(f.filter(moved), np.tile(good[-1], (3, 1))) and f.counts["estop"] >= 2
    f.estop(False)
    assert np.array_equal(f.filter(moved), moved)


def test_safety_config_is_validated():
    with pytest.raises(ValueError, match="low"):
        SafetyConfig(low=[1.0], high=[0.0])
    with pytest.raises(ValueError, match="max_step"):
        SafetyConfig(max_step=[0.0])


# ---- wire format ---------------------------------------------------------------------
def test_wire_round_trip_and_refusals():
    from cosmos3_robot.runtime.wire import WireError, pack, unpack

    msg = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.uint8(7), "s": "text",
           "n": {"x": np.zeros((0, 4), np.int16)}, "l": [1, 2.5]}
    back = unpack(pack(msg))
    assert np.array_equal(back["a"], msg["a"]) and back["a"].dtype == np.float32
    assert back["b"] == 7 and back["b"].dtype == np.uint8 and back["s"] == "text"
    assert back["n"]["x"].shape == (0, 4) and back["l"] == [1, 2.5]
    with pytest.raises(WireError, match="dtype"):
        pack({"o": np.array([object()])})
    import msgpack

    lying = msgpack.packb({b"__ndarray__": True, b"data": b"\0" * 5, b"dtype": "<f4", b"shape": [2]})
    with pytest.raises(WireError, match="does not match"):
        unpack(lying)
    with pytest.raises(WireError, match="not a msgpack"):
        unpack(b"\xc1\xff garbage")
    pickled = __import__("pickle").dumps({"x": 1})
    with pytest.raises(WireError):
        unpack(pickled)


# ---- websocket server ----------------------------------------------------------------
websockets = pytest.importorskip("websockets")


@pytest.fixture()
def served(policy):
    from cosmos3_robot.runtime.server import BackgroundServer, PolicyServer, ServerConfig, policy_infer_fn

    server = PolicyServer(policy_infer_fn(policy), ServerConfig(port=0, max_message_bytes=200_000),
                          {"embodiment": "sim_arm", "chunk": 8})
    with BackgroundServer(server) as bg:
        yield server, bg.port


def _obs(size: int = 64) -> dict:
    return {"observation/image": np.zeros((size, size, 3), np.uint8), "observation/state": _sim_state(),
            "prompt": "reach the red target"}


def test_server_round_trip_errors_keep_the_connection(served):
    from cosmos3_robot.runtime.server import PolicyClient, PolicyServerError

    server, port = served
    with PolicyClient(port=port) as client:
        assert client.metadata == {"embodiment": "sim_arm", "chunk": 8}
        reply = client.infer(_obs())
        assert reply["actions"].shape == (8, 8) and reply["actions"].dtype == np.float32
        assert "timestamps" not in reply
        timed = client.infer({**_obs(), "timestamp": 100.0})
        assert np.allclose(timed["timestamps"], 100.0 + np.arange(1, 9) / 10)  # due times at 10 Hz
        assert reply["server_timing"]["infer_ms"] > 0 and reply["action_keys"] == ["state"]
        bad_cases = [({**_obs(), "observation/image": np.zeros((64, 64, 3), np.float32)}, "uint8"),
                     ({k: v for k, v in _obs().items() if k != "observation/state"}, "observation/state: missing"),
                     ({**_obs(), "observation/state": np.full(8, np.nan, np.float32)}, "non-finite"),
                     ({**_obs(), "prompt": 3}, "prompt")]
        for bad, match in bad_cases:
            with pytest.raises(PolicyServerError, match=match):
                client.infer(bad)
        client.ws.send("not binary")
        assert "binary" in client.ws.recv(timeout=10)
        assert client.infer(_obs())["actions"].shape == (8, 8)  # still connected and serving
    assert server.errors == 5 and server.requests == 3


def test_server_limits_size_health_and_disconnects(served):
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    from cosmos3_robot.runtime.server import PolicyClient
    from cosmos3_robot.runtime.wire import pack

    server, port = served
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as r:
        assert r.status == 200
    with PolicyClient(port=port) as client:
        client.ws.send(pack(_obs(size=300)))  # ~270 kB > the 200 kB limit
        with pytest.raises(ConnectionClosed) as exc:
            client.ws.recv(timeout=10)
        assert exc.value.rcvd is not None and exc.value.rcvd.code == 1009
    # a client that leaves mid-request does not take the server down
    with connect(f"ws://127.0.0.1:{port}", compression=None, max_size=None) as ws:
        ws.recv(timeout=10)
        ws.send(pack(_obs()))
    with PolicyClient(port=port) as client:
        assert client.infer(_obs())["actions"].shape == (8, 8)


def test_server_token_and_loopback_default(policy):
    from websockets.exceptions import InvalidStatus

    from cosmos3_robot.runtime.server import (
        BackgroundServer,
        PolicyClient,
        PolicyServer,
        ServerConfig,
        policy_infer_fn,
    )

    assert ServerConfig().host == "127.0.0.1"
    server = PolicyServer(policy_infer_fn(policy), ServerConfig(port=0, token="s3cret"))
    with BackgroundServer(server) as bg:
        with pytest.raises(InvalidStatus):
            PolicyClient(port=bg.port)
        with pytest.raises(InvalidStatus):
            PolicyClient(port=bg.port, token="wrong")
        with PolicyClient(port=bg.port, token="s3cret") as client:
            assert client.infer(_obs())["actions"].shape == (8, 8)
        with urllib.request.urlopen(f"http://127.0.0.1:{bg.port}/healthz", timeout=10) as r:
            assert r.status == 200  # health checks need no token


# ---- chunk execution -----------------------------------------------------------------
def test_scheduler_requests_early_and_drops_past_commands():
    from cosmos3_robot.runtime.scheduler import ChunkScheduler

    s = ChunkScheduler(hz=10, blend="latest", min_execute=1)
    assert s.should_request(0)
    s.requested(0)
    assert not s.should_request(0)  # one request in flight
    s.record_latency(0.25)  # 2.5 control periods -> 3 steps
    assert s.latency_steps == 3
    s.add_chunk(0, np.arange(8)[:, None] * 1.0)
    sent = []
    for step in range(12):
        if s.should_request(step):
            s.requested(step)
            arrive = step + s.latency_steps
            pending = (step, arrive)
        a = s.action(step)
        sent.append(None if a is None else float(a[0]))
        if s.in_flight is not None and step + 1 == pending[1]:
            s.add_chunk(pending[0], 100 + np.arange(8)[:, None] * 1.0)
    # the second chunk was asked for at step 4 (4 left = latency 3 + 1) and used from step 7 on,
    # starting at its own index 3 (commands for steps 4..6 were already past)
    assert sent[:7] == [0, 1, 2, 3, 4, 5, 6] and sent[7:10] == [103, 104, 105]
    assert None not in sent


def test_scheduler_synchronous_replan_runs_replan_commands_then_asks_again():
    """Closed-loop evaluation's use: the world waits for the policy (latency 0), each chunk
    runs ``replan`` commands, a chunk shorter than that runs out and is replaced at once."""
    from cosmos3_robot.runtime.scheduler import ChunkScheduler

    s = ChunkScheduler(hz=10, min_execute=3, max_execute=3)
    sent, asked = [], []
    for step in range(10):
        if s.should_request(step):
            asked.append(step)
            s.requested(step)
            n = 2 if len(asked) == 2 else 5
            s.add_chunk(step, (10.0 * len(asked) + np.arange(n))[:, None])
        sent.append(float(s.action(step)[0]))
    assert asked == [0, 3, 5, 8]
    assert sent == [10, 11, 12, 20, 21, 30, 31, 32, 40, 41]
    # a robot's scheduler with min_execute above a short chunk's length no longer stalls
    r = ChunkScheduler(hz=10, min_execute=4)
    r.add_chunk(0, np.zeros((2, 1)))
    assert not r.should_request(1) and r.should_request(2)
    with pytest.raises(ValueError, match="max_execute"):
        ChunkScheduler(hz=10, min_execute=4, max_execute=2)


def test_scheduler_temporal_ensembling_weights_older_chunks_more():
    from cosmos3_robot.runtime.scheduler import ChunkScheduler

    s = ChunkScheduler(hz=10, blend="ensemble", ensemble_decay=0.5)
    s.add_chunk(0, np.zeros((4, 2)))
    s.add_chunk(1, np.ones((4, 2)))
    w = np.exp(-0.5 * np.arange(2))
    assert np.allclose(s.action(2), w[1] / w.sum())
    assert np.allclose(s.action(0), 0.0)  # only the first chunk covers step 0
    assert s.action(9) is None
    with pytest.raises(ValueError, match="blend"):
        ChunkScheduler(hz=10, blend="average")


def test_inpainting_prefix_pins_the_start_of_the_new_chunk(policy):
    """The continuation starts with exactly the pending commands; the rest depends on them."""
    from cosmos3_robot.runtime.scheduler import ChunkScheduler

    import copy

    torch.manual_seed(1)
    policy = Cosmos3Policy(copy.deepcopy(policy.model), "sim_arm", policy.normalizer, policy.window)
    for p in policy.model.parameters():  # a non-degenerate network (fresh heads output zeros)
        torch.nn.init.normal_(p, std=0.05)
    img = np.random.default_rng(2).integers(0, 255, (32, 32, 3), dtype=np.uint8)
    state = _sim_state()
    first = policy.infer(img, {"state": state}, "reach", seed=0)["state"]
    s = ChunkScheduler(hz=10, blend="inpaint")
    s.add_chunk(0, first)
    pending = s.pending(3)
    assert len(pending) == 5
    cur = first[2]  # the commanded state at step 3
    cont = policy.infer(img, {"state": cur}, "reach", seed=5, prefix={"state": pending})["state"]
    assert np.allclose(cont[:5, :3], pending[:, :3], atol=1e-4)  # positions pinned
    assert np.allclose(np.abs(np.sum(cont[:5, 3:7] * pending[:, 3:7], -1)), 1, atol=1e-4)  # same rotations
    free = policy.infer(img, {"state": cur}, "reach", seed=5)["state"]
    assert not np.allclose(free[5:], cont[5:], atol=1e-4)
    with pytest.raises(ValueError, match="prefix"):
        policy.infer(img, {"state": cur}, "reach", prefix={"state": np.full((2, 8), np.nan)})


def test_policy_modes_video_forward_and_inverse_dynamics(policy):
    img = np.random.default_rng(3).integers(0, 255, (32, 32, 3), dtype=np.uint8)
    state = {"state": _sim_state()}
    acts, video = policy.infer_with_video(img, state, "reach", n_future_frames=2, seed=1)
    assert acts["state"].shape == (8, 8) and video.shape == (2, 32, 32, 3) and video.dtype == np.uint8
    imagined = policy.imagine(img, state, acts, "reach", n_future_frames=2)
    assert imagined.shape == (2, 32, 32, 3) and imagined.dtype == np.uint8
    labelled = policy.label(img, video, state, "reach")
    assert labelled["state"].shape == (8, 8) and np.isfinite(labelled["state"]).all()
    with pytest.raises(ValueError, match="expected 8 steps"):
        policy.imagine(img, state, {"state": acts["state"][:3]}, "reach", n_future_frames=2)
    with pytest.raises(ValueError, match="future"):
        policy.label(img, video.astype(np.float32), state)


def test_pose_state_is_padded_with_the_last_gripper_command(policy):
    from cosmos3_robot.runtime.node_core import NodeConfig, PolicyNodeCore

    core = PolicyNodeCore(lambda *a: None, NodeConfig())
    v = core.pose_state([0.5, 0.0, 0.6], [1.0, 0.0, 0.0, 0.0], width=8)
    assert np.array_equal(v, [0.5, 0.0, 0.6, 1.0, 0.0, 0.0, 0.0, 0.0])  # nothing sent yet: open
    core.safety.filter(np.r_[v[:7], 0.8][None])
    assert core.pose_state([0, 0, 0], [1, 0, 0, 0], width=8)[-1] == pytest.approx(0.8)
    assert len(core.pose_state([0, 0, 0], [1, 0, 0, 0])) == 7
    core.close()


def test_policy_reads_every_camera_it_was_trained_on():
    """A model with an observation stem on front and wrist: ``infer(views=...)`` reaches it
    (another wrist frame moves the chunk), the video camera's view may be left out (it is
    the context frame), a missing wrist frame is refused by name; the websocket adapter
    maps the wrist camera to openpi's key and the node adapter to its camera names."""
    from cosmos3_robot.runtime.node_core import policy_infer
    from cosmos3_robot.runtime.server import ObservationKeys, policy_infer_fn

    pol = tiny_sim_policy(views=("front", "wrist"))
    assert pol.views == ("front", "wrist")
    rng = np.random.default_rng(0)
    front, wrist, other = (rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for _ in range(3))
    s = {"state": sim_state()}
    a = pol.infer(front, s, "reach the red target", views={"front": front, "wrist": wrist})["state"]
    assert a.shape == (8, 8)
    np.testing.assert_allclose(pol.infer(front, s, "reach the red target", views={"wrist": wrist})["state"], a)
    b = pol.infer(front, s, "reach the red target", views={"wrist": other})["state"]
    assert np.abs(a - b).max() > 1e-6
    with pytest.raises(ValueError, match=r"views: no frame for camera 'wrist'"):
        pol.infer(front, s, "reach the red target")

    infer = policy_infer_fn(pol)
    obs = {"observation/image": front, "observation/wrist_image": wrist, "observation/state": sim_state(),
           "prompt": "reach the red target"}
    np.testing.assert_allclose(infer(obs)["actions"], a, atol=1e-6)
    with pytest.raises(ValueError, match="observation/wrist_image: missing"):
        infer({k: v for k, v in obs.items() if k != "observation/wrist_image"})
    with pytest.raises(ValueError, match="no request key is mapped"):
        policy_infer_fn(pol, ObservationKeys(views={}))

    node = policy_infer(pol, cameras=("front", "wrist"))
    np.testing.assert_allclose(node([front, wrist], s, "reach the red target", None), a, atol=1e-6)
    with pytest.raises(ValueError, match=r"camera_names: the model reads cameras \['front', 'wrist'\]"):
        policy_infer(pol, cameras=("front", "camera1"))
