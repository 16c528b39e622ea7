"""LIBERO post-training side by side: our recipe against LeRobot's ACT, trained on the same
HDF5 files for the same wall-clock budget and evaluated under the same protocol.

1. Data: a suite's ``<task>_demo.hdf5`` files (LIBERO's release, or
   ``cosmos3-robot sim record-libero``). Ours reads them as they are through
   ``recipes/libero/<suite>_hdf5.yaml`` (both cameras). ACT reads a LeRobot dataset written
   here from the same episodes (:func:`act_dataset`): both cameras at the recipe's image size,
   ``observation.state`` = eef position (3), axis-angle (3), gripper qpos (2) (LeRobot's LIBERO
   layout, and what :class:`~cosmos3_robot.sim.libero.LiberoEnv` gives a policy), ``action``
   = the stored 7D OSC_POSE deltas.
2. Training: ``--minutes`` each on this machine, ours by the recipe's ``train.max_minutes``,
   ACT by :func:`cosmos3_robot.benchmarks.policy_quality.train_lerobot` (LeRobot's config, processors and
   optimiser preset, no pretrained backbone), chunk 16, 8 actions per chunk for both.
3. Closed loop: :func:`cosmos3_robot.sim.evaluate.evaluate` (what ``cosmos3-robot eval``
   runs) on ``<suite>/<k>`` for every task: episode ``i`` starts from init state ``i``, LIBERO's
   protocol (256 px cameras, 10 wait steps, the suite's max steps), one worker per core;
   per-task success with Wilson 95% intervals and the settings that ran.

Each stage keeps what an earlier run left in ``--out`` (the dataset, a trained policy, an
evaluation's ``results.json``), so a stopped run goes on where it stopped.

    cosmos3-robot bench libero --data runs/libero_object_demos --minutes 20 --episodes 10
"""

from __future__ import annotations

import argparse
import glob
import json
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from cosmos3_robot.recipes import recipe_path

REPO_ID = "local/libero_demos"
CAMERAS = ("agentview", "wrist")
CHUNK, REPLAN = 16, 8


def log(msg: str) -> None:
    print(f"[libero-bench] {msg}", flush=True)


def demo_files(data: Path) -> list[str]:
    files = sorted(glob.glob(str(data / "*_demo.hdf5")))
    if not files:
        raise SystemExit(f"--data {data}: no *_demo.hdf5 files (record them with `cosmos3-robot sim record-libero`)")
    return files


def act_episodes(files: list[str], image_size: int) -> Iterator[Any]:
    """The HDF5 demos as LeRobot's LIBERO layout: frames resized to ``image_size`` (area
    averaging, as our processor does), state ``(T, 8)`` float32, actions ``(T, 7)``."""
    import torch

    from cosmos3_robot.data.episode import Episode
    from cosmos3_robot.data.sources.hdf5 import read_hdf5
    from cosmos3_robot.processor import resize_pixels

    def resize(frames: np.ndarray) -> np.ndarray:
        x = resize_pixels(torch.from_numpy(frames).permute(0, 3, 1, 2).float(), (image_size, image_size))
        return x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()

    for path in files:
        for ep in read_hdf5(path):
            state = np.concatenate([ep.state["ee_pos"], ep.state["ee_ori"], ep.state["gripper_states"]], 1)
            yield Episode(ep.name, ep.timestamps, {c: resize(ep.frames[c]) for c in CAMERAS},
                          {"state": state.astype(np.float32)}, {"actions": ep.commands["actions"]}, ep.text)


def act_dataset(files: list[str], out: Path, image_size: int) -> Path:
    from cosmos3_robot.data.convert import to_lerobot

    root = out / "act_data"
    if (root / "meta" / "info.json").exists():
        log(f"ACT's dataset already at {root}")
        return root
    log(f"writing ACT's LeRobot dataset from {len(files)} files at {image_size} px")
    return to_lerobot(act_episodes(files, image_size), root, REPO_ID, fps=20, use_videos=False, robot_type="panda")


def train_ours(files: list[str], recipe: str, run: Path, minutes: float) -> dict[str, Any]:
    from cosmos3_robot.train.recipe import run as train_run
    from cosmos3_robot.train.state import read_metrics

    if (run / "checkpoints").exists() and read_metrics(run):
        log(f"ours already trained at {run}")
    else:
        data = str(Path(files[0]).parent.resolve() / "*_demo.hdf5")
        train_run(recipe, run, overrides=[f"data.0.path={data}", f"train.max_minutes={minutes}"])
    m = read_metrics(run)
    prior = [r for r in m if r.get("phase") == "prior"]
    return {"prior_steps": prior[-1]["prior_step"] if prior else 0, "steps": m[-1].get("step", 0) if m else 0}


def train_act(data: Path, run: Path, minutes: float, batch: int) -> dict[str, Any]:
    from cosmos3_robot.benchmarks.policy_quality import train_lerobot

    done = run / "train.json"
    if done.exists():
        log(f"ACT already trained at {run}")
        return json.loads(done.read_text())
    info = train_lerobot("act", data, run, minutes, batch, CHUNK, REPLAN, preset="small", repo_id=REPO_ID,
                         cameras=CAMERAS)
    done.write_text(json.dumps(info))
    return info


