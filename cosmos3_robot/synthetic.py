"""Synthetic data made here, nothing downloaded: smooth random codec episodes, small datasets
in the real on-disk formats (LIBERO/robomimic HDF5, UMI zarr, LeRobot, rosbag2; written with
the real libraries) and a fresh tiny ``sim_arm`` policy. The tests and the benchmarks build
on them (``benchmarks/codec_roundtrip.py``, ``safety_fuzz.py``, ``train_curve.py``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.spatial.transform import Rotation

from cosmos3_robot.codec import (
    ActionCodec,
    DeltaPoseCommandBlock,
    GripperBlock,
    PointsBlock,
    PoseBlock,
    ScalarCommandBlock,
)

INSTRUCTION = "put the red bowl on the plate"


# ---- codec episodes ----------------------------------------------------------------------
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


# ---- datasets in real formats ------------------------------------------------------------
def _moving_square(T: int, size: int, rng: np.random.Generator, return_velocity: bool = False):
    """A red square gliding at a constant per-episode velocity (pixels per step)."""
    frames = np.zeros((T, size, size, 3), np.uint8)
    p, v = rng.uniform(2, size - 10, 2), rng.uniform(-1, 1, 2) * size / 64
    for t in range(T):
        x, y = np.clip(p + t * v, 0, size - 8).astype(int)
        frames[t, y:y + 8, x:x + 8] = (220, 40, 30)
    return (frames, v) if return_velocity else frames


def write_libero_hdf5(path: Path, n_demos: int = 2, T: int = 40, size: int = 32, seed: int = 0) -> Path:
    """A LIBERO-release-style file: data/demo_N/{actions, obs/...}, images upside down."""
    import h5py

    rng = np.random.default_rng(seed)
    with h5py.File(path, "w") as f:
        data = f.create_group("data")
        data.attrs["problem_info"] = json.dumps({"language_instruction": INSTRUCTION, "problem_name": "test"})
        for d in range(n_demos):
            g = data.create_group(f"demo_{d}")
            upright, vel = _moving_square(T, size, rng, return_velocity=True)
            g["obs/agentview_rgb"] = upright[:, ::-1, ::-1]  # LIBERO renders upside down
            g["obs/eye_in_hand_rgb"] = upright[:, ::-1, ::-1]
            g["obs/ee_pos"] = np.cumsum(rng.normal(0, 0.01, (T, 3)), 0)
            g["obs/ee_ori"] = rng.normal(0, 0.1, (T, 3))
            g["obs/gripper_states"] = rng.uniform(0, 0.04, (T, 2))
            g["obs/joint_states"] = rng.normal(0, 0.1, (T, 7))
            # Commands a policy can read off the video: the square's velocity drives x/y, the
            # gripper closes halfway through; the other axes carry small noise.
            act = np.c_[np.tile(vel * 64 / size / 1.5, (T, 1)), rng.normal(0, 0.05, (T, 4)),
                        np.where(np.arange(T) >= T // 2, 1.0, -1.0)]
            act = np.clip(act, -1, 1)
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


def write_lerobot_dataset(root: Path, n_episodes: int = 2, T: int = 24, size: int = 32, fps: int = 10,
                          use_videos: bool = True, seed: int = 0) -> Path:
    """A LeRobot v3.0 dataset made with LeRobot's own writer (create/add_frame/save_episode/finalize)."""
    from lerobot.datasets import LeRobotDataset

    rng = np.random.default_rng(seed)
    features = {
        "observation.images.front": {"dtype": "video" if use_videos else "image", "shape": (size, size, 3),
                                     "names": ["height", "width", "channels"]},
        "observation.state": {"dtype": "float32", "shape": (8,), "names": None},
        "action": {"dtype": "float32", "shape": (7,), "names": None},
    }
    ds = LeRobotDataset.create("local/cosmos3_test", fps=fps, features=features, root=root,
                               use_videos=use_videos, robot_type="libero_panda")
    for e in range(n_episodes):
        frames = _moving_square(T, size, rng)
        for t in range(T):
            ds.add_frame({
                "observation.images.front": frames[t],
                "observation.state": rng.normal(size=8).astype(np.float32),
                "action": np.r_[rng.uniform(-1, 1, 6), 1.0 if t % 2 else -1.0].astype(np.float32),
                "task": f"{INSTRUCTION} {e}",
            })
        ds.save_episode()
    ds.finalize()
    return root


