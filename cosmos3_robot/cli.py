"""The ``cosmos3-robot`` command line. ``--help`` lists the subcommands that exist."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Callable, Sequence

from cosmos3_robot import __version__


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
    try:
        run(args.recipe, out, overrides=args.set, resume=args.resume)
    except ValueError as exc:  # bad recipe or bad data: a clear message, no traceback
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def _train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--recipe", required=True, help="YAML recipe (see recipes/)")
    p.add_argument("--out", help="run folder (default runs/<recipe name>)")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override a recipe field, e.g. --set train.steps=100 (repeatable)")
    p.add_argument("--resume", action="store_true", help="continue from the run folder's latest checkpoint")


def _cmd_convert(args: argparse.Namespace) -> int:
    import json as _json
    from pathlib import Path

    import yaml

    from cosmos3_robot.data.convert import to_lerobot
    from cosmos3_robot.data.episode import DataError

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
    p.add_argument("--format", choices=["hdf5", "zarr", "rosbag"], required=True, help="input format")
    p.add_argument("--input", nargs="+", required=True, help="input file(s) / folder(s)")
    p.add_argument("--layout", help="hdf5: 'libero' or 'robomimic', or a YAML/JSON layout (file or inline) "
                                    "with cameras/state/commands mappings")
    p.add_argument("--out", required=True, help="LeRobot dataset root to create")
    p.add_argument("--repo-id", default="local/converted", help="dataset name (owner/name)")
    p.add_argument("--fps", type=int, required=True, help="frame rate of the written dataset")
    p.add_argument("--text", help="instruction for every episode (overrides the file's)")
    p.add_argument("--images", action="store_true", help="store frames as images instead of video")
    p.add_argument("--robot-type", help="robot_type recorded in the dataset metadata")


Subcommand = tuple[str, str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]


def _embodiments_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", nargs="?", help="show one embodiment's dimensions")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")


SUBCOMMANDS: list[Subcommand] = [
    ("embodiments", "list registered embodiments, or show one's pseudo-action layout",
     _embodiments_args, _cmd_embodiments),
    ("models", "list model presets with their parameter counts", _models_args, _cmd_models),
    ("train", "train from a recipe (one process, or many under torchrun)", _train_args, _cmd_train),
    ("convert", "convert HDF5 / zarr / rosbag2 recordings to a LeRobot dataset", _convert_args, _cmd_convert),
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
