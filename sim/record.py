"""Expert demonstrations of the built-in tasks, written as a LeRobot dataset.

Each kept episode holds the cameras' frames, ``state`` ``(T, 8)`` and the expert's
``action`` ``(T, 8)`` (the same layout, see :mod:`.tasks`), at the control rate. Recording
goes on for ``hold_steps`` steps after the first success (the expert keeps acting: the
demonstration shows staying at the goal); episodes that fail are counted and left out.
Training windows use end padding (``pad_end``), so a few held steps suffice. The dataset is written with LeRobot's own writer
(:func:`cosmos3_robot.data.convert.to_lerobot`): features ``observation.images.front``,
``observation.images.wrist``, ``observation.state``, ``action`` and the instruction as the
LeRobot task.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from cosmos3_robot.data.episode import Episode
from cosmos3_robot.sim.experts import expert_for
from cosmos3_robot.sim.scene import CONTROL_HZ
from cosmos3_robot.sim.tasks import TASKS


@dataclass
class RecordStats:
    """What a recording produced: kept and failed episodes per task, frames written."""

    kept: dict[str, int] = field(default_factory=dict)
    failed: dict[str, int] = field(default_factory=dict)
    frames: int = 0

    def success_rate(self, task: str) -> float:
        n = self.kept.get(task, 0) + self.failed.get(task, 0)
        return self.kept.get(task, 0) / n if n else float("nan")


def expert_episode(env, seed: int, noise: float = 0.0, hold_steps: int = 4) -> tuple[Episode, bool]:
    """Roll the scripted expert once in ``env`` (a built-in task; its cameras are recorded);
    returns the episode and whether it succeeded."""
    task, cameras = env.task, env.cameras
    obs, info = env.reset(seed=seed)
    expert = expert_for(task, noise=noise, seed=seed)
    expert.reset(env)
    frames: dict[str, list[np.ndarray]] = {c: [] for c in cameras}
    states, actions = [], []
    success_at = None
    for t in range(env.horizon + hold_steps):
        action = expert.act(obs)
        for c in cameras:
            frames[c].append(obs[c])
        states.append(obs["state"])
        actions.append(action)
        obs, _, terminated, truncated, info = env.step(action)
        if terminated and success_at is None:
            success_at = t
        if success_at is not None and t - success_at >= hold_steps:
            break
        if truncated and success_at is None:
            break
    T = len(states)
    ep = Episode(name=f"sim:{task}:seed{seed}", timestamps=np.arange(T) / CONTROL_HZ,
                 frames={c: np.stack(v) for c, v in frames.items()},
                 state={"state": np.stack(states).astype(np.float32)},
                 commands={"action": np.stack(actions).astype(np.float32)}, text=env.instruction)
    return ep.validate(), success_at is not None


def expert_episodes(tasks: Sequence[str], episodes_per_task: int, stats: RecordStats, seed: int = 0,
                    image_size: int = 64, cameras: Sequence[str] = ("front", "wrist"), **kwargs) -> Iterator[Episode]:
    """Successful expert episodes, task by task (one env per task, built once); failures
    counted in ``stats``. Episode ``i`` of the ``k``-th task uses seed ``seed + 1000 k + i``."""
    for task in tasks:
        if task not in TASKS:
            raise ValueError(f"task: unknown {task!r}; tasks: {sorted(TASKS)}")
    for k, task in enumerate(tasks):
        env = TASKS[task](image_size=image_size, cameras=tuple(cameras))
        try:
            for i in range(episodes_per_task):
                ep, ok = expert_episode(env, seed=seed + 1000 * k + i, **kwargs)
                if ok:
                    stats.kept[task] = stats.kept.get(task, 0) + 1
                    stats.frames += len(ep)
                    yield ep
                else:
                    stats.failed[task] = stats.failed.get(task, 0) + 1
        finally:
            env.close()


def record(tasks: Sequence[str], episodes_per_task: int, root: str | os.PathLike[str],
           repo_id: str = "local/cosmos3_sim", seed: int = 0, use_videos: bool = True, **kwargs) -> RecordStats:
    """Record ``episodes_per_task`` expert attempts of each task into a LeRobot dataset at ``root``."""
    from cosmos3_robot.data.convert import to_lerobot

    stats = RecordStats()
    to_lerobot(expert_episodes(tasks, episodes_per_task, stats, seed=seed, **kwargs), Path(root), repo_id,
               fps=int(CONTROL_HZ), use_videos=use_videos, robot_type="cosmos3_sim_arm")
    return stats