def write_rosbag(path: Path, seconds: float = 3.0, size: int = 32, mcap: bool = False, seed: int = 0,
                 drop_images: tuple[float, float] | None = None, reverse_stamps: str | None = None) -> Path:
    """A rosbag2 (sqlite3 or MCAP) with a 30 Hz camera, 100 Hz joint states and 50 Hz poses,
    written with rosbags and ROS 2 message definitions; header stamps start at t=100 s.
    ``reverse_stamps``: that topic's header stamps run backwards over its second half
    (recorded in order, stamped wrongly)."""
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    store = get_typestore(Stores.LATEST)
    Image = store.types["sensor_msgs/msg/Image"]
    JointState = store.types["sensor_msgs/msg/JointState"]
    PoseStamped = store.types["geometry_msgs/msg/PoseStamped"]
    Header = store.types["std_msgs/msg/Header"]
    Time = store.types["builtin_interfaces/msg/Time"]
    Pose = store.types["geometry_msgs/msg/Pose"]
    Point = store.types["geometry_msgs/msg/Point"]
    Quaternion = store.types["geometry_msgs/msg/Quaternion"]
    rng = np.random.default_rng(seed)
    frames = _moving_square(int(seconds * 30) + 1, size, rng)
    t0 = 100.0

    def header(t: float, topic: str = "") -> object:
        if topic == reverse_stamps and t > t0 + seconds / 2:
            t = 2 * (t0 + seconds / 2) - t  # mirrored: later messages, earlier stamps
        sec = int(t)
        return Header(stamp=Time(sec=sec, nanosec=int(round((t - sec) * 1e9))), frame_id="base")

    plugin = StoragePlugin.MCAP if mcap else StoragePlugin.SQLITE3
    with Writer(path, version=9 if mcap else 8, storage_plugin=plugin) as w:
        cam = w.add_connection("/camera/image_raw", Image.__msgtype__, typestore=store)
        js = w.add_connection("/joint_states", JointState.__msgtype__, typestore=store)
        ps = w.add_connection("/ee_pose", PoseStamped.__msgtype__, typestore=store)
        msgs = []
        for i in range(frames.shape[0]):
            t = t0 + i / 30
            if drop_images is not None and drop_images[0] < i / 30 < drop_images[1]:
                continue  # a camera dropout
            m = Image(header=header(t), height=size, width=size, encoding="rgb8", is_bigendian=0, step=size * 3,
                      data=frames[i].reshape(-1))
            msgs.append((t, cam, m, Image.__msgtype__))
        for i in range(int(seconds * 100) + 1):
            t = t0 + i / 100
            m = JointState(header=header(t, "/joint_states"), name=[f"j{k}" for k in range(8)],
                           position=np.r_[np.sin(t + np.arange(7)), 0.5 + 0.5 * np.sin(t)],
                           velocity=np.zeros(0), effort=np.zeros(0))
            msgs.append((t, js, m, JointState.__msgtype__))
        for i in range(int(seconds * 50) + 1):
            t = t0 + i / 50
            q = Rotation.from_rotvec([0, 0, 0.2 * t]).as_quat()
            m = PoseStamped(header=header(t), pose=Pose(position=Point(x=0.1 * t, y=0.0, z=0.3),
                                                        orientation=Quaternion(x=q[0], y=q[1], z=q[2], w=q[3])))
            msgs.append((t, ps, m, PoseStamped.__msgtype__))
        for t, conn, m, typ in sorted(msgs, key=lambda x: x[0]):
            w.write(conn, int(t * 1e9), store.serialize_cdr(m, typ))
    return path


# ---- a tiny policy ------------------------------------------------------------------------
def sim_state(x: float = 0.5) -> np.ndarray:
    """A ``sim_arm`` state: tcp at (x, 0, 0.6) m, identity orientation, gripper open."""
    return np.array([x, 0.0, 0.6, 1.0, 0.0, 0.0, 0.0, 0.0], dtype=np.float32)


def tiny_sim_policy(views: tuple[str, ...] = ()):
    """A tiny model with the statistics of plausible ``sim_arm`` motions, chunk 8 at 10 Hz;
    with ``views``, an observation stem on those cameras and an action prior (its head
    perturbed so the cameras move the chunk)."""
    from cosmos3_robot import embodiments
    from cosmos3_robot.model import Cosmos3, preset
    from cosmos3_robot.runtime import Cosmos3Policy, InferenceConfig

    torch.manual_seed(0)
    emb = embodiments.get("sim_arm")
    rng = np.random.default_rng(0)
    T = 200
    pos = np.cumsum(rng.normal(0, 0.01, (T, 3)), 0) + [0.5, 0, 0.6]
    state = np.c_[pos, np.tile([1.0, 0, 0, 0], (T, 1)), (rng.random(T) > 0.5).astype(float)]
    norm = emb.normalizer(emb.encode_raw({"state": state}))
    window = {"embodiment": "sim_arm", "camera": "front", "fps": 10, "n_context": 1, "chunk": 8, "image_size": 32}
    if not views:
        return Cosmos3Policy(Cosmos3(preset("tiny")), "sim_arm", norm, window)
    model = Cosmos3(preset("tiny", visual_keypoints=4, n_views=len(views), action_prior=True))
    with torch.no_grad():
        model.parts.action_prior.head[-1].weight.normal_(std=0.3)
    return Cosmos3Policy(model, "sim_arm", norm, {**window, "views": list(views)}, InferenceConfig(steps=0, temperature=0.0))
