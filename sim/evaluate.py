"""Closed-loop evaluation: episodes in parallel worker processes, outcomes with intervals.

Episode ``i`` of task ``k`` uses env seed ``seed + i`` (default ``seed`` 100000, away from
the recording seeds 0..), and the policy is reset with the same seed, so a rerun gives the
same results whatever the worker count. An episode that raises (simulator divergence, a
policy error, a bad action) is recorded as a failure with its error and the run goes on;
Ctrl-C stops the workers and the partial results are still reported.
"""

from __future__ import annotations

import math
import multiprocessing as mp
import os
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from cosmos3_robot.sim import BUILTIN_TASKS


@dataclass(frozen=True)
class EvalConfig:
    """Attributes:
        tasks: env names (:mod:`.envs`: built-in tasks, ``robosuite/<Task>``,
            ``<libero suite>/<task index>``).
        episodes: episodes per task.
        seed: env seed of episode 0 (episode ``i`` uses ``seed + i``).
        replan: actions executed from each chunk before the policy is asked again.
        blend: how overlapping chunks combine, as on a robot (``latest`` or ``ensemble``,
            :class:`~cosmos3_robot.runtime.scheduler.ChunkScheduler`; the episodes run through
            the scheduler the ROS 2 and DDS nodes run, synchronously: the simulator waits
            for the policy, so no command is skipped for latency).
        workers: worker processes (0 or 1: run in this process); each runs torch on its
            share of :func:`available_cores`.
        image_size: rendered image size (px); ``None``: each env's own
            (:data:`~cosmos3_robot.sim.envs.DEFAULT_IMAGE_SIZE`: built-in 64, LIBERO's protocol 256).
        videos: episodes per task saved as mp4 (the first ones).
        max_steps: per-episode step limit (default: each task's own).
        policy_kwargs: passed to :func:`cosmos3_robot.sim.policies.make_policy`.
        libero_assets: LIBERO's assets folder (LIBERO envs only).
    """

    tasks: tuple[str, ...] = BUILTIN_TASKS
    episodes: int = 20
    seed: int = 100_000
    replan: int = 8
    blend: str = "latest"
    workers: int = 2
    image_size: int | None = None
    videos: int = 2
    max_steps: int | None = None
    policy_kwargs: dict[str, Any] = field(default_factory=dict)
    libero_assets: str | None = None

    def __post_init__(self) -> None:
        from cosmos3_robot.sim import envs

        if not self.tasks:
            raise ValueError("tasks: at least one env name is required")
        for t in self.tasks:
            envs.check(t)
        if self.episodes < 1 or self.replan < 1 or self.workers < 0 or self.videos < 0:
            raise ValueError(f"EvalConfig: episodes >= 1, replan >= 1, workers >= 0, videos >= 0; got {self}")
        if self.blend not in ("latest", "ensemble"):  # inpainting needs a policy that takes a prefix
            raise ValueError(f"blend: expected 'latest' or 'ensemble', got {self.blend!r}")


@dataclass
class EpisodeResult:
    task: str
    index: int
    seed: int
    instruction: str = ""
    success: bool = False
    steps: int = 0
    seconds: float = 0.0
    policy_calls: int = 0
    policy_ms: float = 0.0  # mean per call
    error: str | None = None
    video: str | None = None
    settings: dict[str, Any] = field(default_factory=dict)  # what the env ran under (its ``settings(seed)``)


def available_cores() -> int:
    """The CPU cores this process may run on (its affinity mask: what a container, ``taskset``
    or a job scheduler gives it, which ``os.cpu_count`` ignores)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion (scipy's ``binomtest``)."""
    if n == 0:
        return (0.0, 1.0)
    from scipy.stats import binomtest

    ci = binomtest(successes, n).proportion_ci(confidence_level=confidence, method="wilson")
    return (float(ci.low), float(ci.high))


def _save_video(path: Path, frames: list[np.ndarray], fps: float) -> None:
    import imageio.v2 as imageio

    path.parent.mkdir(parents=True, exist_ok=True)
    up = [np.repeat(np.repeat(f, 2, 0), 2, 1) if f.shape[0] < 128 else f for f in frames]
    imageio.mimwrite(path, up, fps=fps, macro_block_size=1, quality=8)


