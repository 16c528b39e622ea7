"""The ROS 2 side: DDS types byte-identical to ROS 2's, the policy node over real DDS on
loopback, bad inputs, and the ament package's metadata (checked without ROS)."""

from __future__ import annotations

import ast
import os
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest


ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "ros2_ws" / "src" / "cosmos3_robot"

# loopback only: no multicast on the CI network, nothing leaves the machine
os.environ.setdefault("CYCLONEDDS_URI", "<CycloneDDS><Domain><General><Interfaces><NetworkInterface name='lo'/>"
                                        "</Interfaces><AllowMulticast>false</AllowMulticast></General></Domain>"
                                        "</CycloneDDS>")


# ---- package metadata (no ROS needed) -------------------------------------------------
def test_ament_package_metadata():
    root = ET.parse(PKG / "package.xml").getroot()
    assert root.get("format") == "3" and root.findtext("name") == "cosmos3_robot"
    assert root.find("export/build_type").text == "ament_python"
    deps = {e.text for e in root.iter("exec_depend")}
    assert {"rclpy", "sensor_msgs", "geometry_msgs", "trajectory_msgs", "std_msgs", "diagnostic_msgs",
            "launch_ros"} <= deps
    assert (PKG / "resource" / "cosmos3_robot").exists()
    assert "script_dir=$base/lib/cosmos3_robot" in (PKG / "setup.cfg").read_text()
    setup = ast.parse((PKG / "setup.py").read_text())
    text = ast.unparse(setup)
    assert "policy_node = cosmos3_robot_ros.policy_node:main" in text and "'cosmos3_robot_ros'" in text
    for path in (PKG / "cosmos3_robot_ros").glob("*.py"):
        ast.parse(path.read_text())  # the rclpy node at least parses here


