"""rclpy node `cosmos3_policy`: camera frames + state in, safety-filtered commands out.

Everything but the ROS plumbing is `cosmos3_robot.runtime.node_core.PolicyNodeCore` (shared
with the pip-only DDS node): inference on a worker thread started early by the chunk
scheduler, safety filter, watchdog, e-stop. Cameras use sensor-data QoS and, with more than
one camera, `message_filters.ApproximateTimeSynchronizer`; the instruction topic is
transient local; a timer at `control_rate` publishes one command per period and
`/diagnostics` once a second (or at once when something is wrong).
"""

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import PoseStamped
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CompressedImage, Image, JointState
from std_msgs.msg import Bool, String
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from cosmos3_robot.runtime.node_core import decode_compressed, decode_image
from cosmos3_robot.runtime.node_params import NODE_NAME, build_node, load_params  # noqa: F401

PARAMS = {
    "checkpoint": "", "embodiment": "", "camera_topics": ["/camera/image_raw"], "camera_names": [""],
    "compressed": False,
    "image_height": 0, "image_width": 0, "state_topic": "/joint_states", "state_type": "joint_state",
    "state_dim": 0, "instruction_topic": "/instruction", "instruction": "", "estop_topic": "/estop",
    "command_topic": "/cosmos3/command", "output_type": "joint_trajectory", "joint_names": [""],
    "frame_id": "base", "control_rate": 10.0, "device": "cpu", "steps": 4, "sampler": "euler",
    "backend": "torch", "int8": False, "dtype": "float32", "temperature": 1.0, "blend": "inpaint",
    "max_frame_age": 0.5, "max_state_age": 0.2, "sync_slop": 0.05, "low": [0.0], "high": [0.0],
    "max_step": [0.0], "max_accel_step": [0.0], "workspace_low": [0.0, 0.0, 0.0], "workspace_high": [0.0, 0.0, 0.0], "gripper_dim": -1,
}


def _stamp(msg) -> float:
    return msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9


class PolicyNode(Node):
    def __init__(self):
        super().__init__(NODE_NAME)
        for name, default in PARAMS.items():
            self.declare_parameter(name, default)
        params = {name: self.get_parameter(name).value for name in PARAMS}
        self.core, self.topics, self.policy = build_node(params)
        t = self.topics
        img_type = CompressedImage if t.compressed else Image
        cams = list(t.cameras.items())
        if len(cams) == 1:
            cam, topic = cams[0]
            self.create_subscription(img_type, topic, lambda m, c=cam: self._on_image(c, m), qos_profile_sensor_data)
        else:
            import message_filters

            subs = [message_filters.Subscriber(self, img_type, topic, qos_profile=qos_profile_sensor_data)
                    for _, topic in cams]
            self._sync = message_filters.ApproximateTimeSynchronizer(subs, queue_size=10,
                                                                     slop=self.core.config.sync_slop_s)
            self._sync.registerCallback(lambda *msgs: [self._on_image(c, m) for (c, _), m in zip(cams, msgs)])
        state_type = JointState if t.state_type == "joint_state" else PoseStamped
        self.create_subscription(state_type, t.state_topic, self._on_state, qos_profile_sensor_data)
        latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.create_subscription(String, t.instruction_topic, lambda m: self.core.on_instruction(m.data), latched)
        self.create_subscription(Bool, t.estop_topic, lambda m: self.core.on_estop(m.data), 10)
        out_type = JointTrajectory if t.output_type == "joint_trajectory" else PoseStamped
        self.pub = self.create_publisher(out_type, t.command_topic, 10)
        self.diag = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.timer = self.create_timer(1.0 / self.core.config.control_hz, self._tick)
        self.get_logger().info(f"policy {self.policy.embodiment.name} from {params['checkpoint']}: "
                               f"{len(cams)} camera(s), {self.core.config.control_hz:g} Hz -> {t.command_topic}")

    def _on_image(self, cam, msg):
        try:
            img = decode_compressed(bytes(msg.data), msg.format) if self.topics.compressed else \
                decode_image(bytes(msg.data), msg.height, msg.width, msg.encoding)
        except ValueError as exc:
            self.core.reject("bad_image", f"{cam}: {exc}")
            return
        self.core.on_image(cam, _stamp(msg), img)

    def _on_state(self, msg):
        if self.topics.state_type == "joint_state":
            v = np.asarray(msg.position, dtype=np.float64)
        else:
            p, q = msg.pose.position, msg.pose.orientation
            v = self.core.pose_state([p.x, p.y, p.z], [q.w, q.x, q.y, q.z], self.topics.state_dim)
        self.core.on_state(_stamp(msg), {self.topics.state_key: v})

    def _tick(self):
        cmd, status = self.core.tick()
        stamp = self.get_clock().now().to_msg()
        if cmd is not None:
            if self.topics.output_type == "joint_trajectory":
                msg = JointTrajectory()
                msg.header.stamp, msg.header.frame_id = stamp, self.topics.frame_id
                msg.joint_names = list(self.topics.joint_names) or [f"a{i}" for i in range(len(cmd))]
                pt = JointTrajectoryPoint()
                pt.positions = [float(x) for x in cmd]
                period = 1.0 / self.core.config.control_hz
                pt.time_from_start.sec, pt.time_from_start.nanosec = int(period), int((period % 1) * 1e9)
                msg.points = [pt]
            else:
                msg = PoseStamped()
                msg.header.stamp, msg.header.frame_id = stamp, self.topics.frame_id
                (msg.pose.position.x, msg.pose.position.y, msg.pose.position.z, msg.pose.orientation.w,
                 msg.pose.orientation.x, msg.pose.orientation.y, msg.pose.orientation.z) = (float(v) for v in cmd[:7])
            self.pub.publish(msg)
        if (status["step"] - 1) % max(int(self.core.config.control_hz), 1) == 0 or not status["ok"]:
            arr = DiagnosticArray()
            arr.header.stamp = stamp
            st = DiagnosticStatus(level=bytes([0 if status["ok"] else (2 if status["estop"] else 1)]),
                                  name="cosmos3_robot: policy", message=status["last_problem"] or "ok",
                                  hardware_id="cosmos3_robot")
            st.values = [KeyValue(key=str(k), value=str(v)) for k, v in
                         {**status["counts"], **status["safety"], "latency_ms": round(status["latency_ms"], 1)}.items()]
            arr.status = [st]
            self.diag.publish(arr)


def main(args=None):
    rclpy.init(args=args)
    node = PolicyNode()
    try:
        rclpy.spin(node)
    except KeyboardInterrupt:
        pass
    finally:
        node.core.close()
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    main()