def closed_loop(spec: str, tasks: tuple[str, ...], episodes: int, out: Path, workers: int,
                kwargs: dict[str, Any], max_steps: int | None = None) -> dict[str, Any]:
    from cosmos3_robot.sim.evaluate import EvalConfig, evaluate
    from cosmos3_robot.sim.report import write_report

    if (out / "results.json").exists():
        log(f"evaluation already at {out}")
        return json.loads((out / "results.json").read_text())
    done = [0]

    def progress(r) -> None:
        done[0] += 1
        log(f"{spec}: {r.task} #{r.index} {'ok' if r.success else 'fail'} {r.steps} steps "
            f"({done[0]}/{episodes * len(tasks)}){' ' + r.error if r.error else ''}")

    cfg = EvalConfig(tasks=tasks, episodes=episodes, workers=workers, replan=REPLAN, videos=1, policy_kwargs=kwargs,
                     max_steps=max_steps)
    return write_report(evaluate(spec, cfg, out, progress=progress), out, title=spec)


def print_table(results: dict[str, dict[str, Any]], tasks: tuple[str, ...]) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title="LIBERO closed loop: successes / episodes (Wilson 95%)")
    t.add_column("task")
    t.add_column("init states")
    for name in results:
        t.add_column(name, justify="right")

    def cell(s: dict[str, Any]) -> str:
        lo, hi = s["ci95"]
        return f"{s['successes']}/{s['episodes']} ({100 * lo:.0f}-{100 * hi:.0f}%)"

    first = next(iter(results.values()))
    for task in tasks:
        st = first["tasks"][task]["settings"]
        inits = st.get("init_state")
        inits = f"{inits[0]}..{inits[-1]}" if isinstance(inits, list) else str(inits)
        t.add_row(task, inits, *(cell(r["tasks"][task]) for r in results.values()))
    t.add_row("all", "", *(cell(r["overall"]) for r in results.values()))
    Console(width=140).print(t)
    st = {k: v for k, v in first["tasks"][tasks[0]]["settings"].items() if k not in ("task_index", "init_state")}
    print(f"protocol: {st}")


def main(argv: list[str] | None = None) -> None:
    from cosmos3_robot.sim.evaluate import available_cores

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="folder of the suite's <task>_demo.hdf5 files")
    ap.add_argument("--suite", default="libero_object")
    ap.add_argument("--out", default="runs/libero_bench")
    ap.add_argument("--minutes", type=float, default=20.0, help="training budget per policy (minutes)")
    ap.add_argument("--episodes", type=int, default=10, help="trials per task (the protocol: 50)")
    ap.add_argument("--tasks", type=int, nargs="+", default=list(range(10)), help="task indices evaluated")
    ap.add_argument("--max-steps", type=int, help="episode step limit (default: the protocol's; a smoke run's "
                                                 "shorter limit is recorded as not the standard protocol)")
    ap.add_argument("--act-batch", type=int, default=16)
    ap.add_argument("--workers", type=int, default=available_cores(), help="evaluation worker processes")
    ap.add_argument("--policies", nargs="+", default=["cosmos3", "act"], choices=["cosmos3", "act"])
    ap.add_argument("--stage", choices=["train", "eval", "all"], default="all",
                    help="train only, evaluate what is trained, or both")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    files = demo_files(Path(args.data))
    recipe = str(recipe_path(f"libero/{args.suite}_hdf5.yaml"))
    from cosmos3_robot.train.recipe import load_recipe

    image_size = int(load_recipe(recipe)["window"]["image_size"])
    tasks = tuple(f"{args.suite}/{k}" for k in args.tasks)
    report: dict[str, Any] = {"config": {**vars(args), "files": len(files), "image_size": image_size}, "train": {}}
    if args.stage in ("train", "all"):
        if "cosmos3" in args.policies:
            report["train"]["cosmos3"] = train_ours(files, recipe, out / "cosmos3", args.minutes)
        if "act" in args.policies:
            report["train"]["act"] = train_act(act_dataset(files, out, image_size), out / "act", args.minutes,
                                               args.act_batch)
        log(f"trained: {report['train']}")
    if args.stage in ("eval", "all"):
        # policy -> (table column, evaluator spec, policy settings): ours acts with its action prior's chunk
        specs = {"cosmos3": ("cosmos3", str(out / "cosmos3"), {"steps": 0}),
                 "act": ("LeRobot ACT", f"lerobot:{out / 'act'}", {})}
        evals = {}
        for key in args.policies:
            name, spec, kwargs = specs[key]
            evals[name] = closed_loop(spec, tasks, args.episodes, out / f"eval_{key}", args.workers, kwargs,
                                      args.max_steps)
        print_table(evals, tasks)
        report["eval"] = {k: {"tasks": v["tasks"], "overall": v["overall"]} for k, v in evals.items()}
    (out / "report.json").write_text(json.dumps(report, indent=1, default=str))
    log(f"report: {out / 'report.json'}")


if __name__ == "__main__":
    main()
