"""Codec throughput and exactness, with a scipy implementation as the peer in the same run.

For each built-in embodiment: encode + decode of random long episodes, the float64 round-trip
error, the float32 integration drift, and steps per second. The peer is the obvious
per-step scipy implementation of the same 10D single-arm encoding (``Rotation`` objects and
numpy inverses, as many data pipelines write it); the ratio column compares ours to it.

    .venv/bin/python benchmarks/codec_roundtrip.py [--steps 1000] [--batch 64]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from rich.console import Console
from rich.table import Table
from scipy.spatial.transform import Rotation

from cosmos3_robot import embodiments
from cosmos3_robot import geometry as geo
from cosmos3_robot.synthetic import max_episode_error, random_episode


def scipy_encode_10d(ee: np.ndarray, gripper: np.ndarray) -> np.ndarray:
    """Peer: per-episode scipy encoding of the 10D layout (relative pose + 6D columns + gripper)."""
    out = []
    for T, g in zip(ee, gripper):
        R = Rotation.from_matrix(T[:, :3, :3])
        rel_R = (R[:-1].inv() * R[1:]).as_matrix()
        rel_t = R[:-1].inv().apply(T[1:, :3, 3] - T[:-1, :3, 3])
        out.append(np.concatenate([rel_t, rel_R[:, :, 0], rel_R[:, :, 1], g[1:, None]], -1))
    return np.stack(out)


def timeit(fn, repeat: int = 5) -> float:
    fn()
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=1000, help="episode length T")
    ap.add_argument("--batch", type=int, default=32, help="episodes encoded together")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    console = Console()

    table = Table(title=f"Codec round trip: T={args.steps}, batch={args.batch} (CPU)")
    for col in ("embodiment", "D", "f64 max err", "f32 drift (pos m)", "encode Mstep/s", "decode Mstep/s"):
        table.add_column(col, justify="right")
    for name in embodiments.available():
        emb = embodiments.get(name)
        ep = random_episode(emb.codec, args.steps, rng, batch=(args.batch,))
        x = emb.encode(ep)
        start = emb.start_state(ep)
        err = max_episode_error(ep, emb.decode(x, start))
        drift = "-"
        poses = [b.name for b in emb.codec.state_blocks if b.width == 9]
        if poses:
            dec32 = emb.decode(x.astype(np.float32), {k: np.asarray(v, np.float32) for k, v in start.items()})
            drift = f"{np.abs(dec32[poses[0]][..., :3, 3] - ep[poses[0]][..., :3, 3]).max():.1e}"
        n = args.batch * (args.steps - 1)
        t_enc = timeit(lambda: emb.encode(ep))
        t_dec = timeit(lambda: emb.decode(x, start), repeat=2)
        table.add_row(name, str(emb.width), f"{err:.1e}", drift, f"{n / t_enc / 1e6:.2f}", f"{n / t_dec / 1e6:.2f}")
    console.print(table)

    emb = embodiments.get("single_arm_10d")
    ep = random_episode(emb.codec, args.steps, rng, batch=(args.batch,))
    ours = emb.encode(ep)
    peer = scipy_encode_10d(ep["ee"], ep["gripper"])
    agree = float(np.abs(ours - peer).max())
    t_ours = timeit(lambda: emb.encode(ep))
    t_peer = timeit(lambda: scipy_encode_10d(ep["ee"], ep["gripper"]))
    n = args.batch * (args.steps - 1)
    peer_table = Table(title="10D encode vs a per-episode scipy implementation (same data, same run)")
    for col in ("implementation", "Mstep/s", "ratio vs scipy", "max |diff|"):
        peer_table.add_column(col, justify="right")
    peer_table.add_row("cosmos3_robot (batched torch, validated)", f"{n / t_ours / 1e6:.2f}", f"{t_peer / t_ours:.2f}x", f"{agree:.1e}")
    peer_table.add_row("scipy Rotation (no validation)", f"{n / t_peer / 1e6:.2f}", "1.00x", "-")
    console.print(peer_table)
    R = geo.rot6d_to_matrix(rng.normal(size=(100000, 6)))
    console.print(f"6D decode of 100k random vectors: max deviation from SO(3) {geo.rotation_error(R).max():.1e}")


if __name__ == "__main__":
    main()
