"""Training throughput (samples/s) of our presets and of LeRobot's ACT / Diffusion Policy.

One optimiser step = loss, backward and AdamW update on a batch held in memory (no data
loading, so the numbers compare the models, not the loaders). Ours cycles the default
training mixture (policy 2 : forward dynamics 1 : inverse dynamics 1) on clips of one
context frame plus one latent frame of future video and a 16-step 10D action chunk, with
four instructions spread over the batch (a multi-task robot batch repeats a few; samples
that share one share a Reasoner pass, so one instruction for all would flatter us); the
peers train on the same image size, batch size and chunk length. Peak RSS at the end
(and peak CUDA memory on a GPU).

    .venv/bin/python benchmarks/training_throughput.py [--presets tiny small] [--batch 8] [--compile]
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable

import torch


def samples_per_s(step: Callable[[int], None], batch: int, steps: int, warmup: int, device: str) -> tuple[float, float]:
    for i in range(warmup):
        step(i)
    times = []
    for i in range(steps):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        step(i)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    return batch / med, 1e3 * med


def ours(name: str, batch: int, chunk: int, device: str, steps: int, warmup: int, compile_: bool = False):
    from cosmos3_robot.model import Cosmos3, WorldBatch, preset

    cfg = preset(name)
    torch.manual_seed(0)
    model = Cosmos3(cfg).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    S, tc = cfg.image_size, cfg.temporal_compression
    g = torch.Generator().manual_seed(0)
    texts = [f"put the {c} cube on the green pad" for c in ("red", "blue", "yellow", "white")]
    data = WorldBatch(text=[texts[i % len(texts)] for i in range(batch)], embodiment=["sim_arm"] * batch,
                      video=(torch.rand(batch, 1 + tc, 3, S, S, generator=g) * 2 - 1).to(device), n_context_frames=1,
                      actions=torch.randn(batch, chunk, 10, generator=g).to(device), fps=10.0, control_hz=10.0,
                      state=(torch.rand(batch, 10, generator=g) * 2 - 1).to(device))  # read by state_input presets
    cycle = ["policy", "forward_dynamics", "policy", "inverse_dynamics"]
    amp = torch.autocast("cuda", torch.bfloat16) if device.startswith("cuda") else torch.autocast("cpu", enabled=False)
    net = torch.compile(model) if compile_ else model  # as TrainConfig.compile: forward() is the loss

    def step(i: int) -> None:
        with amp:
            loss, _ = net(cycle[i % len(cycle)], data)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return samples_per_s(step, batch, steps, warmup, device), model.num_parameters(), S


def lerobot_peers(image_size: int, batch: int, chunk: int, device: str, steps: int, warmup: int):
    """Samples/s of ACT and Diffusion Policy training steps; {} when lerobot is missing."""
    from cosmos3_robot.benchmarks.common import make_peers

    g = torch.Generator().manual_seed(0)
    img = torch.rand(batch, 3, image_size, image_size, generator=g).to(device)
    state = torch.randn(batch, 8, generator=g).to(device)
    action = torch.randn(batch, chunk, 8, generator=g).to(device)
    pad = torch.zeros(batch, chunk, dtype=torch.bool, device=device)
    data = {"LeRobot ACT": {"observation.images.front": img, "observation.state": state, "action": action,
                            "action_is_pad": pad},
            "LeRobot Diffusion": {"observation.images.front": torch.stack([img, img], 1),  # n_obs_steps = 2
                                  "observation.state": torch.stack([state, state], 1), "action": action,
                                  "action_is_pad": pad}}
    out = {}
    for label, policy in make_peers(image_size, chunk, device).items():
        policy.train()
        opt = torch.optim.AdamW(policy.parameters(), lr=1e-4)

        def step(i: int, policy=policy, batch=data[label], opt=opt) -> None:
            loss, _ = policy.forward(dict(batch))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        out[label] = (samples_per_s(step, batch, steps, warmup, device), sum(p.numel() for p in policy.parameters()))
    return out


def main(argv: list[str] | None = None) -> None:
    from rich.table import Table

    from cosmos3_robot.benchmarks.common import print_results

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--presets", nargs="+", default=["tiny", "small"])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--chunk", type=int, default=16)
    ap.add_argument("--steps", type=int, default=10, help="timed optimiser steps per model")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--compile", action="store_true",
                    help="also time our presets under torch.compile (TrainConfig.compile; the first steps of "
                         "each mode compile and are not timed)")
    args = ap.parse_args(argv)
    rows = []
    for name in args.presets:
        for compile_ in (False, True) if args.compile else (False,):
            (sps, ms), params, size = ours(name, args.batch, args.chunk, args.device, args.steps,
                                           args.warmup + (8 if compile_ else 0), compile_)
            rows.append((f"cosmos3 {name}" + (" (compiled)" if compile_ else ""), size, params, sps, ms))
    peers = lerobot_peers(64, args.batch, args.chunk, args.device, args.steps, args.warmup)
    for label, ((sps, ms), params) in peers.items():
        rows.append((label, 64, params, sps, ms))
    act = peers.get("LeRobot ACT")
    table = Table(title=f"Training throughput (batch {args.batch}, chunk {args.chunk}, {args.device}, "
                        f"{torch.get_num_threads()} threads)")
    for col in ("model", "image", "params", "ms / step", "samples/s", "vs ACT"):
        table.add_column(col, justify="left" if col == "model" else "right")
    for label, size, params, sps, ms in rows:
        ratio = f"{sps / act[0][0]:.2f}x" if act else "-"
        table.add_row(label, f"{size}px", f"{params / 1e6:.2f}M", f"{ms:.0f}", f"{sps:.1f}", ratio)
    print_results(table, args.device, bool(peers), width=110)


if __name__ == "__main__":
    main()
