"""The policy node's parameters (``ros2_ws/src/cosmos3_robot/config/policy.yaml``) -> objects.

One translation for both transports: the rclpy node reads its ROS parameters into a dict
and the pip-only DDS node (``cosmos3-robot node``) reads the same YAML; both call
:func:`build_node` to get the core (policy, scheduler, safety) and the topic settings. The robot state arrives
as one vector (JointState positions, or a pose) under the embodiment's raw key ``state``
(e.g. ``sim_arm``); embodiments with several raw keys need their own adapter.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np
import yaml

from cosmos3_robot.runtime.node_core import NodeConfig, PolicyNodeCore, policy_infer
from cosmos3_robot.runtime.safety import SafetyConfig

NODE_NAME = "cosmos3_policy"


def load_params(path: str | Path, node: str = NODE_NAME) -> dict[str, Any]:
    """The ``<node>: ros__parameters:`` block of a ROS 2 parameter YAML."""
    data = yaml.safe_load(Path(path).read_text()) or {}
    block = data.get(node, data.get("/**", {}))
    params = (block or {}).get("ros__parameters")
    if not isinstance(params, dict):
        raise ValueError(f"{path}: no '{node}: ros__parameters:' block")
    return dict(params)


def _limits(v: Any) -> list[float] | None:
    """ROS parameters cannot be null: ``[0.0]`` (or an empty list) means "no limit"."""
    if not v or (len(v) == 1 and float(v[0]) == 0.0):
        return None
    return [float(x) for x in v]


def safety_config(p: Mapping[str, Any]) -> SafetyConfig:
    wl, wh = _limits(p.get("workspace_low")), _limits(p.get("workspace_high"))
    if wl is not None and wh is not None and wl == wh:
        wl = wh = None
    try:
        g = int(p.get("gripper_dim", -1))
        return SafetyConfig(low=_limits(p.get("low")), high=_limits(p.get("high")),
                            max_step=_limits(p.get("max_step")), max_accel_step=_limits(p.get("max_accel_step")),
                            workspace_low=wl, workspace_high=wh, gripper_dim=None if g < 0 else g,
                            max_obs_age_s=None)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"parameters low/high/max_step/max_accel_step/workspace_low/workspace_high/gripper_dim: "
                         f"{exc}") from None


def inference_config(p: Mapping[str, Any]):
    """The sampling and backend parameters -> :class:`InferenceConfig` (its checks name the
    setting; the error says which parameter it came from)."""
    from cosmos3_robot.runtime import InferenceConfig

    try:
        return InferenceConfig(steps=int(p.get("steps", 4)), sampler=str(p.get("sampler", "euler")),
                               device=str(p.get("device", "cpu")), backend=str(p.get("backend", "torch")),
                               int8=bool(p.get("int8", False)), dtype=str(p.get("dtype", "float32")),
                               temperature=float(p.get("temperature", 1.0)))
    except ValueError as exc:
        raise ValueError(f"parameters steps/sampler/device/backend/int8/dtype/temperature: {exc}") from None


def build_node(p: Mapping[str, Any]):
    """Parameters -> (PolicyNodeCore, TopicConfig, the policy). Loads the checkpoint."""
    from cosmos3_robot.runtime import Cosmos3Policy
    from cosmos3_robot.runtime.dds_node import TopicConfig

    if not p.get("checkpoint"):
        raise ValueError("parameter checkpoint: required (a run or checkpoint folder)")
    policy = Cosmos3Policy.from_checkpoint(str(p["checkpoint"]), inference_config(p))
    want = str(p.get("embodiment") or "")
    if want and want != policy.embodiment.name:
        raise ValueError(f"parameter embodiment: {want!r}, but the checkpoint was trained for "
                         f"{policy.embodiment.name!r}")
    cams = [str(t) for t in p.get("camera_topics") or []]
    if not cams:
        raise ValueError("parameter camera_topics: at least one camera topic is required")
    # camera_names: what each topic shows, in the model's camera names (the first topic is the
    # model's video camera); default: the model's cameras in order (video camera, then views)
    model_cams = list(policy.cameras)
    names = [str(n) for n in p.get("camera_names") or [] if n] or \
        (model_cams + [f"camera{i}" for i in range(len(model_cams), len(cams))])[: len(cams)]
    if len(names) != len(cams) or len(set(names)) != len(names):
        raise ValueError(f"parameter camera_names: expected {len(cams)} distinct names, one per camera_topics "
                         f"entry, got {names}")
    h, w = int(p.get("image_height", 0)), int(p.get("image_width", 0))
    cfg = NodeConfig(cameras=tuple(names), image_size=(h, w) if h > 0 and w > 0 else None,
                     control_hz=float(p.get("control_rate", policy.fps)),
                     max_frame_age_s=float(p.get("max_frame_age", 0.5)),
                     max_state_age_s=float(p.get("max_state_age", 0.2)),
                     sync_slop_s=float(p.get("sync_slop", 0.05)), blend=str(p.get("blend", "inpaint")),
                     instruction=str(p.get("instruction", "")), safety=safety_config(p))
    joints = tuple(str(j) for j in p.get("joint_names") or [] if j)
    state_dim = int(p.get("state_dim", 0)) or None
    topics = TopicConfig(cameras=dict(zip(names, cams)), compressed=bool(p.get("compressed", False)),
                         state_topic=str(p.get("state_topic", "/joint_states")),
                         state_type=str(p.get("state_type", "joint_state")), state_dim=state_dim,
                         instruction_topic=str(p.get("instruction_topic", "/instruction")),
                         estop_topic=str(p.get("estop_topic", "/estop")),
                         command_topic=str(p.get("command_topic", "/cosmos3/command")),
                         output_type=str(p.get("output_type", "joint_trajectory")), joint_names=joints,
                         frame_id=str(p.get("frame_id", "base")))
    layout = policy.embodiment.raw_action_layout()
    if topics.state_key not in layout:
        raise ValueError(f"the model's commands hold {sorted(layout)}, not the state key {topics.state_key!r}")
    width = int(np.prod(layout[topics.state_key]))
    problem = cfg.safety.problem(width)
    if problem:  # e.g. gripper_dim 8 for 8-wide commands: refused here, not in the control loop
        raise ValueError(f"parameters: {problem} "
                         f"(the model's {topics.state_key!r} commands are {width} wide)")
    core = PolicyNodeCore(policy_infer(policy, topics.state_key, cfg.cameras), cfg)
    return core, topics, policy
