"""A long fuzz of the robot-facing boundary: how many inputs were tried and how many emitted
commands left the limits (must be 0).

Two parts, each on its own seeded stream:

- the safety filter: random configurations (limits, workspace, gripper, step and acceleration
  bounds), random start states (inside and outside the box, NaN, 1e300) and chunks (ramps
  past the edge, noise, NaN, inf, 1e39, 1e300, wrong widths, empty); every emitted command is
  checked against the limits, and (from a start inside them) the step and acceleration bounds;
- the node core at its control rate: random event sequences (good and bad states, images,
  instructions, policy chunks that are empty, too wide, far out of the box or non-finite,
  e-stops), checking that ``tick`` never raises and every published command is in the box.

    .venv/bin/python benchmarks/safety_fuzz.py [--configs 2000] [--chunks 20] [--node-runs 200]

The CI suite runs the same properties briefly (tests/test_safety_properties.py,
tests/test_robot_boundary.py); this is the long run.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
from rich.console import Console
from rich.table import Table


from cosmos3_robot.runtime.node_core import NodeConfig, PolicyNodeCore
from cosmos3_robot.runtime.safety import SafetyConfig, SafetyFilter

TOL = 1e-9
WEIRD = np.array([np.nan, np.inf, -np.inf, 1e39, -1e39, 1e300, -1e300])


def random_config(rng: np.random.Generator, d: int) -> SafetyConfig:
    centre = rng.uniform(-1, 1, d)
    half = rng.uniform(0.01, 1, d)
    kw: dict = {"max_obs_age_s": None}
    if rng.random() < 0.7:
        kw.update(low=list(centre - half), high=list(centre + half))
    if d >= 3 and rng.random() < 0.7:
        c = centre[:3] + rng.uniform(-0.005, 0.005, 3)
        h = rng.uniform(0.005, 0.5, 3)
        kw.update(workspace_low=list(c - h), workspace_high=list(c + h))
    if rng.random() < 0.5:
        kw.update(gripper_dim=d - 1, gripper_range=(float(centre[-1] - half[-1] / 2), float(centre[-1] + half[-1] / 2)))
    if rng.random() < 0.8:
        kw.update(max_step=list(rng.uniform(0.001, 0.3, d)))
    if rng.random() < 0.6:
        kw.update(max_accel_step=list(rng.uniform(0.0005, 0.1, d)))
    return SafetyConfig(**kw)


def random_chunk(rng: np.random.Generator, d: int) -> np.ndarray:
    kind = rng.integers(6)
    n = int(rng.integers(1, 17))
    if kind == 0:  # a ramp far past the edge
        return np.linspace(0, rng.uniform(-5, 5), n)[:, None] * np.ones(d)
    if kind == 1:
        a = rng.uniform(-3, 3, (n, d))
        a.flat[rng.integers(a.size)] = WEIRD[rng.integers(len(WEIRD))]
        return a
    if kind == 2:
        return np.zeros((0, d))
    if kind == 3:
        return rng.uniform(-3, 3, (n, d + int(rng.integers(1, 3))))  # a wider command
    return rng.uniform(-3, 3, (n, d))


def fuzz_filter(n_configs: int, n_chunks: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    stats = {"configs": 0, "chunks": 0, "commands": 0, "holds": 0, "outside_limits": 0, "over_step": 0,
             "over_accel": 0, "raised": 0}
    for _ in range(n_configs):
        d = int(rng.integers(3, 10))
        cfg = random_config(rng, d)
        f = SafetyFilter(cfg)
        lo, hi = cfg.bounds(d)
        start = rng.uniform(-1.5, 1.5, d)
        if rng.random() < 0.1:
            start[rng.integers(d)] = WEIRD[rng.integers(len(WEIRD))]
        f.reset(start)
        inside = f.last_command is None or bool(np.all(f.last_command >= lo) and np.all(f.last_command <= hi))
        prev, v_prev = f.last_command, np.zeros(d)
        stats["configs"] += 1
        for _ in range(n_chunks):
            stats["chunks"] += 1
            ok_before = f.counts["chunks_ok"]
            try:
                out = f.filter(random_chunk(rng, d))
            except Exception:  # noqa: BLE001  (counted: must stay 0)
                stats["raised"] += 1
                continue
            if out is None:
                continue
            if f.counts["chunks_ok"] == ok_before:
                stats["holds"] += 1
                v_prev = np.zeros(d)
                continue
            for cmd in out:
                stats["commands"] += 1
                stats["outside_limits"] += int(not (np.all(cmd >= lo - TOL) and np.all(cmd <= hi + TOL)))
                if prev is None:
                    v_prev = np.zeros(d)
                elif inside:
                    v = cmd - prev
                    if cfg.max_step is not None:
                        stats["over_step"] += int(np.any(np.abs(v) > np.asarray(cfg.max_step) + TOL))
                    if cfg.max_accel_step is not None:
                        stats["over_accel"] += int(np.any(np.abs(v - v_prev) > np.asarray(cfg.max_accel_step) + TOL))
                    v_prev = v
                prev = cmd
    return stats


def fuzz_node(runs: int, ticks: int, seed: int) -> dict:
    from cosmos3_robot.synthetic import sim_state

    rng = np.random.default_rng(seed)
    stats = {"runs": 0, "ticks": 0, "published": 0, "outside_box": 0, "raised": 0}
    safety = SafetyConfig(workspace_low=[0.2, -0.3, 0.3], workspace_high=[0.8, 0.3, 0.9], max_step=[0.05] * 8,
                          max_accel_step=[0.02] * 8, gripper_dim=7, max_obs_age_s=None)
    lo, hi = safety.bounds(8)
    events = ["good", "nan_state", "str_state", "future_image", "bad_image", "none_text", "empty_chunk",
              "wide_chunk", "nan_chunk", "far_chunk", "estop", "release"]
    for _ in range(runs):
        mode = {"chunk": "far_chunk"}

        def infer(frames, state, text, prefix, mode=mode):
            kind = mode["chunk"]
            if kind == "empty_chunk":
                return np.zeros((0, 8))
            if kind == "wide_chunk":
                return np.zeros((4, 9))
            c = np.tile(sim_state(), (8, 1)).astype(float)
            c[:, 0] += np.linspace(0, rng.uniform(-3, 3), 8)
            if kind == "nan_chunk":
                c[2, 1] = np.nan
            return c

        clock = [100.0]
        core = PolicyNodeCore(infer, NodeConfig(cameras=("front",), instruction="reach", safety=safety),
                              clock=lambda: clock[0])
        core.safety.reset(sim_state().astype(float))
        stats["runs"] += 1
        for _ in range(ticks):
            ev = events[rng.integers(len(events))]
            mode["chunk"] = ev if ev.endswith("_chunk") else "far_chunk"
            state = {"nan_state": np.full(8, np.nan), "str_state": np.array(["a"] * 8)}.get(ev, sim_state())
            try:
                core.on_image("front", clock[0] + (100.0 if ev == "future_image" else 0.0),
                              np.zeros((16, 16), np.uint8) if ev == "bad_image" else np.zeros((16, 16, 3), np.uint8))
                core.on_state(clock[0], {"state": state})
                if ev == "none_text":
                    core.on_instruction(None)  # type: ignore[arg-type]
                if ev in ("estop", "release"):
                    core.on_estop(ev == "estop")
                cmd, _ = core.tick()
            except Exception:  # noqa: BLE001  (counted: must stay 0)
                stats["raised"] += 1
                continue
            stats["ticks"] += 1
            time.sleep(0.0005)  # the inference thread
            clock[0] += 0.1
            if cmd is not None:
                stats["published"] += 1
                stats["outside_box"] += int(not (np.all(cmd >= lo - TOL) and np.all(cmd <= hi + TOL)))
        core.close()
    return stats


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--configs", type=int, default=2000, help="random safety configurations")
    ap.add_argument("--chunks", type=int, default=20, help="chunks per configuration")
    ap.add_argument("--node-runs", type=int, default=200, help="node-core runs")
    ap.add_argument("--ticks", type=int, default=60, help="control ticks per node-core run")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    t0 = time.perf_counter()
    fs = fuzz_filter(args.configs, args.chunks, args.seed)
    t1 = time.perf_counter()
    ns = fuzz_node(args.node_runs, args.ticks, args.seed + 1)
    t2 = time.perf_counter()
    console = Console(width=150)
    table = Table(title="Safety fuzz: inputs tried and commands that left the limits (must be 0)")
    for col in ("part", "inputs tried", "commands emitted", "holds", "left the limits", "over step", "over accel",
                "raised", "s"):
        table.add_column(col, justify="right")
    table.add_row("SafetyFilter", f"{fs['chunks']} chunks / {fs['configs']} configs", str(fs["commands"]),
                  str(fs["holds"]), str(fs["outside_limits"]), str(fs["over_step"]), str(fs["over_accel"]),
                  str(fs["raised"]), f"{t1 - t0:.0f}")
    table.add_row("PolicyNodeCore.tick", f"{ns['ticks']} ticks / {ns['runs']} runs", str(ns["published"]), "-",
                  str(ns["outside_box"]), "-", "-", str(ns["raised"]), f"{t2 - t1:.0f}")
    console.print(table)
    bad = fs["outside_limits"] + fs["over_step"] + fs["over_accel"] + fs["raised"] + ns["outside_box"] + ns["raised"]
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
