"""Random, smooth test data for codecs: made here, nothing downloaded."""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.spatial.transform import Rotation

from cosmos3_robot.codec import (
    ActionCodec,
    DeltaPoseCommandBlock,
    GripperBlock,
    PointsBlock,
    PoseBlock,
    ScalarCommandBlock,
)


def random_pose_trajectory(T: int, rng: np.random.Generator, step_rot: float = 0.2,
                           step_pos: float = 0.05, batch: tuple[int, ...] = ()) -> np.ndarray:
    """``(*batch, T, 4, 4)`` float64 poses: a random start and random-walk increments.

    Rotation steps up to ``step_rot`` rad (several full turns over a long episode), so the
    trajectories pass near 180-degree relative orientations to the start.
    """
    n = int(np.prod(batch)) if batch else 1
    out = np.zeros((n, T, 4, 4))
    for b in range(n):
        R = Rotation.random(random_state=rng.integers(1 << 31))
        p = rng.normal(size=3)
        for t in range(T):
            out[b, t, :3, :3] = R.as_matrix()
            out[b, t, :3, 3] = p
            out[b, t, 3, 3] = 1.0
            R = R * Rotation.from_rotvec(rng.normal(size=3) * step_rot / np.sqrt(3))
            p = p + rng.normal(size=3) * step_pos
    return out.reshape(batch + (T, 4, 4))


def random_episode(codec: ActionCodec, T: int, rng: np.random.Generator,
                   batch: tuple[int, ...] = ()) -> dict[str, Any]:
    """A valid random episode for any codec layout (float64)."""
    ep: dict[str, Any] = {}
    for b in codec.blocks:
        if isinstance(b, PoseBlock):
            ep[b.name] = random_pose_trajectory(T, rng, batch=batch)
        elif isinstance(b, GripperBlock):
            ep[b.name] = rng.uniform(b.low, b.high, size=batch + (T,))
        elif isinstance(b, PointsBlock):
            frame = ep[b.frame]
            local = rng.normal(scale=0.08, size=batch + (T, b.n_points, 3))
            ep[b.name] = np.einsum("...ij,...nj->...ni", frame[..., :3, :3], local) + frame[..., None, :3, 3]
        elif isinstance(b, DeltaPoseCommandBlock):
            lim = min(b.limit, 1.0)
            ep[b.name] = rng.uniform(-lim, lim, size=batch + (T - 1, 6))
        elif isinstance(b, ScalarCommandBlock):
            ep[b.name] = rng.uniform(b.low, b.high, size=batch + (T - 1,))
        else:  # pragma: no cover - new block types must be added here
            raise NotImplementedError(type(b))
    return ep


def max_episode_error(a: dict[str, Any], b: dict[str, Any]) -> float:
    assert set(a) == set(b), (sorted(a), sorted(b))
    return max(float(np.max(np.abs(np.asarray(a[k], np.float64) - np.asarray(b[k], np.float64)))) for k in a)
