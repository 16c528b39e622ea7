"""Where reach rollouts go: named target or the other one, and how close they settle.

The built-in ``reach`` task names one of two coloured targets; success needs the tcp within
3 cm of it. A success rate alone does not say whether a policy fails by picking the wrong
target (language grounding), by stopping short (precision) or by running off (instability).
This probe rolls each policy out closed loop on the evaluation seeds (``100000 + i``, the
same as ``policy_quality.py``) and prints, per policy: success, how often the closest
approach was to the named target, the closest and final distances to it, and the final
distance to the other target (metres, tcp position).

``--frozen-camera`` adds a control row per policy: the same episodes with every camera
image replaced by the first one the policy saw (episode 0, step 0), the state and
instruction as usual. A policy that reads its camera gets worse; one that acts from the
instruction and the state alone does not (its successes are the tcp passing a target).

    .venv/bin/python benchmarks/reach_probe.py runs/quality/cosmos3 lerobot:runs/quality/act --episodes 20
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import numpy as np


@dataclass
class ReachTrace:
    success: bool
    named: np.ndarray  # (T,) tcp distance to the named target per step, m
    other: np.ndarray  # (T,) tcp distance to the other target per step, m


class FrozenCamera:
    """A policy wrapper that shows the wrapped policy the first camera images it was given,
    forever (every observation key but ``state``); the control for "does it use vision"."""

    def __init__(self, policy):
        self.policy = policy
        self.images: dict[str, np.ndarray] = {}

    def reset(self, env, seed: int) -> None:
        self.policy.reset(env, seed)

    def act(self, obs: dict[str, np.ndarray], instruction: str) -> np.ndarray:
        obs = dict(obs)
        for key in obs:
            if key != "state":
                obs[key] = self.images.setdefault(key, obs[key].copy())
        return self.policy.act(obs, instruction)


def rollout(env, policy, seed: int, replan: int) -> ReachTrace:
    """One closed-loop reach episode (the evaluator's loop, executing ``replan`` actions of
    each chunk), with the tcp's distance to both targets after every step."""
    from cosmos3_robot.sim.evaluate import run_episode

    named: list[float] = []
    far: list[float] = []

    def distances(e) -> None:
        u = e.unwrapped
        goal = u.layout.goal["target"]
        other = next(n for n in ("target0", "target1") if n != goal)
        named.append(float(np.linalg.norm(u.tcp_pos() - u.body_pos(goal))))
        far.append(float(np.linalg.norm(u.tcp_pos() - u.body_pos(other))))

    res = run_episode(env, policy, "reach", 0, seed, replan, on_step=distances)
    if res.error:
        raise RuntimeError(f"reach episode (seed {seed}) failed: {res.error}")
    return ReachTrace(res.success, np.array(named), np.array(far))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("policies", nargs="+", help="run folders or lerobot:<folder> (as cosmos3-robot eval takes)")
    ap.add_argument("--episodes", type=int, default=20)
    ap.add_argument("--replan", type=int, default=8)
    ap.add_argument("--frozen-camera", action="store_true",
                    help="also run each policy with its camera frozen at the first image (control)")
    args = ap.parse_args(argv)

    import torch

    from cosmos3_robot.sim.envs import make_env
    from cosmos3_robot.sim.policies import make_policy

    torch.set_num_threads(2)
    env = make_env("reach", image_size=64)
    rows = []
    runs = [(spec, make_policy(spec)) for spec in args.policies]
    if args.frozen_camera:
        runs = [r for spec, pol in runs for r in ((spec, pol), (f"{spec} (camera frozen)", FrozenCamera(pol)))]
    for spec, policy in runs:
        traces = [rollout(env, policy, 100_000 + i, args.replan) for i in range(args.episodes)]
        nearest_named = np.mean([t.named.min() < t.other.min() for t in traces])
        rows.append([spec, f"{sum(t.success for t in traces)}/{len(traces)}", f"{nearest_named:.0%}",
                     f"{np.mean([t.named.min() for t in traces]):.3f}", f"{np.mean([t.named[-1] for t in traces]):.3f}",
                     f"{np.mean([t.other[-1] for t in traces]):.3f}"])
    env.close()
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"Reach rollouts, {args.episodes} episodes (seeds 100000+i), distances in m")
    for col in ("policy", "success", "closest to named target", "closest approach", "final to named",
                "final to other"):
        table.add_column(col, justify="left" if col == "policy" else "right")
    for row in rows:
        table.add_row(*row)
    Console(width=120).print(table)


if __name__ == "__main__":
    main()
