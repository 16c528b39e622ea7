"""The main job: record demonstrations, train, evaluate closed loop, write a report. An
application over the library, like the CLI: it drives simulation, training and evaluation;
none of them imports it.

``cosmos3-robot demo`` runs, in one output folder:

1. ``data/``: scripted-expert demonstrations of the built-in tasks as a LeRobot dataset
   (lossless image features);
2. ``run/``: the model trained from ``recipes/sim/builtin_tasks.yaml`` (preset ``small``)
   on a wall-clock budget (``--minutes``; the cosine schedule is fitted to it);
3. ``eval/``: closed-loop evaluation of the trained policy, and of the scripted and random
   policies as references, on held-out seeds;
4. ``report/``: ``report.md`` with the success table (95% Wilson intervals), the training
   curve, rollout videos, and a forward-dynamics "imagination vs real" video with PSNR.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from cosmos3_robot.recipes import recipe_path
from cosmos3_robot.sim import BUILTIN_TASKS
from cosmos3_robot.sim.report import psnr
from cosmos3_robot.train.state import read_metrics

REPO_RECIPE = recipe_path("sim/builtin_tasks.yaml")


@dataclass(frozen=True)
class DemoConfig:
    """Attributes:
        out: output folder.
        tasks: built-in tasks to record, train on and evaluate.
        demos_per_task: expert episodes recorded per task.
        minutes: training wall-clock budget.
        eval_episodes: closed-loop episodes per task.
        preset: model preset.
        batch_size: training batch size.
        workers: recording and evaluation worker processes.
        replan: actions executed per chunk.
        steps: denoising steps at inference; 0 acts with the action prior alone (the
            observation stem and regression head, without the towers), which is what the
            CPU budget trains best (docs/experiments/2026-12-01-visuomotor-prior.md).
        temperature: scale of the sampler's starting noise; 0 takes the prior's chunk
            itself at ``steps 0`` (at 1 a unit-noise sample around it: 2/50 reach against
            17/20 at 0 on one trained model).
        noise: expert position noise (m) while recording.
        recipe: the training recipe (default: the repository's ``recipes/sim/builtin_tasks.yaml``).
    """

    out: str = "runs/demo"
    tasks: tuple[str, ...] = BUILTIN_TASKS
    demos_per_task: int = 400
    minutes: float = 40.0
    eval_episodes: int = 50
    preset: str = "small"
    batch_size: int = 16
    workers: int = 2
    replan: int = 8
    steps: int = 0
    temperature: float = 0.0
    noise: float = 0.004
    recipe: str | None = None

    @classmethod
    def quick(cls, out: str = "runs/demo_quick") -> "DemoConfig":
        """A smoke run of a few minutes: a handful of demos, the tiny preset, one minute of training."""
        return cls(out=out, demos_per_task=4, minutes=1.0, eval_episodes=3, preset="tiny", batch_size=8)


def _log(msg: str) -> None:
    print(f"[demo] {msg}", flush=True)


@contextlib.contextmanager
def _progress(label: str, total: int) -> Iterator[Callable[[], None]]:
    """A progress bar on a terminal (nothing in a log file); yields ``step()``."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    console = Console()
    if not console.is_terminal:
        yield lambda: None
        return
    with Progress(TextColumn(f"[bold]{label}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=console, transient=True) as bar:
        task = bar.add_task(label, total=total)
        yield lambda: bar.advance(task)


def plot_training(run_dir: Path, path: Path) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    recs = read_metrics(run_dir)
    if not recs:
        return None
    fig, ax = plt.subplots(figsize=(6, 3.2))
    ax.plot([r["step"] for r in recs], [r["loss"] for r in recs], label="all modes", color="black", lw=1.5)
    for key in sorted({k for r in recs for k in r if k.startswith("loss/")}):
        pts = [(r["step"], r[key]) for r in recs if key in r]
        ax.plot(*zip(*pts), label=key[5:], lw=0.8, alpha=0.8)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("flow-matching loss")
    ax.set_yscale("log")
    ax.legend(fontsize=7)
    ax.set_title("training loss")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def imagination(run_dir: Path, out_dir: Path, tasks: Sequence[str] = ("pick_place",), video_task: str = "pick_place",
                episodes: int = 3, seed: int = 200_000, steps: int = 0, noise: float = 0.004) -> dict[str, Any]:
    """Forward dynamics against the real rollout on held-out expert episodes, recorded as
    the demonstrations were (expert ``noise``, the recorder's hold after success) from seeds
    no recording uses: ``episodes`` per task, task ``k`` from ``seed + 1000 k``.

    Every ``n_future`` frames the model gets the real current frame and the real next
    actions and imagines the next ``n_future`` frames (``steps`` 0: the video prior's frames,
    as the demo's policy acts with the action prior). The video (real | imagined side by
    side) is the first episode of ``video_task``. Returns PSNR (dB, 99 for an identical frame)
    and SSIM of the imagined frames and of copying the last real frame, over all episodes.
    """
    import imageio.v2 as imageio
    import torch
    from skimage.metrics import structural_similarity

    from cosmos3_robot.data.windows import WindowDataset, WindowSpec, collate
    from cosmos3_robot.processor import frames_to_uint8
    from cosmos3_robot.runtime import Cosmos3Policy, InferenceConfig
    from cosmos3_robot.sim.record import expert_episode
    from cosmos3_robot.sim.tasks import TASKS

    pol = Cosmos3Policy.from_checkpoint(run_dir, InferenceConfig(steps=steps))
    w = pol.window
    spec = WindowSpec(embodiment=w["embodiment"], camera=w["camera"], views=tuple(w.get("views") or ()),
                      fps=w.get("fps"), n_context=1,
                      n_future=int(w.get("n_future") or 4), chunk=int(w["chunk"]), image_size=int(w["image_size"]),
                      stride=int(w.get("n_future") or 4), pad_end=bool(w.get("pad_end")))
    tasks = list(dict.fromkeys([video_task, *tasks]))
    scores: dict[str, list[float]] = {k: [] for k in ("psnr_model", "psnr_last", "ssim_model", "ssim_last")}
    shown: tuple[np.ndarray, np.ndarray, str] | None = None
    for k, task in enumerate(tasks):
        env = TASKS[task](image_size=int(w["image_size"]), cameras=pol.cameras)
        try:
            eps = [expert_episode(env, seed + 1000 * k + i, noise=noise)[0] for i in range(episodes)]
        finally:
            env.close()
        for e, ep in enumerate(eps):
            ds = WindowDataset([ep], spec, normalizer=pol.normalizer,
                               state_normalizer=pol.state_normalizer).drop_padded_future()
            real, imag = [], []
            with torch.inference_mode():
                for i in range(len(ds)):
                    batch = collate([ds[i]])
                    out = pol.model.generate("forward_dynamics", batch, steps=steps, seed=i,
                                             n_future_frames=spec.n_future)["video"][0]
                    r = frames_to_uint8(batch.video[0, 1:])
                    last = frames_to_uint8(batch.video[0, :1])[0]
                    m = frames_to_uint8(out)
                    real.append(r)
                    imag.append(m)
                    for a, b in zip(r, m):
                        scores["psnr_model"].append(psnr(a, b, identical=99.0))
                        scores["psnr_last"].append(psnr(a, last, identical=99.0))
                        scores["ssim_model"].append(structural_similarity(a, b, channel_axis=-1, data_range=255))
                        scores["ssim_last"].append(structural_similarity(a, last, channel_axis=-1, data_range=255))
            if shown is None and task == video_task:
                shown = (np.concatenate(real), np.concatenate(imag), ep.text)
    assert shown is not None
    real_a, imag_a, text = shown
    out_dir.mkdir(parents=True, exist_ok=True)
    frames = [np.concatenate([r, np.full((r.shape[0], 2, 3), 255, np.uint8), m], 1) for r, m in zip(real_a, imag_a)]
    frames = [np.repeat(np.repeat(f, 3, 0), 3, 1) for f in frames]
    imageio.mimwrite(out_dir / "imagination.mp4", frames, fps=5, macro_block_size=1, quality=8)
    pick = np.linspace(0, len(frames) - 1, min(6, len(frames))).astype(int)
    strip = np.concatenate([frames[i] for i in pick], 1)
    imageio.imwrite(out_dir / "imagination.png", strip)
    return {"task": video_task, "instruction": text, "tasks": tasks, "episodes_per_task": episodes,
            "frames": len(scores["psnr_model"]),
            "psnr_model_db": float(np.mean(scores["psnr_model"])),
            "psnr_copy_last_db": float(np.mean(scores["psnr_last"])),
            "ssim_model": float(np.mean(scores["ssim_model"])), "ssim_copy_last": float(np.mean(scores["ssim_last"]))}


def run_demo(cfg: DemoConfig) -> dict[str, Any]:
    """Run the whole loop; returns the report summary (also in ``report/summary.json``)."""
    from cosmos3_robot.sim.evaluate import EvalConfig, evaluate
    from cosmos3_robot.sim.record import record
    from cosmos3_robot.sim.report import markdown_table, plot_success, write_report
    from cosmos3_robot.train.recipe import run as train_run

    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    report = out / "report"
    report.mkdir(exist_ok=True)
    times: dict[str, float] = {}
    recipe = Path(cfg.recipe) if cfg.recipe else REPO_RECIPE
    if not recipe.exists():
        raise FileNotFoundError(f"demo recipe {recipe} not found; pass --recipe (recipes/sim/builtin_tasks.yaml "
                                f"in the repository)")

    # 1. demonstrations
    data = out / "data"
    t0 = time.perf_counter()
    if (data / "meta" / "info.json").exists():
        _log(f"demonstrations already at {data}; reusing them")
        rec_stats = json.loads((out / "record.json").read_text()) if (out / "record.json").exists() else {}
    else:
        shutil.rmtree(data, ignore_errors=True)
        _log(f"recording {cfg.demos_per_task} expert episodes x {len(cfg.tasks)} tasks -> {data}")
        # lossless frames: AV1 at 64 px (4:2:0, CRF 30) smears the colour of 3-pixel cubes,
        # the very cue the instruction names, and the policy then meets crisp renders
        with _progress("record", len(cfg.tasks) * cfg.demos_per_task) as step:
            st = record(cfg.tasks, cfg.demos_per_task, data, noise=cfg.noise, image_size=64, use_videos=False,
                        workers=cfg.workers, progress=lambda task, kept: step())
        rec_stats = {"kept": st.kept, "failed": st.failed, "frames": st.frames}
        (out / "record.json").write_text(json.dumps(rec_stats, indent=1))
    times["record_s"] = time.perf_counter() - t0

    # 2. training on a time budget
    t0 = time.perf_counter()
    run_dir = out / "run"
    from cosmos3_robot.model import preset

    overrides = [f"data.0.root={data.resolve()}", f"model.preset={cfg.preset}",
                 f"window.image_size={preset(cfg.preset).image_size}",  # the preset's own frame size
                 f"train.max_minutes={cfg.minutes}", f"train.batch_size={cfg.batch_size}"]
    _log(f"training preset {cfg.preset!r} for {cfg.minutes:g} min -> {run_dir}")
    shutil.rmtree(run_dir, ignore_errors=True)
    train_run(recipe, run_dir, overrides=overrides)
    times["train_s"] = time.perf_counter() - t0
    curve = plot_training(run_dir, report / "train_curve.png")

    # 3. closed-loop evaluation: the model, then the references
    t0 = time.perf_counter()
    summaries: dict[str, dict[str, Any]] = {}
    for name, spec, videos in (("cosmos3", str(run_dir), 2), ("scripted", "scripted", 0), ("random", "random", 0)):
        ecfg = EvalConfig(tasks=tuple(cfg.tasks), episodes=cfg.eval_episodes, workers=cfg.workers,
                          replan=cfg.replan, videos=videos, image_size=64, policy_kwargs={"steps": cfg.steps, "temperature": cfg.temperature})
        _log(f"evaluating {name}: {cfg.eval_episodes} episodes x {len(cfg.tasks)} tasks")
        with _progress(f"eval {name}", len(cfg.tasks) * cfg.eval_episodes) as step:
            res = evaluate(spec, ecfg, out / "eval" / name, progress=lambda r: step())
        summaries[name] = write_report(res, out / "eval" / name, title=f"{name} policy")
        if res.interrupted:
            break
    times["eval_s"] = time.perf_counter() - t0
    plot_success(summaries, report / "success.png")
    videos = sorted((out / "eval" / "cosmos3" / "videos").glob("*.mp4"))
    for v in videos:
        shutil.copy(v, report / v.name)

    # 4. imagination vs real
    t0 = time.perf_counter()
    task = "pick_place" if "pick_place" in cfg.tasks else cfg.tasks[0]
    imag = imagination(run_dir, report, tasks=cfg.tasks, video_task=task, steps=cfg.steps, noise=cfg.noise)
    times["imagination_s"] = time.perf_counter() - t0

    metrics = read_metrics(run_dir)
    prior = read_metrics(run_dir, "prior")
    summary = {"config": cfg.__dict__, "record": rec_stats, "times": times,
               "train": {"steps": metrics[-1]["step"] if metrics else 0,
                         "prior_steps": prior[-1]["prior_step"] if prior else 0,
                         "first_loss": metrics[0]["loss"] if metrics else None,
                         "last_loss": metrics[-1]["loss"] if metrics else None},
               "eval": {k: {"tasks": v["tasks"], "overall": v["overall"]} for k, v in summaries.items()},
               "imagination": imag}
    (report / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    lines = [
        "# cosmos3-robot demo report", "",
        f"Model preset `{cfg.preset}`, trained {times['train_s'] / 60:.1f} min: {summary['train']['prior_steps']} "
        f"steps of the priors alone (the policy at `steps 0` and the video prior), then "
        f"{summary['train']['steps']} world-model steps, "
        f"on {sum(rec_stats.get('kept', {}).values())} expert demonstrations "
        f"(world-model loss {summary['train']['first_loss']:.3f} -> {summary['train']['last_loss']:.3f}).", "",
    ]
    for name, s in summaries.items():
        lines += [f"## Closed-loop success: {name}", "", markdown_table(s), ""]
    lines += ["![success rates](success.png)", "", "## Training", "",
              "![training loss](train_curve.png)" if curve else "(no metrics)", "",
              "## Forward-dynamics imagination vs the real rollout", "",
              f"Held-out {imag['task']} episode ({imag['instruction']!r}); real (left) | imagined (right), "
              f"each clip imagined from the real current frame and actions. Over {imag['episodes_per_task']} "
              f"held-out episodes of each task ({imag['frames']} imagined frames): PSNR "
              f"{imag['psnr_model_db']:.2f} dB against {imag['psnr_copy_last_db']:.2f} dB for copying the last "
              f"frame ({imag['psnr_model_db'] - imag['psnr_copy_last_db']:+.2f} dB); SSIM "
              f"{imag['ssim_model']:.3f} against {imag['ssim_copy_last']:.3f}.", "",
              "![imagination](imagination.png)", "", "[imagination.mp4](imagination.mp4)", "",
              "## Rollout videos", ""] + [f"- [{v.name}]({v.name})" for v in videos] + [
              "", f"Timings: {', '.join(f'{k} {v:.0f}' for k, v in times.items())}", ""]
    (report / "report.md").write_text("\n".join(lines))
    _log(f"report: {report / 'report.md'}")
    return summary
