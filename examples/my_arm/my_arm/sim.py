"""A small simulator for ``my_arm`` and its scripted expert (numpy only).

A hand moves over a 40 x 40 cm table in a box 20 cm high; a dot lies on the table. The task
("go to the dot and grasp"): bring the hand down onto the dot (within 1.5 cm) and close the
gripper. The camera looks straight down: the table is grey, the dot red, the hand a square
whose size grows with its height, blue when open and yellow when closed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from my_arm import FPS, MAX_STEP

LOW = np.array([-0.2, -0.2, 0.0])
HIGH = np.array([0.2, 0.2, 0.2])
INSTRUCTION = "go to the red dot and grasp"


@dataclass
class PointArm:
    """State ``hand`` (3, m), ``grip`` (0 open .. 1 closed); action (4) = displacement
    (3, m, clipped to ``MAX_STEP`` per axis) + gripper command (0 .. 1)."""

    image_size: int = 64
    max_steps: int = 40

    def reset(self, seed: int) -> dict[str, np.ndarray]:
        rng = np.random.default_rng(seed)
        self.dot = np.r_[rng.uniform(-0.15, 0.15, 2), 0.0]
        self.hand = np.r_[rng.uniform(-0.15, 0.15, 2), rng.uniform(0.1, 0.2)]
        self.grip = 0.0
        self.t = 0
        return self.observe()

    def observe(self) -> dict[str, np.ndarray]:
        return {"hand": self.hand.copy(), "grip": np.array([self.grip]), "top": self.render()}

    def step(self, action: np.ndarray) -> dict[str, np.ndarray]:
        a = np.asarray(action, dtype=np.float64)
        if a.shape != (4,) or not np.all(np.isfinite(a)):
            raise ValueError(f"action: expected 4 finite numbers (dx, dy, dz, gripper), got {a!r}")
        self.hand = np.clip(self.hand + np.clip(a[:3], -MAX_STEP, MAX_STEP), LOW, HIGH)
        self.grip = float(np.clip(a[3], 0.0, 1.0))
        self.t += 1
        return self.observe()

    def success(self) -> bool:
        return bool(np.linalg.norm(self.hand - self.dot) < 0.015 and self.grip > 0.5)

    def render(self) -> np.ndarray:
        s = self.image_size
        img = np.full((s, s, 3), 110, np.uint8)

        def pixel(p: np.ndarray) -> tuple[int, int]:
            u = (p[:2] - LOW[:2]) / (HIGH[:2] - LOW[:2])
            return int(np.clip(u[1] * (s - 1), 0, s - 1)), int(np.clip(u[0] * (s - 1), 0, s - 1))

        r, c = pixel(self.dot)
        img[max(r - 1, 0):r + 2, max(c - 1, 0):c + 2] = (220, 30, 30)
        r, c = pixel(self.hand)
        h = 1 + int(round(3 * self.hand[2] / HIGH[2]))
        img[max(r - h, 0):r + h + 1, max(c - h, 0):c + h + 1] = (230, 200, 40) if self.grip > 0.5 else (40, 70, 220)
        return img


def expert(env: PointArm) -> np.ndarray:
    """Move over the dot, then down; close once there."""
    to_dot = env.dot - env.hand
    if np.linalg.norm(to_dot[:2]) > 0.01:
        to_dot[2] = 0.0
    close = 1.0 if np.linalg.norm(env.dot - env.hand) < 0.01 else 0.0
    return np.r_[np.clip(to_dot, -MAX_STEP, MAX_STEP), close]


def rollout(seed: int, image_size: int = 64, hold: int = 3):
    """One expert episode: ``(frames (T, S, S, 3), hand (T, 3), grip (T, 1), action (T-1, 4))``,
    ending ``hold`` steps after the first success."""
    env = PointArm(image_size=image_size)
    obs = env.reset(seed)
    frames, hand, grip, actions = [obs["top"]], [obs["hand"]], [obs["grip"]], []
    left = hold
    while env.t < env.max_steps and left > 0:
        a = expert(env)
        obs = env.step(a)
        actions.append(a)
        frames.append(obs["top"])
        hand.append(obs["hand"])
        grip.append(obs["grip"])
        if env.success():
            left -= 1
    return np.stack(frames), np.stack(hand), np.stack(grip), np.stack(actions)


