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
from typing import Any, Callable, Iterator, Sequence

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


def _check_tasks(tasks: Sequence[str]) -> None:
    for task in tasks:
        if task not in TASKS:
            raise ValueError(f"task: unknown {task!r}; tasks: {sorted(TASKS)}")


def _attempts(tasks: Sequence[str], episodes_per_task: int, seed: int) -> list[tuple[str, int]]:
    """(task, seed) of every attempt, in recording order: attempt ``i`` of the ``k``-th task
    uses seed ``seed + 1000 k + i``."""
    return [(task, seed + 1000 * k + i) for k, task in enumerate(tasks) for i in range(episodes_per_task)]


_WORKER_ENV: dict[str, Any] = {}


def _attempt(job: tuple[str, int, int, tuple[str, ...], dict[str, Any]]) -> tuple[str, Episode, bool]:
    """One expert attempt in a worker process (its env kept per task, one at a time)."""
    task, seed, image_size, cameras, kwargs = job
    if _WORKER_ENV.get("task") != task:
        if _WORKER_ENV.get("env") is not None:
            _WORKER_ENV["env"].close()
        _WORKER_ENV.update(task=task, env=TASKS[task](image_size=image_size, cameras=cameras))
    ep, ok = expert_episode(_WORKER_ENV["env"], seed=seed, **kwargs)
    return task, ep, ok


def _parallel_attempts(jobs: list[tuple[str, int, int, tuple[str, ...], dict[str, Any]]],
                       workers: int) -> Iterator[tuple[str, Episode, bool]]:
    """The attempts simulated in ``workers`` spawned processes, yielded in job order (so the
    dataset does not depend on ``workers``), at most ``4 * workers`` ahead of the consumer."""
    import multiprocessing as mp
    from collections import deque
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    # spawn: fresh interpreters, no forked GL context (so the caller's script must be main-guarded)
    with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as ex:
        pending: deque = deque()
        try:
            for job in jobs:
                pending.append(ex.submit(_attempt, job))
                if len(pending) >= 4 * workers:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        except BrokenProcessPool as exc:
            raise RuntimeError(
                "a recording worker process died. Workers are fresh interpreters (spawn) that import the "
                "calling script again: call record() under `if __name__ == \"__main__\":`, or use workers=1 "
                "(which also shows a simulator crash directly)") from exc
        finally:
            for f in pending:
                f.cancel()


def _serial_attempts(attempts: list[tuple[str, int]], image_size: int, cameras: tuple[str, ...],
                     kwargs: dict[str, Any]) -> Iterator[tuple[str, Episode, bool]]:
    env, current = None, None
    try:
        for task, s in attempts:
            if task != current:  # one env per task, built once
                if env is not None:
                    env.close()
                env, current = TASKS[task](image_size=image_size, cameras=cameras), task
            ep, ok = expert_episode(env, seed=s, **kwargs)
            yield task, ep, ok
    finally:
        if env is not None:
            env.close()


def expert_episodes(tasks: Sequence[str], episodes_per_task: int, stats: RecordStats, seed: int = 0,
                    image_size: int = 64, cameras: Sequence[str] = ("front", "wrist"), workers: int = 1,
                    progress: Callable[[str, bool], None] | None = None, **kwargs) -> Iterator[Episode]:
    """Successful expert episodes, task by task, in seed order; failures counted in ``stats``.
    Attempt ``i`` of the ``k``-th task uses seed ``seed + 1000 k + i``. With ``workers >= 2``
    the simulation and rendering run in that many processes (the same episodes, in the same
    order), while the caller consumes them (e.g. writes the dataset). ``progress(task, kept)``
    is called after every attempt."""
    _check_tasks(tasks)
    attempts = _attempts(tasks, episodes_per_task, seed)
    if workers >= 2:
        jobs = [(task, s, image_size, tuple(cameras), kwargs) for task, s in attempts]
        results = _parallel_attempts(jobs, workers)
    else:
        results = _serial_attempts(attempts, image_size, tuple(cameras), kwargs)
    for task, ep, ok in results:
        if progress is not None:
            progress(task, ok)
        if ok:
            stats.kept[task] = stats.kept.get(task, 0) + 1
            stats.frames += len(ep)
            yield ep
        else:
            stats.failed[task] = stats.failed.get(task, 0) + 1


def record(tasks: Sequence[str], episodes_per_task: int, root: str | os.PathLike[str],
           repo_id: str = "local/cosmos3_sim", seed: int = 0, use_videos: bool = True, workers: int = 1,
           **kwargs) -> RecordStats:
    """Record ``episodes_per_task`` expert attempts of each task into a LeRobot dataset at ``root``;
    ``workers >= 2`` simulate in that many processes while this one writes (the same dataset)."""
    from cosmos3_robot.data.convert import to_lerobot

    stats = RecordStats()
    episodes = expert_episodes(tasks, episodes_per_task, stats, seed=seed, workers=workers, **kwargs)
    to_lerobot(episodes, Path(root), repo_id, fps=int(CONTROL_HZ), use_videos=use_videos, robot_type="cosmos3_sim_arm")
    return stats