def run_episode(env, policy, task: str, index: int, seed: int, replan: int,
                video_path: Path | None = None, on_step: Callable[[Any], None] | None = None,
                blend: str = "latest") -> EpisodeResult:
    """One closed-loop episode; exceptions become a failed result with the error text.
    Chunks run through the robot's :class:`ChunkScheduler` (``replan`` commands each, then a
    new chunk; ``blend`` for the overlap). ``on_step(env)`` is called after every env step
    (probes that read privileged state)."""
    from cosmos3_robot.runtime.scheduler import ChunkScheduler
    from cosmos3_robot.sim.scene import CONTROL_HZ

    res = EpisodeResult(task=task, index=index, seed=seed)
    frames: list[np.ndarray] = []
    t0 = time.perf_counter()
    call_s = 0.0
    try:
        obs, info = env.reset(seed=seed)
        res.instruction = info["instruction"]
        policy.reset(env, seed)
        hz = float((getattr(env.unwrapped, "metadata", None) or {}).get("render_fps", CONTROL_HZ))
        # the simulator waits for the policy: latency 0, so every planned command is used
        scheduler = ChunkScheduler(hz=hz, blend=blend, min_execute=replan, max_execute=replan)  # type: ignore[arg-type]
        while True:
            if video_path is not None:
                frames.append(np.concatenate([obs[c] for c in env.unwrapped.cameras], 1))
            if scheduler.should_request(res.steps):
                tc = time.perf_counter()
                chunk = np.asarray(policy.act(obs, res.instruction))
                call_s += time.perf_counter() - tc
                res.policy_calls += 1
                if chunk.ndim != 2 or len(chunk) == 0:
                    raise ValueError(f"policy returned an action chunk of shape {chunk.shape}; expected (n, 8)")
                scheduler.requested(res.steps)
                scheduler.add_chunk(res.steps, chunk)
            obs, _, terminated, truncated, info = env.step(scheduler.action(res.steps))
            res.steps += 1
            if on_step is not None:
                on_step(env)
            if terminated or truncated:
                res.success = bool(info["success"])
                break
    except Exception as exc:  # noqa: BLE001  (a crashing episode is a recorded failure, not a crashed run)
        res.success = False
        res.error = f"{type(exc).__name__}: {exc}"
        if os.environ.get("COSMOS3_EVAL_TRACEBACK"):
            res.error += "\n" + traceback.format_exc()
    res.seconds = time.perf_counter() - t0
    res.policy_ms = 1e3 * call_s / max(res.policy_calls, 1)
    if video_path is not None and frames:
        name = video_path.with_name(f"{video_path.stem}_{'success' if res.success else 'fail'}.mp4")
        _save_video(name, frames, CONTROL_HZ)
        res.video = str(name)
    return res


# ---- workers -----------------------------------------------------------------------
_WORKER: dict[str, Any] = {}


def _init_worker(policy_spec: str, cfg: EvalConfig, threads: int, policy: Any = None) -> None:
    """Per-process state; ``policy`` (already built, serial runs) is used as it is."""
    import torch

    from cosmos3_robot.sim.policies import make_policy

    torch.set_num_threads(threads)
    _WORKER.clear()
    _WORKER.update(cfg=cfg, env=None, task=None, policy=policy, error=None)
    if policy is not None:
        return
    try:  # an exception here would make the pool respawn workers forever; report it per job instead
        _WORKER["policy"] = make_policy(policy_spec, **cfg.policy_kwargs)
    except Exception as exc:  # noqa: BLE001
        _WORKER["error"] = f"policy {policy_spec!r} could not be built: {type(exc).__name__}: {exc}"


def _run_job(job: tuple[str, int, str | None]) -> EpisodeResult:
    from cosmos3_robot.sim.envs import make_env

    task, index, video = job
    cfg: EvalConfig = _WORKER["cfg"]
    if _WORKER["error"]:
        return EpisodeResult(task=task, index=index, seed=cfg.seed + index, error=_WORKER["error"])
    # a policy that reads no camera runs on a built-in env that renders none, unless filmed
    blind = not video and "/" not in task and getattr(_WORKER["policy"], "cameras", None) == ()
    cameras = () if blind else None
    if _WORKER["task"] != (task, cameras):  # one env (and one renderer) per worker at a time
        if _WORKER["env"] is not None:
            _WORKER["env"].close()
            _WORKER["env"] = None
        try:
            _WORKER["env"] = make_env(task, cfg.image_size, cfg.max_steps, cfg.libero_assets, cameras=cameras)
        except Exception as exc:  # noqa: BLE001  (e.g. missing simulator assets: every episode says why)
            _WORKER["task"] = None
            return EpisodeResult(task=task, index=index, seed=cfg.seed + index,
                                 error=f"env {task!r} could not be built: {type(exc).__name__}: {exc}")
        _WORKER["task"] = (task, cameras)
    env = _WORKER["env"]
    res = run_episode(env, _WORKER["policy"], task, index, cfg.seed + index, cfg.replan, Path(video) if video else None,
                      blend=cfg.blend)
    settings = getattr(env, "settings", None)
    res.settings = settings(cfg.seed + index) if settings else {}
    return res


