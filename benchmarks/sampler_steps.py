"""Fewer denoising steps: action quality against steps and sampler for a trained policy.

For each sampler (Euler; Heun, second order, ``2 * steps - 1`` velocity evaluations) and
number of steps, on held-out expert windows of the built-in tasks (the seeds of
``policy_quality.py``'s world-model split, never trained on):

- action error of the ``policy_actions`` chunk against the expert's chunk (normalised MAE,
  the model's error plus the sampler's);
- the sampler's own error: the same request (same noise) against a fine reference
  integration (Euler, ``--reference-steps``), i.e. what fewer steps cost with the model fixed;
- forward dynamics: PSNR of the imagined future frames against the real ones (the
  ``forward_dynamics`` mode with the same sampler and steps; copying the last frame as the
  baseline). One Euler step from noise lands on the model's estimate of the mean future,
  which PSNR favours over a sharp sample;
- milliseconds per chunk (batch 1, torch, instruction prefix and modulation table cached as
  the policy runtime does), median over the windows, and the ratio to 4 Euler steps;
- with ``--episodes > 0``: closed-loop success on the evaluation seeds (Wilson 95%).

The run to study is one trained by ``policy_quality.py`` (or any run on the built-in tasks):

    .venv/bin/python benchmarks/policy_quality.py --tasks reach push --demos 30 --minutes 5 --episodes 10
    .venv/bin/python benchmarks/sampler_steps.py --run runs/quality/cosmos3 --episodes 10
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from cosmos3_robot.benchmarks.policy_quality import HELD_OUT_SEED, frame_psnr, held_out_windows

from cosmos3_robot.processor import frames_to_uint8
from cosmos3_robot.model.flow import SAMPLERS


@dataclass(frozen=True)
class Setting:
    sampler: str
    steps: int

    @property
    def evaluations(self) -> int:
        """Velocity evaluations per chunk (Heun skips the correction of the last step)."""
        return self.steps if self.sampler == "euler" else 2 * self.steps - 1

    @property
    def label(self) -> str:
        return f"{self.sampler} {self.steps}"


def settings(steps: list[int], samplers: list[str]) -> list[Setting]:
    out = []
    for sampler in samplers:
        if sampler not in SAMPLERS:
            raise ValueError(f"--samplers: expected some of {SAMPLERS}, got {sampler!r}")
        for n in steps:
            if n < 1:
                raise ValueError(f"--steps: expected counts >= 1, got {n}")
            if sampler == "heun" and n == 1:
                continue  # one Heun step is one Euler step
            out.append(Setting(sampler, n))
    return out


def action_errors(run: Path, tasks: list[str], episodes: int, grid: list[Setting], reference_steps: int,
                  windows: int) -> dict[str, dict[str, float]]:
    """Per setting: MAE vs the expert, MAE vs the reference integration, ms per chunk."""
    from cosmos3_robot.data.windows import collate
    from cosmos3_robot.runtime import Cosmos3Policy, InferenceConfig

    pol = Cosmos3Policy.from_checkpoint(run, InferenceConfig())
    model = pol.model
    test, spec = held_out_windows(run, tasks, episodes, HELD_OUT_SEED, pol.normalizer, pol.state_normalizer)
    n = len(test) if windows <= 0 else min(windows, len(test))
    cache: dict = {}
    res = {s.label: {"expert": [], "reference": [], "ms": [], "psnr": []} for s in grid}
    copy_last = []
    k = spec.n_future
    with torch.inference_mode():
        for i in range(n):
            b = collate([test[i]])
            D = int(b.action_mask[0].sum())
            truth = b.actions[:, :, :D]
            req = dict(steps=reference_steps, seed=i, n_actions=spec.chunk, prefix_cache=cache)
            ref = model.generate("policy_actions", b, **req)["actions"]
            real = frames_to_uint8(b.video[0, 1:])
            copy_last += [frame_psnr(r, frames_to_uint8(b.video[0, :1])[0]) for r in real]
            for s in grid:
                setting = {**req, "steps": s.steps, "sampler": s.sampler}
                model.generate("policy_actions", b, **setting)  # warm
                t0 = time.perf_counter()
                a = model.generate("policy_actions", b, **setting)["actions"]
                res[s.label]["ms"].append(1000 * (time.perf_counter() - t0))
                res[s.label]["expert"].append(float((a - truth).abs().mean()))
                res[s.label]["reference"].append(float((a - ref).abs().mean()))
                fut = model.generate("forward_dynamics", b, **{**setting, "n_future_frames": k})["video"]
                res[s.label]["psnr"] += [frame_psnr(r, f) for r, f in zip(real, frames_to_uint8(fut[0]))]
    return {**{lab: {"expert_mae": float(np.mean(v["expert"])), "reference_mae": float(np.mean(v["reference"])),
                     "fd_psnr_db": float(np.mean(v["psnr"])), "ms": statistics.median(v["ms"]), "windows": n}
               for lab, v in res.items()},
            "copy_last": {"fd_psnr_db": float(np.mean(copy_last)), "windows": n}}


def closed_loop(run: Path, tasks: list[str], episodes: int, s: Setting, out: Path, workers: int) -> dict:
    from cosmos3_robot.sim.evaluate import EvalConfig, evaluate

    cfg = EvalConfig(tasks=tuple(tasks), episodes=episodes, workers=workers, replan=8, videos=0, image_size=64,
                     policy_kwargs={"steps": s.steps, "sampler": s.sampler})
    return evaluate(str(run), cfg, out / s.label.replace(" ", "_")).summary()


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", default="runs/quality/cosmos3", help="a trained run on the built-in tasks")
    ap.add_argument("--tasks", nargs="+", default=["reach", "push"])
    ap.add_argument("--steps", nargs="+", type=int, default=[1, 2, 4, 8])
    ap.add_argument("--samplers", nargs="+", default=list(SAMPLERS))
    ap.add_argument("--reference-steps", type=int, default=32)
    ap.add_argument("--wm-episodes", type=int, default=4, help="held-out expert episodes per task")
    ap.add_argument("--windows", type=int, default=0, help="at most this many held-out windows (0: all)")
    ap.add_argument("--episodes", type=int, default=0, help="closed-loop episodes per task and setting (0: none)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", default=None, help="where to write results.json (default: <run>/sampler_steps)")
    args = ap.parse_args(argv)
    run = Path(args.run)
    if not (run.exists()):
        ap.error(f"--run {run}: no such run; train one first (benchmarks/policy_quality.py, see --help)")
    grid = settings(args.steps, args.samplers)
    torch.manual_seed(0)
    errors = action_errors(run, args.tasks, args.wm_episodes, grid, args.reference_steps, args.windows)
    out = Path(args.out) if args.out else run / "sampler_steps"
    success = {}
    if args.episodes > 0:
        for s in grid:
            success[s.label] = closed_loop(run, args.tasks, args.episodes, s, out, args.workers)
    results = {"run": str(run), "reference_steps": args.reference_steps, "errors": errors, "success": success}
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=1))
    print_table(results, grid)
    return results


def print_table(results: dict, grid: list[Setting]) -> None:
    from rich.console import Console
    from rich.table import Table

    errors, success = results["errors"], results["success"]
    base = errors.get("euler 4", {}).get("ms")
    n = errors["copy_last"]["windows"]
    t = Table(title=f"Sampler and steps on {n} held-out windows ({results['run']}); FD PSNR of copying the last "
                    f"frame: {errors['copy_last']['fd_psnr_db']:.2f} dB")
    cols = ["sampler", "steps", "velocity evals", "action MAE vs expert",
            f"action MAE vs {results['reference_steps']}-step ref", "FD PSNR dB", "ms / action chunk", "vs euler 4"]
    if success:
        cols.append("closed-loop success")
    for col in cols:
        t.add_column(col, justify="left" if col == "sampler" else "right")
    for s in grid:
        e = errors[s.label]
        row = [s.sampler, str(s.steps), str(s.evaluations), f"{e['expert_mae']:.3f}", f"{e['reference_mae']:.4f}",
               f"{e['fd_psnr_db']:.2f}", f"{e['ms']:.1f}", f"{e['ms'] / base:.2f}x" if base else "-"]
        if success:
            o = success[s.label]["overall"]
            lo, hi = o["ci95"]
            row.append(f"{100 * o['success_rate']:.0f}% [{100 * lo:.0f}-{100 * hi:.0f}]")
        t.add_row(*row)
    Console(width=max(Console().width, 120)).print(t)


if __name__ == "__main__":
    main()
