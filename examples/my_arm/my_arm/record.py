"""Record expert demonstrations of :mod:`my_arm.sim` as a LeRobot dataset.

    python -m my_arm.record --out data/my_arm --episodes 40

Features: ``observation.images.top`` (video), ``observation.hand`` (3), ``observation.grip``
(1) and ``action`` (4), at 10 Hz, the layout ``examples/my_arm/recipe.yaml`` reads.
"""

from __future__ import annotations

import argparse

import numpy as np

from cosmos3_robot.data.convert import to_lerobot
from cosmos3_robot.data.episode import Episode
from my_arm import FPS
from my_arm.sim import INSTRUCTION, rollout


def episodes(n: int, seed: int, image_size: int):
    for i in range(n):
        frames, hand, grip, action = rollout(seed + i, image_size)
        yield Episode(f"my_arm:{seed + i}", np.arange(len(frames)) / FPS, frames={"top": frames},
                      state={"hand": hand, "grip": grip}, commands={"action": action}, text=INSTRUCTION)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="dataset folder (must not exist)")
    p.add_argument("--episodes", type=int, default=40)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--image-size", type=int, default=64)
    args = p.parse_args(argv)
    root = to_lerobot(episodes(args.episodes, args.seed, args.image_size), args.out, "local/my_arm", fps=int(FPS),
                      robot_type="my_arm")
    print(f"wrote {args.episodes} episodes to {root}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
