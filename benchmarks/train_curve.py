"""Training curve of a preset on generated LIBERO-format demonstrations (CPU or GPU).

Writes a LIBERO-style HDF5 file of moving-square demonstrations (the same generator the
tests use), trains the chosen preset through the real recipe path (`cosmos3-robot train`),
and prints the loss per logging window with the ratio to the first window.

    .venv/bin/python benchmarks/train_curve.py --preset small --steps 300
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import yaml
from rich.console import Console
from rich.table import Table

from cosmos3_robot.synthetic import write_libero_hdf5

from cosmos3_robot.train.recipe import run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="small")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--demos", type=int, default=16)
    ap.add_argument("--log-every", type=int, default=25)
    ap.add_argument("--out", default=None, help="run folder (default: a temporary one)")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="cosmos3_curve_"))
    from cosmos3_robot.model import preset

    cfg = preset(args.preset)
    size, tc = cfg.image_size, cfg.temporal_compression
    write_libero_hdf5(tmp / "generated_demo.hdf5", n_demos=args.demos, T=60, size=size)
    recipe = {
        "model": {"preset": args.preset},
        "window": {"embodiment": "libero_10d", "camera": "agentview", "fps": 20, "n_context": 1,
                   "n_future": tc, "chunk": 16, "image_size": size, "stride": 2},
        "data": [{"format": "hdf5", "path": "generated_demo.hdf5", "layout": "libero"}],
        "train": {"steps": args.steps, "batch_size": args.batch_size, "lr": args.lr, "warmup": 20,
                  "log_every": args.log_every, "ckpt_every": args.steps, "ema": 0.0},
    }
    (tmp / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    t0 = time.perf_counter()
    hist = run(tmp / "recipe.yaml", args.out or tmp / "run", quiet=True)
    elapsed = time.perf_counter() - t0
    table = Table(title=f"{args.preset}: {args.steps} steps, batch {args.batch_size}, {elapsed:.0f} s")
    for col in ("step", "loss", "vs first", "policy", "forward_dynamics", "inverse_dynamics", "samples/s"):
        table.add_column(col, justify="right")
    first = hist[0]["loss"]
    for h in hist:
        table.add_row(str(h["step"]), f"{h['loss']:.3f}", f"{h['loss'] / first:.2f}",
                      *(f"{h[k]:.3f}" if k in h else "-" for k in ("loss/policy", "loss/forward_dynamics",
                                                                      "loss/inverse_dynamics")),
                      f"{h['samples_per_s']:.1f}")
    Console().print(table)


if __name__ == "__main__":
    main()