@dataclass
class EvalRun:
    """Results of one evaluation; ``interrupted`` when Ctrl-C cut it short."""

    policy: str
    config: EvalConfig
    results: list[EpisodeResult]
    interrupted: bool = False
    seconds: float = 0.0

    def summary(self) -> dict[str, Any]:
        def stats(rs: list[EpisodeResult]) -> dict[str, Any]:
            k, n = sum(r.success for r in rs), len(rs)
            lo, hi = wilson_interval(k, n)
            calls = [r.policy_ms for r in rs if r.policy_calls]
            return {"episodes": n, "successes": k, "success_rate": k / n if n else math.nan,
                    "ci95": [lo, hi], "mean_steps": float(np.mean([r.steps for r in rs])) if rs else math.nan,
                    "errors": sum(r.error is not None for r in rs),
                    "policy_ms": float(np.mean(calls)) if calls else math.nan}

        by_task = {t: [r for r in self.results if r.task == t] for t in self.config.tasks}
        per_task = {t: {**stats(rs), "settings": merged_settings(rs)} for t, rs in by_task.items()}
        return {"policy": self.policy, "interrupted": self.interrupted, "seconds": self.seconds,
                "config": asdict(self.config), "tasks": per_task, "overall": stats(self.results),
                "episodes": [asdict(r) for r in self.results]}


def merged_settings(results: list[EpisodeResult]) -> dict[str, Any]:
    """The episodes' env settings: a key the episodes share keeps its value, one that varies
    (a LIBERO ``init_state``) lists its values in order of first use."""
    out: dict[str, Any] = {}
    for key in dict.fromkeys(k for r in results for k in r.settings):
        values = [r.settings.get(key) for r in results]
        distinct = list({repr(v): v for v in values}.values())
        out[key] = distinct[0] if len(distinct) == 1 else distinct
    return out


WORKERS_DIED = (
    "evaluation worker processes died while starting. Workers are fresh interpreters (spawn) that "
    "import the calling script again: a script that calls evaluate() with workers >= 2 must do so "
    "under `if __name__ == \"__main__\":`, or run with workers=1"
)


def _run_in_workers(jobs: list[tuple[str, int, str | None]], workers: int, policy_spec: str, cfg: "EvalConfig",
                    threads: int, progress: Callable[[EpisodeResult], None] | None,
                    results: list[EpisodeResult]) -> None:
    """The episodes in ``workers`` spawned processes, appended to ``results`` as they finish
    (so that Ctrl-C leaves the caller the episodes done so far).

    A ``ProcessPoolExecutor`` rather than ``multiprocessing.Pool``: a worker that dies (e.g.
    while re-importing an unguarded calling script) breaks the executor with an error here,
    where a ``Pool`` would start replacement workers that die the same way, forever."""
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from concurrent.futures.process import BrokenProcessPool

    ctx = mp.get_context("spawn")  # fresh interpreters: no forked GL or torch thread state
    ex = ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker, initargs=(policy_spec, cfg, threads))
    done_before = len(results)
    try:
        # submitted in task order, so each worker builds few envs
        for future in as_completed([ex.submit(_run_job, job) for job in jobs]):
            results.append(future.result())
            if progress:
                progress(results[-1])
    except BrokenProcessPool as exc:
        if len(results) == done_before:
            raise RuntimeError(WORKERS_DIED) from exc
        raise RuntimeError(f"an evaluation worker process died after {len(results) - done_before} episodes "
                           "(a crash in the simulator or the policy); rerun with workers=1 to see it") from exc
    except KeyboardInterrupt:
        for proc in list(getattr(ex, "_processes", {}).values()):  # no public terminate
            proc.terminate()
        raise
    finally:
        ex.shutdown(wait=False, cancel_futures=True)


def evaluate(policy_spec: str, cfg: EvalConfig, out_dir: str | os.PathLike[str] | None = None,
             progress: Callable[[EpisodeResult], None] | None = None) -> EvalRun:
    """Run ``cfg.episodes`` episodes of each task with the policy ``policy_spec``.

    The policy is built here first, so a bad spec fails at once with its own error; a
    serial run uses that one, worker processes build their own."""
    from cosmos3_robot.sim.policies import make_policy

    policy = make_policy(policy_spec, **cfg.policy_kwargs)
    out = Path(out_dir) if out_dir is not None else None
    jobs = []
    for task in cfg.tasks:
        for i in range(cfg.episodes):
            video = str(out / "videos" / f"{task}_{i:03d}") if out is not None and i < cfg.videos else None
            jobs.append((task, i, video))
    results: list[EpisodeResult] = []
    interrupted = False
    t0 = time.perf_counter()
    workers = min(cfg.workers, len(jobs))
    threads = max(1, available_cores() // max(workers, 1))  # every given core busy, none shared
    try:
        if workers <= 1:
            _init_worker(policy_spec, cfg, threads, policy)
            for job in jobs:
                results.append(_run_job(job))
                if progress:
                    progress(results[-1])
        else:
            del policy  # workers build their own
            _run_in_workers(jobs, workers, policy_spec, cfg, threads, progress, results)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        if _WORKER.get("env") is not None:
            _WORKER["env"].close()
            _WORKER["env"] = None
    results.sort(key=lambda r: (cfg.tasks.index(r.task), r.index))
    return EvalRun(policy_spec, cfg, results, interrupted, time.perf_counter() - t0)
