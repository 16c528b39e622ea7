"""The built-in tasks with LeRobot's environment conventions, for LeRobot's evaluation loop.

LeRobot's rollout (``lerobot.scripts.lerobot_eval.rollout``) reads observations as
``{"pixels": {camera: (H, W, 3) uint8}, "agent_pos": (8,) float32}``, the instruction from
the env's ``task_description`` attribute, success from ``info["is_success"]`` and the step
limit from ``_max_episode_steps``. :class:`LeRobotTaskEnv` wraps a built-in task that way;
importing this module registers ``cosmos3_lerobot/<task>`` gymnasium ids, which the
``cosmos3_sim`` env type of the LeRobot plugin makes (``lerobot-eval --env.type=cosmos3_sim
--env.task=reach``).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from cosmos3_robot.sim.scene import CONTROL_HZ
from cosmos3_robot.sim.tasks import STATE_DIM, TASKS

GYM_NAMESPACE = "cosmos3_lerobot"


class LeRobotTaskEnv(gym.Env):
    """A built-in task (``reach``, ``push``, ``pick_place``, ``stack``) in LeRobot's format.

    Observations: ``pixels`` (one entry per camera, ``(S, S, 3)`` uint8) and ``agent_pos``
    ``(8,)`` (the task's state: tcp position m, quaternion wxyz, gripper 0..1). Actions: the
    task's absolute 8D targets. ``info["is_success"]`` is the task's success flag.
    """

    # an integer: video writers (LeRobot's eval, PyAV) take a frame rate, not a float
    metadata = {"render_modes": ["rgb_array"], "render_fps": int(CONTROL_HZ)}

    def __init__(self, task: str = "reach", image_size: int = 64, cameras: tuple[str, ...] = ("front",),
                 max_episode_steps: int | None = None, render_mode: str = "rgb_array"):
        if task not in TASKS:
            raise ValueError(f"task: unknown {task!r}; tasks: {sorted(TASKS)}")
        self.env = TASKS[task](image_size=image_size, cameras=tuple(cameras), max_episode_steps=max_episode_steps)
        self.render_mode = render_mode
        self.cameras = tuple(cameras)
        self._max_episode_steps = self.env.horizon
        self.task = task
        self.task_description = ""
        box = gym.spaces.Box(0, 255, (image_size, image_size, 3), np.uint8)
        self.observation_space = gym.spaces.Dict({
            "pixels": gym.spaces.Dict({c: box for c in self.cameras}),
            "agent_pos": gym.spaces.Box(-np.inf, np.inf, (STATE_DIM,), np.float32),
        })
        self.action_space = self.env.action_space
        self._last: dict[str, np.ndarray] = {}

    def _obs(self, obs: dict[str, np.ndarray]) -> dict[str, Any]:
        self._last = obs
        return {"pixels": {c: obs[c] for c in self.cameras}, "agent_pos": obs["state"].astype(np.float32)}

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        obs, info = self.env.reset(seed=seed, options=options)
        self.task_description = info["instruction"]
        return self._obs(obs), {**info, "is_success": False}

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(np.asarray(action, np.float32))
        return self._obs(obs), reward, terminated, truncated, {**info, "is_success": bool(info["success"])}

    def render(self) -> np.ndarray:
        return np.concatenate([self._last[c] for c in self.cameras], 1)

    def close(self) -> None:
        self.env.close()


for _task in TASKS:
    if f"{GYM_NAMESPACE}/{_task}" not in gym.registry:
        gym.register(f"{GYM_NAMESPACE}/{_task}", entry_point=LeRobotTaskEnv, kwargs={"task": _task})