def test_launch_file_and_params_agree():
    tree = ast.parse((PKG / "launch" / "policy.launch.py").read_text())
    args = next(n for n in ast.walk(tree) if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", "") == "ARGUMENTS")
    declared = set(ast.literal_eval(args.value))
    assert {"checkpoint", "embodiment", "camera_topics", "state_topic", "control_rate", "output_type",
            "device"} <= declared
    assert "DeclareLaunchArgument" in ast.unparse(tree) and "params_file" in ast.unparse(tree)
    from cosmos3_robot.runtime.node_params import load_params

    params = load_params(PKG / "config" / "policy.yaml")
    assert declared <= set(params)  # every launch argument is a node parameter
    node_src = (PKG / "cosmos3_robot_ros" / "policy_node.py").read_text()
    defaults = ast.literal_eval(next(n for n in ast.walk(ast.parse(node_src)) if isinstance(n, ast.Assign)
                                     and getattr(n.targets[0], "id", "") == "PARAMS").value)
    assert set(defaults) == set(params), "the node declares exactly the parameters of config/policy.yaml"


def test_rclpy_node_imports_where_ros_is_installed():
    pytest.importorskip("rclpy", reason="rclpy comes with a ROS 2 install (not on PyPI); skipped here")
    import sys

    sys.path.insert(0, str(PKG))
    import cosmos3_robot_ros.policy_node as node  # noqa: F401


# ---- DDS types -------------------------------------------------------------------------
cyclonedds = pytest.importorskip("cyclonedds")


def test_dds_types_are_byte_identical_to_ros2_cdr():
    """Our IdlStruct types serialise exactly like ROS 2's messages (rosbags' CDR of the
    official definitions), so rclpy nodes read them."""
    from rosbags.typesys import Stores, get_typestore

    from cosmos3_robot.runtime import ros_types as R

    st = get_typestore(Stores.LATEST)
    T, H = st.types["builtin_interfaces/msg/Time"], st.types["std_msgs/msg/Header"]
    hdr = H(stamp=T(sec=3, nanosec=5), frame_id="cam")
    ours_hdr = R.Header(R.Time(3, 5), "cam")
    D = st.types["builtin_interfaces/msg/Duration"]
    P = st.types["trajectory_msgs/msg/JointTrajectoryPoint"]
    KV, DS = st.types["diagnostic_msgs/msg/KeyValue"], st.types["diagnostic_msgs/msg/DiagnosticStatus"]
    cases = [
        ("sensor_msgs/msg/Image", st.types["sensor_msgs/msg/Image"](
            header=hdr, height=2, width=1, encoding="rgb8", is_bigendian=0, step=3,
            data=np.arange(6, dtype=np.uint8)),
         R.Image(ours_hdr, 2, 1, "rgb8", 0, 3, list(range(6)))),
        ("sensor_msgs/msg/JointState", st.types["sensor_msgs/msg/JointState"](
            header=hdr, name=["a", "b"], position=np.array([1.0, 2.0]), velocity=np.array([]), effort=np.array([])),
         R.JointState(ours_hdr, ["a", "b"], [1.0, 2.0], [], [])),
        ("geometry_msgs/msg/PoseStamped", st.types["geometry_msgs/msg/PoseStamped"](
            header=hdr, pose=st.types["geometry_msgs/msg/Pose"](
                position=st.types["geometry_msgs/msg/Point"](x=1.0, y=2.0, z=3.0),
                orientation=st.types["geometry_msgs/msg/Quaternion"](x=0.0, y=0.0, z=0.0, w=1.0))),
         R.PoseStamped(ours_hdr, R.Pose(R.Point(1.0, 2.0, 3.0), R.Quaternion(0.0, 0.0, 0.0, 1.0)))),
        ("trajectory_msgs/msg/JointTrajectory", st.types["trajectory_msgs/msg/JointTrajectory"](
            header=hdr, joint_names=["j0"], points=[P(positions=np.array([0.5]), velocities=np.array([]),
                                                      accelerations=np.array([]), effort=np.array([]),
                                                      time_from_start=D(sec=0, nanosec=100_000_000))]),
         R.JointTrajectory(ours_hdr, ["j0"], [R.JointTrajectoryPoint([0.5], [], [], [], R.Duration(0, 100_000_000))])),
        ("diagnostic_msgs/msg/DiagnosticArray", st.types["diagnostic_msgs/msg/DiagnosticArray"](
            header=hdr, status=[DS(level=1, name="n", message="m", hardware_id="h", values=[KV(key="k", value="v")])]),
         R.DiagnosticArray(ours_hdr, [R.DiagnosticStatus(1, "n", "m", "h", [R.KeyValue("k", "v")])])),
        ("std_msgs/msg/String", st.types["std_msgs/msg/String"](data="reach the red target"),
         R.String("reach the red target")),
        ("std_msgs/msg/Bool", st.types["std_msgs/msg/Bool"](data=True), R.Bool(True)),
    ]
    for name, ros_msg, ours in cases:
        assert bytes(st.serialize_cdr(ros_msg, name)) == ours.serialize(), name
    assert R.dds_topic("/camera/image_raw") == "rt/camera/image_raw"
    assert R.Image.__idl_typename__ == "sensor_msgs::msg::dds_::Image_"


# ---- the node over DDS -------------------------------------------------------------------
def _tiny_policy():
    from cosmos3_robot.synthetic import tiny_sim_policy

    return tiny_sim_policy()


class Robot:
    """The other side of the wire: a camera, the joint states, an instruction, an e-stop, and
    a subscriber to the node's commands and diagnostics, on their own DDS participant."""

    def __init__(self, domain: int):
        from cyclonedds.core import Policy, Qos
        from cyclonedds.domain import DomainParticipant
        from cyclonedds.pub import DataWriter
        from cyclonedds.sub import DataReader
        from cyclonedds.topic import Topic
        from cyclonedds.util import duration

        from cosmos3_robot.runtime import ros_types as R

        self.R = R
        dp = DomainParticipant(domain)
        rel = Qos(Policy.Reliability.Reliable(duration(seconds=1)), Policy.History.KeepLast(50))
        latched = Qos(Policy.Reliability.Reliable(duration(seconds=1)), Policy.Durability.TransientLocal,
                      Policy.History.KeepLast(1))
        self.camera = DataWriter(dp, Topic(dp, "rt/camera/image_raw", R.Image))
        self.state = DataWriter(dp, Topic(dp, "rt/joint_states", R.JointState))
        self.instruction = DataWriter(dp, Topic(dp, "rt/instruction", R.String), qos=latched)
        self.estop = DataWriter(dp, Topic(dp, "rt/estop", R.Bool), qos=rel)
        self.commands = DataReader(dp, Topic(dp, "rt/cosmos3/command", R.JointTrajectory), qos=rel)
        self.diagnostics = DataReader(dp, Topic(dp, "rt/diagnostics", R.DiagnosticArray), qos=rel)
        self.dp = dp

    def publish(self, size: int = 32, encoding: str = "rgb8", state=None, stamp: float | None = None) -> None:
        R = self.R
        now = time.time() if stamp is None else stamp
        img = np.full((size, size, 3), 90, np.uint8)
        self.camera.write(R.Image(R.Header(R.Time.from_seconds(now), "cam"), size, size, encoding, 0, 3 * size,
                                  img.ravel().tolist()))
        s = [0.5, 0.0, 0.6, 1.0, 0.0, 0.0, 0.0, 0.0] if state is None else list(state)
        self.state.write(R.JointState(R.Header(R.Time.from_seconds(now), ""), [], s, [], []))


@pytest.fixture()
def dds_setup():
    from cosmos3_robot.runtime.dds_node import DDSPolicyNode, TopicConfig
    from cosmos3_robot.runtime.node_core import NodeConfig, PolicyNodeCore, policy_infer
    from cosmos3_robot.runtime.safety import SafetyConfig

    domain = 100 + os.getpid() % 100
    cfg = NodeConfig(cameras=("front",), image_size=(32, 32), control_hz=20, max_frame_age_s=0.3,
                     max_state_age_s=0.3, safety=SafetyConfig(max_step=[0.05] * 3 + [1.0] * 5, gripper_dim=7,
                                                              max_obs_age_s=None))
    core = PolicyNodeCore(policy_infer(_tiny_policy()), cfg)
    node = DDSPolicyNode(core, TopicConfig(diagnostics_every=1), domain_id=domain)
    robot = Robot(domain)
    yield node, robot
    node.stop()


def _run(node, robot, ticks: int, **publish) -> list:
    got = []
    for _ in range(ticks):
        if publish is not None:
            robot.publish(**publish)
        time.sleep(0.01)
        node.spin_once()
        time.sleep(0.03)
        got += robot.commands.take(N=20)
    return got


def _diag(robot) -> dict:
    msgs = robot.diagnostics.take(N=200)
    assert msgs, "no diagnostics received"
    last = msgs[-1].status[0]
    return {"level": last.level, "message": last.message, **{kv.key: kv.value for kv in last.values}}


def test_node_exchanges_frames_and_chunks_over_dds(dds_setup):
    node, robot = dds_setup
    robot.instruction.write(robot.R.String("reach the red target"))
    got = _run(node, robot, 30)
    assert len(got) >= 15, f"only {len(got)} commands"
    cmds = np.array([m.points[0].positions for m in got])
    assert cmds.shape[1] == 8 and np.isfinite(cmds).all()
    assert np.all(np.abs(np.diff(cmds[:, :3], axis=0)) <= 0.05 + 1e-9)  # the rate limit holds on the wire
    assert got[0].points[0].time_from_start.nanosec == 50_000_000  # one control period at 20 Hz
    status = node.core.status()
    assert status["counts"]["chunks"] >= 2 and status["latency_ms"] > 0
    d = _diag(robot)
    assert "latency_ms" in d and int(d["chunks"]) >= 2
    print(f"\nDDS loopback: {len(got)} commands, {status['counts']['chunks']} chunks, "
          f"latency {status['latency_ms']:.1f} ms per chunk (tiny model, CPU)")


def test_node_never_commands_from_bad_input(dds_setup):
    node, robot = dds_setup
    # no instruction yet: nothing is sent, and the node says why
    got = _run(node, robot, 5)
    assert got == [] and node.core.counts["no_instruction"] >= 4
    robot.instruction.write(robot.R.String("reach the red target"))
    assert len(_run(node, robot, 12)) >= 5
    last_sent = node.core.safety.last_command.copy()

    def held(msgs):
        return all(np.allclose(m.points[0].positions, last_sent) for m in msgs)

    # wrong image size and encoding: rejected, the node holds the last safe command
    for kw, reason in [({"size": 16}, "bad_image"), ({"encoding": "yuv422"}, "bad_image")]:
        before = node.core.counts[reason]
        time.sleep(0.35)  # let the last good frame go stale
        msgs = _run(node, robot, 6, **kw)
        assert node.core.counts[reason] > before and held(msgs)
    # NaN state: rejected
    before = node.core.counts["bad_state"]
    time.sleep(0.35)
    msgs = _run(node, robot, 6, state=[np.nan] * 8)
    assert node.core.counts["bad_state"] > before and held(msgs)
    # stale frames (stamped in the past do not matter; frames that stop arriving do)
    msgs = []
    for _ in range(12):
        node.spin_once()
        time.sleep(0.04)
        msgs += robot.commands.take(N=20)
    assert node.core.counts["stale_image"] + node.core.counts["stale_state"] > 0 and held(msgs[-5:])
    # e-stop: hold while pressed, whatever comes in; diagnostics say ERROR
    robot.estop.write(robot.R.Bool(True))
    msgs = _run(node, robot, 8)
    assert node.core.safety.estopped and held(msgs[1:])
    d = _diag(robot)
    assert d["level"] == 2 and int(d["safety.estop"]) >= 1
    robot.estop.write(robot.R.Bool(False))
    _run(node, robot, 3)
    assert not node.core.safety.estopped


def test_unknown_embodiment_or_missing_checkpoint_is_refused(tmp_path):
    from cosmos3_robot.runtime.node_params import build_node, load_params

    params = load_params(PKG / "config" / "policy.yaml")
    with pytest.raises(ValueError, match="checkpoint: required"):
        build_node(params)
    with pytest.raises(ValueError, match="neither a checkpoint"):
        build_node({**params, "checkpoint": str(tmp_path)})



def test_checkpoint_embodiment_is_checked(tmp_path):
    import json

    from cosmos3_robot.model import save_model
    from cosmos3_robot.runtime.node_params import build_node, load_params

    pol = _tiny_policy()
    ckpt = tmp_path / "ckpt"
    save_model(pol.model, ckpt / "model.safetensors")
    info = {"windows": [pol.window], "normalizers": [pol.normalizer.to_dict()]}
    (ckpt / "trainer.json").write_text(json.dumps(info))
    params = {**load_params(PKG / "config" / "policy.yaml"), "checkpoint": str(ckpt)}
    core, topics, policy = build_node(params)  # loads
    # each topic is named after the model's camera it shows (the first: the video camera)
    cam = pol.window["camera"]
    assert policy.embodiment.name == "sim_arm" and topics.cameras == {cam: "/camera/image_raw"}
    assert policy.config.temperature == 1.0
    two = {**params, "camera_topics": ["/a", "/b"]}
    core2, topics2, _ = build_node(two)
    assert topics2.cameras == {cam: "/a", "camera1": "/b"}
    core2.close()
    core2, topics2, _ = build_node({**two, "camera_names": ["left", "wrist"]})
    assert topics2.cameras == {"left": "/a", "wrist": "/b"}
    core2.close()
    with pytest.raises(ValueError, match="parameter camera_names: expected 2 distinct names"):
        build_node({**two, "camera_names": ["a", "a"]})
    core.close()
    core, _, cool = build_node({**params, "temperature": 0.25})
    assert cool.config.temperature == 0.25
    core.close()
    with pytest.raises(ValueError, match="trained for 'sim_arm'"):
        build_node({**params, "embodiment": "droid"})
    # The fastest CPU path is a parameter away (config/policy.yaml, launch arguments).
    pytest.importorskip("onnxruntime", reason="the export extra is not installed")
    core, _, fast = build_node({**params, "backend": "onnxruntime", "int8": True, "steps": 2, "sampler": "heun"})
    assert (fast.config.backend, fast.config.int8, fast.config.steps, fast.config.sampler) == \
        ("onnxruntime", True, 2, "heun")
    assert fast.infer(np.zeros((32, 32, 3), np.uint8), {"state": np.r_[0.5, 0, 0.3, 1, 0, 0, 0, 0.0]},
                      "reach")["state"].shape[0] == fast.chunk
    core.close()
    for bad, match in (({"backend": "tensorrt"}, "parameters .*backend: expected 'torch' or 'onnxruntime'"),
                       ({"sampler": "ddim"}, "sampler: expected 'euler' or 'heun'"),
                       ({"int8": True}, "int8: needs backend 'onnxruntime'"),
                       ({"temperature": 2.0}, r"parameters .*temperature: expected a number in \[0, 1\]")):
        with pytest.raises(ValueError, match=match):
            build_node({**params, **bad})
    info["windows"][0] = {**pol.window, "embodiment": "no_such_robot"}
    (ckpt / "trainer.json").write_text(json.dumps(info))
    with pytest.raises(ValueError, match="no_such_robot"):
        build_node(params)
