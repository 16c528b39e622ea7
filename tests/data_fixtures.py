"""Small datasets in real on-disk formats, written here with the real libraries."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from scipy.spatial.transform import Rotation

INSTRUCTION = "put the red bowl on the plate"


def _moving_square(T: int, size: int, rng: np.random.Generator) -> np.ndarray:
    frames = np.zeros((T, size, size, 3), np.uint8)
    p, v = rng.uniform(2, size - 10, 2), rng.uniform(-1, 1, 2)
    for t in range(T):
        x, y = np.clip(p + t * v, 0, size - 8).astype(int)
        frames[t, y:y + 8, x:x + 8] = (220, 40, 30)
    return frames


def write_libero_hdf5(path: Path, n_demos: int = 2, T: int = 40, size: int = 32, seed: int = 0) -> Path:
    """A LIBERO-release-style file: data/demo_N/{actions, obs/...}, images upside down."""
    import h5py

    rng = np.random.default_rng(seed)
    with h5py.File(path, "w") as f:
        data = f.create_group("data")
        data.attrs["problem_info"] = json.dumps({"language_instruction": INSTRUCTION, "problem_name": "test"})
        for d in range(n_demos):
            g = data.create_group(f"demo_{d}")
            upright = _moving_square(T, size, rng)
            g["obs/agentview_rgb"] = upright[:, ::-1, ::-1]  # LIBERO renders upside down
            g["obs/eye_in_hand_rgb"] = upright[:, ::-1, ::-1]
            g["obs/ee_pos"] = np.cumsum(rng.normal(0, 0.01, (T, 3)), 0)
            g["obs/ee_ori"] = rng.normal(0, 0.1, (T, 3))
            g["obs/gripper_states"] = rng.uniform(0, 0.04, (T, 2))
            g["obs/joint_states"] = rng.normal(0, 0.1, (T, 7))
            act = np.c_[rng.uniform(-1, 1, (T, 6)), np.where(rng.uniform(size=T) > 0.5, 1.0, -1.0)]
            g["actions"] = act
            g["states"] = rng.normal(size=(T, 20))
    return path


def write_umi_zarr(path: Path, n_episodes: int = 2, T: int = 30, size: int = 32, seed: int = 0) -> Path:
    """A Diffusion-Policy/UMI-style replay buffer: data/<key> concatenated, meta/episode_ends."""
    import zarr

    rng = np.random.default_rng(seed)
    imgs, pos, rotvec, grip = [], [], [], []
    for _ in range(n_episodes):
        imgs.append(_moving_square(T, size, rng))
        pos.append(np.cumsum(rng.normal(0, 0.01, (T, 3)), 0))
        R = Rotation.random(random_state=int(rng.integers(1 << 30)))
        steps = Rotation.from_rotvec(rng.normal(0, 0.05, (T, 3)))
        rots = [R]
        for t in range(1, T):
            rots.append(rots[-1] * steps[t])
        rotvec.append(np.stack([r.as_rotvec() for r in rots]))
        grip.append(rng.uniform(0, 1, (T, 1)))
    root = zarr.open_group(str(path), mode="w")
    data = root.create_group("data")
    data.create_array("camera0_rgb", data=np.concatenate(imgs))
    data.create_array("robot0_eef_pos", data=np.concatenate(pos))
    data.create_array("robot0_eef_rot_axis_angle", data=np.concatenate(rotvec))
    data.create_array("robot0_gripper_width", data=np.concatenate(grip))
    meta = root.create_group("meta")
    meta.create_array("episode_ends", data=np.cumsum([T] * n_episodes).astype(np.int64))
    return path
