"""robosuite 1.4 tasks (Lift, Stack, PickPlaceCan, ...) behind the built-in tasks' conventions.

The adapter drives a Panda with the OSC_POSE controller at 20 Hz and exposes the same
observation and action layout as :mod:`.tasks`, so one policy/evaluator serves both:

- observation ``front`` (robosuite ``agentview``) and ``wrist`` (``robot0_eye_in_hand``),
  ``(S, S, 3)`` uint8, rotated 180 degrees to upright (robosuite renders upside down);
  ``state`` ``(8,)`` = eef position (m), eef quaternion (w x y z), gripper command (0..1);
- action ``(8,)`` = absolute eef target (position, quaternion w x y z) and gripper closure.
  It becomes the controller's normalised delta: position error / 0.05 m and the world-frame
  rotation error (axis-angle) / 0.5 rad (the OSC_POSE ``output_max``), clipped to [-1, 1];
  gripper ``2 g - 1`` (-1 open, +1 close).

Success is robosuite's ``_check_success()``, checked every step; the episode ends there.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from cosmos3_robot.sim import render as _render  # noqa: F401  (MUJOCO_GL before robosuite loads MuJoCo)

import gymnasium as gym  # noqa: E402

OSC_POS_MAX = 0.05  # m per unit of normalised OSC_POSE input (robosuite osc_pose.json output_max)
OSC_ROT_MAX = 0.5  # rad per unit
CONTROL_HZ = 20
INSTRUCTIONS = {
    "Lift": "lift the cube",
    "Stack": "stack the red cube on the green cube",
    "PickPlaceCan": "put the can in its bin",
    "PickPlaceMilk": "put the milk in its bin",
    "NutAssemblySquare": "put the square nut on its peg",
    "Door": "open the door",
}
DEFAULT_STEPS = {"Lift": 200, "Stack": 300, "PickPlaceCan": 400}


def _quat_xyzw_to_wxyz(q: np.ndarray) -> np.ndarray:
    return np.r_[q[3], q[:3]]


class RobosuiteEnv(gym.Env):
    """A robosuite task with the built-in tasks' observation/action conventions."""

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["rgb_array"], "render_fps": CONTROL_HZ}

    def __init__(self, task: str = "Lift", image_size: int = 128, cameras: tuple[str, ...] = ("front", "wrist"),
                 max_episode_steps: int | None = None, render_mode: str | None = "rgb_array"):
        import robosuite
        from robosuite.controllers import load_controller_config

        if task not in robosuite.ALL_ENVIRONMENTS:
            raise ValueError(f"robosuite task: unknown {task!r}; available: {sorted(robosuite.ALL_ENVIRONMENTS)}")
        names = {"front": "agentview", "wrist": "robot0_eye_in_hand"}
        unknown = set(cameras) - set(names)
        if unknown:
            raise ValueError(f"cameras: unknown {sorted(unknown)}; available: {sorted(names)}")
        self.task = task
        self.cameras = tuple(cameras) if render_mode else ()
        self.image_size = int(image_size)
        self.horizon = int(max_episode_steps or DEFAULT_STEPS.get(task, 300))
        self.render_mode = render_mode
        self._cam = {c: names[c] for c in self.cameras}
        self.env = robosuite.make(
            task, robots="Panda", controller_configs=load_controller_config(default_controller="OSC_POSE"),
            has_renderer=False, has_offscreen_renderer=bool(self.cameras), use_camera_obs=bool(self.cameras),
            camera_names=[self._cam[c] for c in self.cameras] or "agentview",
            camera_heights=self.image_size, camera_widths=self.image_size, control_freq=CONTROL_HZ,
            horizon=self.horizon + 10, ignore_done=True, reward_shaping=False, hard_reset=False)
        self.observation_space = gym.spaces.Dict({
            **{c: gym.spaces.Box(0, 255, (self.image_size, self.image_size, 3), np.uint8) for c in self.cameras},
            "state": gym.spaces.Box(-np.inf, np.inf, (8,), np.float32)})
        self.action_space = gym.spaces.Box(np.r_[-np.inf * np.ones(3), -np.ones(4), 0.0].astype(np.float32),
                                           np.r_[np.inf * np.ones(3), np.ones(4), 1.0].astype(np.float32))
        self.instruction = INSTRUCTIONS.get(task, task)
        self.gripper = 0.0
        self.steps = 0
        self._raw: dict[str, np.ndarray] = {}

    @property
    def unwrapped(self):  # the evaluator reads .cameras from the unwrapped env
        return self

    def _obs(self) -> dict[str, np.ndarray]:
        o = self._raw
        out = {c: np.ascontiguousarray(o[f"{self._cam[c]}_image"][::-1, ::-1]) for c in self.cameras}
        out["state"] = np.r_[o["robot0_eef_pos"], _quat_xyzw_to_wxyz(o["robot0_eef_quat"]),
                             self.gripper].astype(np.float32)
        return out

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        if seed is not None:
            np.random.seed(seed)  # robosuite's placement samplers draw from numpy's global RNG
        self._raw = self.env.reset()
        self.gripper, self.steps = 0.0, 0
        return self._obs(), {"instruction": self.instruction, "success": False, "task": self.task}

    def to_controller(self, action: np.ndarray) -> np.ndarray:
        """Absolute 8D target -> OSC_POSE normalised 7D delta (see the module docstring)."""
        from scipy.spatial.transform import Rotation

        a = np.asarray(action, dtype=np.float64)
        if a.shape != (8,) or not np.all(np.isfinite(a)):
            raise ValueError(f"action: expected 8 finite values (position 3, quaternion wxyz 4, gripper 1), "
                             f"got shape {a.shape}{'' if a.shape != (8,) else ' with non-finite values'}")
        q = a[3:7]
        if np.linalg.norm(q) < 1e-6:
            raise ValueError("action: quaternion (indices 3..6) has zero norm")
        s = self._obs()["state"].astype(np.float64)
        dpos = np.clip((a[:3] - s[:3]) / OSC_POS_MAX, -1, 1)
        r_target = Rotation.from_quat(np.r_[q[1:], q[0]])
        r_now = Rotation.from_quat(np.r_[s[4:7], s[3]])
        drot = np.clip((r_target * r_now.inv()).as_rotvec() / OSC_ROT_MAX, -1, 1)
        g = float(np.clip(a[7], 0, 1))
        return np.r_[dpos, drot, 2 * g - 1]

    def step(self, action):
        ctrl = self.to_controller(action)
        self.gripper = float(np.clip(action[7], 0, 1))
        self._raw, _, _, _ = self.env.step(ctrl)
        self.steps += 1
        success = bool(self.env._check_success())
        truncated = self.steps >= self.horizon and not success
        return self._obs(), float(success), success, truncated, {"instruction": self.instruction,
                                                                 "success": success, "task": self.task}

    def render(self):
        return self._obs().get("front") if self.cameras else None

    def settings(self, seed: int) -> dict[str, Any]:
        """What an episode runs under, for the evaluation report."""
        return {"image_size": self.image_size, "max_steps": self.horizon, "cameras": list(self.cameras)}

    def close(self) -> None:
        self.env.close()
