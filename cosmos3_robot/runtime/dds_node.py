"""The policy node over plain DDS (cyclonedds): ROS 2 topics and types without a ROS install.

Subscribes (ROS 2 names; DDS topics ``rt/...``):
  camera topics, ``sensor_msgs/Image`` (rgb8/bgr8/mono8) or ``sensor_msgs/CompressedImage``,
  best-effort (sensor QoS); the state, ``sensor_msgs/JointState`` (positions = the raw state
  vector) or ``geometry_msgs/PoseStamped`` (x y z, qw qx qy qz, then the last commanded
  gripper when the embodiment wants one more value); the instruction, ``std_msgs/String``
  (reliable, transient local); the e-stop, ``std_msgs/Bool``.
Publishes:
  each control period, the safety-filtered command as a one-point
  ``trajectory_msgs/JointTrajectory`` (``time_from_start`` = one control period) or a
  ``geometry_msgs/PoseStamped`` target (reliable, keep last); status on ``/diagnostics``
  (``diagnostic_msgs/DiagnosticArray``) every ``diagnostics_every`` periods.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cosmos3_robot.runtime.node_core import PolicyNodeCore, decode_compressed, decode_image
from cosmos3_robot.runtime import ros_types as R


@dataclass(frozen=True)
class TopicConfig:
    """Topic names and message types (ROS 2 names)."""

    cameras: dict[str, str] = field(default_factory=lambda: {"front": "/camera/image_raw"})
    compressed: bool = False
    state_topic: str = "/joint_states"
    state_type: str = "joint_state"  # or "pose"
    state_key: str = "state"
    state_dim: int | None = None  # pose state: pad with the last gripper command up to this width
    instruction_topic: str = "/instruction"
    estop_topic: str = "/estop"
    command_topic: str = "/cosmos3/command"
    output_type: str = "joint_trajectory"  # or "pose"
    joint_names: tuple[str, ...] = ()
    frame_id: str = "base"
    diagnostics_topic: str = "/diagnostics"
    diagnostics_every: int = 10

    def __post_init__(self) -> None:
        if self.state_type not in ("joint_state", "pose"):
            raise ValueError(f"state_type: expected 'joint_state' or 'pose', got {self.state_type!r}")
        if self.output_type not in ("joint_trajectory", "pose"):
            raise ValueError(f"output_type: expected 'joint_trajectory' or 'pose', got {self.output_type!r}")


def _stamp(h: R.Header) -> float:
    return h.stamp.sec + h.stamp.nanosec * 1e-9


class DDSPolicyNode:
    """Wire a :class:`PolicyNodeCore` to DDS readers and writers on ``domain_id``."""

    def __init__(self, core: PolicyNodeCore, topics: TopicConfig = TopicConfig(), domain_id: int = 0):
        from cyclonedds.core import Policy, Qos
        from cyclonedds.domain import DomainParticipant
        from cyclonedds.pub import DataWriter
        from cyclonedds.sub import DataReader
        from cyclonedds.topic import Topic
        from cyclonedds.util import duration

        self.core, self.topics = core, topics
        self.participant = DomainParticipant(domain_id)
        dp = self.participant
        sensor = Qos(Policy.Reliability.BestEffort, Policy.History.KeepLast(5))
        reliable = Qos(Policy.Reliability.Reliable(duration(seconds=1)), Policy.History.KeepLast(10))
        latched = Qos(Policy.Reliability.Reliable(duration(seconds=1)), Policy.Durability.TransientLocal,
                      Policy.History.KeepLast(1))
        img_type = R.CompressedImage if topics.compressed else R.Image
        self.camera_readers = {
            cam: DataReader(dp, Topic(dp, R.dds_topic(t), img_type), qos=sensor) for cam, t in topics.cameras.items()}
        state_type = R.JointState if topics.state_type == "joint_state" else R.PoseStamped
        self.state_reader = DataReader(dp, Topic(dp, R.dds_topic(topics.state_topic), state_type), qos=sensor)
        self.instruction_reader = DataReader(dp, Topic(dp, R.dds_topic(topics.instruction_topic), R.String), qos=latched)
        self.estop_reader = DataReader(dp, Topic(dp, R.dds_topic(topics.estop_topic), R.Bool), qos=reliable)
        out_type = R.JointTrajectory if topics.output_type == "joint_trajectory" else R.PoseStamped
        self.command_writer = DataWriter(dp, Topic(dp, R.dds_topic(topics.command_topic), out_type), qos=reliable)
        self.diag_writer = DataWriter(dp, Topic(dp, R.dds_topic(topics.diagnostics_topic), R.DiagnosticArray),
                                      qos=reliable)
        self._stop = threading.Event()
        self.published = 0

    # ---- inbound -----------------------------------------------------------------------
    def _state_vector(self, msg: Any) -> np.ndarray:
        if self.topics.state_type == "joint_state":
            return np.asarray(msg.position, dtype=np.float64)
        p, q = msg.pose.position, msg.pose.orientation
        return self.core.pose_state([p.x, p.y, p.z], [q.w, q.x, q.y, q.z], self.topics.state_dim)

    def poll(self) -> None:
        """Take every sample waiting on the input topics and hand it to the core."""
        for cam, reader in self.camera_readers.items():
            for msg in reader.take(N=16):
                try:
                    if self.topics.compressed:
                        img = decode_compressed(bytes(msg.data), msg.format)
                    else:
                        img = decode_image(bytes(msg.data), msg.height, msg.width, msg.encoding)
                except ValueError as exc:
                    self.core.reject("bad_image", f"{cam}: {exc}")
                    continue
                self.core.on_image(cam, _stamp(msg.header), img)
        for msg in self.state_reader.take(N=16):
            self.core.on_state(_stamp(msg.header), {self.topics.state_key: self._state_vector(msg)})
        for msg in self.instruction_reader.take(N=16):
            self.core.on_instruction(msg.data)
        for msg in self.estop_reader.take(N=16):
            self.core.on_estop(bool(msg.data))

    # ---- outbound ----------------------------------------------------------------------
    def _command_msg(self, cmd: np.ndarray) -> Any:
        now = R.Time.from_seconds(time.time())
        header = R.Header(now, self.topics.frame_id)
        if self.topics.output_type == "joint_trajectory":
            period = 1.0 / self.core.config.control_hz
            names = list(self.topics.joint_names) or [f"a{i}" for i in range(len(cmd))]
            point = R.JointTrajectoryPoint(positions=[float(x) for x in cmd],
                                           time_from_start=R.Duration(int(period), int((period % 1) * 1e9)))
            return R.JointTrajectory(header, names, [point])
        x, y, z, qw, qx, qy, qz = (float(v) for v in cmd[:7])
        return R.PoseStamped(header, R.Pose(R.Point(x, y, z), R.Quaternion(qx, qy, qz, qw)))

    def _diagnostics(self, status: dict[str, Any]) -> Any:
        level = 0 if status["ok"] else (2 if status["estop"] else 1)
        values = [R.KeyValue(k, str(v)) for k, v in {**status["counts"], **{f"safety.{k}": v for k, v in
                                                                        status["safety"].items()}}.items()]
        values += [R.KeyValue("latency_ms", f"{status['latency_ms']:.1f}"), R.KeyValue("step", str(status["step"]))]
        st = R.DiagnosticStatus(level=level, name="cosmos3_robot: policy", message=status["last_problem"] or "ok",
                                hardware_id="cosmos3_robot", values=values)
        return R.DiagnosticArray(R.Header(R.Time.from_seconds(time.time()), ""), [st])

    def spin_once(self) -> np.ndarray | None:
        """Poll inputs, run one control period, publish; returns the command sent (or None)."""
        self.poll()
        cmd, status = self.core.tick()
        if cmd is not None:
            self.command_writer.write(self._command_msg(cmd))
            self.published += 1
        if (status["step"] - 1) % max(self.topics.diagnostics_every, 1) == 0 or not status["ok"]:
            self.diag_writer.write(self._diagnostics(status))
        return cmd

    def run(self) -> None:
        """Spin at the control rate until :meth:`stop`."""
        period = 1.0 / self.core.config.control_hz
        nxt = time.monotonic()
        while not self._stop.is_set():
            self.spin_once()
            nxt += period
            self._stop.wait(max(0.0, nxt - time.monotonic()))

    def stop(self) -> None:
        self._stop.set()
        self.core.close()
