"""Data sources, windowing, resampling and bad-data errors, on files written with the real libraries."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from cosmos3_robot.synthetic import INSTRUCTION, write_libero_hdf5, write_umi_zarr

from cosmos3_robot.data import DataError, Episode, WindowDataset, WindowSpec, collate, resample_indices
from cosmos3_robot.data.sources.hdf5 import LIBERO, read_hdf5
from cosmos3_robot.data.sources.zarr_store import ZarrLayout, read_zarr
from cosmos3_robot.transforms import PoseFromPosRotation, Squeeze

UMI = ZarrLayout(cameras={"cam0": "camera0_rgb"},
                 state={"pos": "robot0_eef_pos", "rotvec": "robot0_eef_rot_axis_angle",
                        "gripper": "robot0_gripper_width"},
                 fps=10.0, text="fold the cloth")
UMI_TRANSFORMS = (PoseFromPosRotation("pos", "rotvec", "ee", rotation="axis_angle"), Squeeze("gripper"))


def test_libero_hdf5_reads_episodes_upright_with_instruction(tmp_path):
    path = write_libero_hdf5(tmp_path / "KITCHEN_SCENE1_put_the_red_bowl_on_the_plate_demo.hdf5")
    eps = list(read_hdf5(path, LIBERO))
    assert [e.name.split(":")[1] for e in eps] == ["demo_0", "demo_1"]
    ep = eps[0]
    assert ep.text == INSTRUCTION and len(ep) == 40
    assert ep.frames["agentview"].shape == (40, 32, 32, 3)
    import h5py

    with h5py.File(path) as f:
        stored = f["data/demo_0/obs/agentview_rgb"][()]
    np.testing.assert_array_equal(ep.frames["agentview"], stored[:, ::-1, ::-1])  # rotated 180 degrees
    np.testing.assert_allclose(np.diff(ep.timestamps), 1 / 20)


def test_libero_windows_follow_the_timing_rule(tmp_path):
    eps = list(read_hdf5(write_libero_hdf5(tmp_path / "a.hdf5"), LIBERO))
    spec = WindowSpec(embodiment="libero", camera="agentview", fps=20, n_context=1, n_future=2, chunk=8, image_size=32)
    ds = WindowDataset(eps, spec)
    assert len(ds) == 2 * (40 - 8)
    s = ds[5]  # episode 0, now = step 5
    assert s["video"].shape == (3, 3, 32, 32) and s["video"].min() >= -1 and s["video"].max() <= 1
    # action step 0 is the command taken at frame 5, moving to frame 6
    np.testing.assert_allclose(s["actions"].numpy(), eps[0].commands["actions"][5:13], atol=1e-6)
    expected = torch.from_numpy(eps[0].frames["agentview"][5:8].astype(np.float32)).permute(0, 3, 1, 2) / 127.5 - 1
    assert torch.allclose(s["video"], expected)
    ds.normalizer = ds.action_statistics()
    b = collate([ds[i] for i in range(4)])
    assert b.actions.shape == (4, 8, 64) and b.action_mask.sum(1).tolist() == [7] * 4
    assert b.text == [INSTRUCTION] * 4 and b.embodiment == ["libero"] * 4 and b.views is None


def test_windows_carry_every_listed_camera_as_views(tmp_path):
    """``views``: each sample carries the current frame ("now") of every listed camera, in
    that order, and collate stacks them ``(B, N, 3, S, S)``; a camera the episodes lack, or
    one listed twice, is refused by name."""
    eps = list(read_hdf5(write_libero_hdf5(tmp_path / "a.hdf5"), LIBERO))
    spec = WindowSpec(embodiment="libero", camera="agentview", views=("wrist", "agentview"), fps=20,
                      n_context=1, n_future=2, chunk=8, image_size=32)
    ds = WindowDataset(eps, spec)
    s = ds[5]
    assert s["views"].shape == (2, 3, 32, 32)
    for k, cam in enumerate(("wrist", "agentview")):
        expected = torch.from_numpy(eps[0].frames[cam][5].astype(np.float32)).permute(2, 0, 1) / 127.5 - 1
        assert torch.allclose(s["views"][k], expected)
    assert torch.equal(s["views"][1], s["video"][0])  # now = the last context frame
    assert collate([ds[i] for i in range(3)]).views.shape == (3, 2, 3, 32, 32)
    with pytest.raises(DataError, match=r"no camera 'top'"):
        WindowDataset(eps, WindowSpec(**{**spec.__dict__, "views": ("wrist", "top")}))
    with pytest.raises(ValueError, match=r"views \['wrist', 'wrist'\] name a camera twice"):
        WindowSpec(**{**spec.__dict__, "views": ("wrist", "wrist")})


def test_zarr_replay_buffer_with_source_transforms(tmp_path):
    eps = list(read_zarr(write_umi_zarr(tmp_path / "umi.zarr"), UMI))
    assert len(eps) == 2 and len(eps[1]) == 30 and eps[0].text == "fold the cloth"
    spec = WindowSpec(embodiment="single_arm_10d", camera="cam0", n_context=1, n_future=0, chunk=8, image_size=32)
    ds = WindowDataset(eps, spec, transforms=UMI_TRANSFORMS)
    a = ds.raw_actions(0)
    assert a.shape == (8, 10)
    # the 10D pose block is the relative motion between consecutive end-effector poses
    from scipy.spatial.transform import Rotation

    R0 = Rotation.from_rotvec(eps[0].state["rotvec"][0])
    rel_t = R0.inv().apply(eps[0].state["pos"][1] - eps[0].state["pos"][0])
    np.testing.assert_allclose(a[0, :3], rel_t, atol=1e-9)
    np.testing.assert_allclose(a[:, 9], eps[0].state["gripper"][1:9, 0])


def test_resampling_goes_by_timestamps():
    ts = np.arange(0, 2.0, 1 / 30)  # 30 Hz for 2 s
    idx = resample_indices(ts, 15)
    np.testing.assert_array_equal(idx, np.arange(0, 60, 2))
    jitter = ts + np.random.default_rng(0).uniform(-0.004, 0.004, ts.size)
    np.testing.assert_array_equal(resample_indices(jitter, 15), idx)
    with pytest.raises(DataError, match=r"no frame within half a step of t=0\.867 s"):
        resample_indices(np.r_[ts[:25], ts[35:]], 15, "ep7")


def test_bad_data_names_episode_and_field(tmp_path):
    T = 10
    good = dict(name="demo.hdf5:demo_3", timestamps=np.arange(T) / 10.0,
                frames={"cam": np.zeros((T, 8, 8, 3), np.uint8)}, state={"q": np.zeros((T, 2))})
    Episode(**good).validate()
    with pytest.raises(DataError, match=r"demo_3: timestamps: not strictly increasing at index 5"):
        Episode(**{**good, "timestamps": np.r_[np.arange(5), np.arange(5)] / 10.0}).validate()
    bad_q = np.zeros((T, 2))
    bad_q[4, 1] = np.nan
    with pytest.raises(DataError, match=r"demo_3: state\['q'\]: non-finite value at row 4"):
        Episode(**{**good, "state": {"q": bad_q}}).validate()
    with pytest.raises(DataError, match=r"demo_3: state\['q'\]: expected 10 rows to match 10 frames, got shape \(9, 2\)"):
        Episode(**{**good, "state": {"q": np.zeros((9, 2))}}).validate()
    with pytest.raises(DataError, match=r"frames\['cam'\]: expected uint8 pixels"):
        Episode(**{**good, "frames": {"cam": np.zeros((T, 8, 8, 3), np.float32)}}).validate()
    # missing dataset inside an HDF5 demo
    import h5py

    path = write_libero_hdf5(tmp_path / "broken.hdf5", n_demos=1)
    with h5py.File(path, "a") as f:
        del f["data/demo_0/obs/ee_pos"]
    with pytest.raises(DataError, match=r"broken.hdf5:demo_0: state\['ee_pos'\]: missing dataset 'obs/ee_pos'"):
        list(read_hdf5(path, LIBERO))
    (tmp_path / "junk.hdf5").write_bytes(b"nope")
    with pytest.raises(DataError, match="not a readable HDF5 file"):
        list(read_hdf5(tmp_path / "junk.hdf5"))
    # a gripper command out of range inside a window names the episode and the steps
    path = write_libero_hdf5(tmp_path / "range.hdf5", n_demos=1)
    with h5py.File(path, "a") as f:
        a = f["data/demo_0/actions"][()]
        a[12, 6] = 3.0
        f["data/demo_0/actions"][...] = a
    ds = WindowDataset(list(read_hdf5(path, LIBERO)), WindowSpec("libero", "agentview", chunk=8, image_size=32))
    with pytest.raises(DataError, match=r"range.hdf5:demo_0 \(steps 10\.\.18\): block 'gripper'.*outside the range \[-1, 1\]"):
        ds.raw_actions(10)
    with pytest.raises(DataError, match=r"no camera 'top'"):
        WindowDataset(list(read_hdf5(path, LIBERO)),
                      WindowSpec("libero", "top", chunk=8, image_size=32))


def test_zarr_layout_errors(tmp_path):
    path = write_umi_zarr(tmp_path / "u.zarr")
    with pytest.raises(DataError, match=r"frames\['cam0'\]: missing data/rgb"):
        list(read_zarr(path, ZarrLayout(cameras={"cam0": "rgb"})))
    with pytest.raises(DataError, match="not a readable zarr group|missing group"):
        list(read_zarr(tmp_path / "nothing.zarr", UMI))


@pytest.mark.parametrize("use_videos", [True, False])
def test_lerobot_dataset_made_with_lerobot(tmp_path, use_videos):
    from cosmos3_robot.synthetic import write_lerobot_dataset

    from cosmos3_robot.data.sources.lerobot import LeRobotLayout, read_lerobot

    root = write_lerobot_dataset(tmp_path / "ds", use_videos=use_videos)
    layout = LeRobotLayout(cameras={"front": "observation.images.front"}, state={"state": "observation.state"},
                           commands={"actions": "action"})
    eps = list(read_lerobot("local/cosmos3_test", layout, root=str(root)))
    assert len(eps) == 2 and len(eps[0]) == 24
    assert eps[1].text == f"{INSTRUCTION} 1"
    np.testing.assert_allclose(np.diff(eps[0].timestamps), 0.1, atol=1e-6)
    f = eps[0].frames["front"]
    assert f.shape == (24, 32, 32, 3) and f.dtype == np.uint8
    assert f[..., 0].max() > 150  # the red square survives encoding
    ds = WindowDataset(eps, WindowSpec("libero", "front", chunk=8, image_size=32))
    assert ds[0]["actions"].shape == (8, 7)
    with pytest.raises(DataError, match=r"feature 'observation.images.top' \(for 'top'\) not in the dataset"):
        list(read_lerobot("local/cosmos3_test", LeRobotLayout(cameras={"top": "observation.images.top"}), root=str(root)))


ROSBAG = dict(cameras={"front": "/camera/image_raw"}, state={"joints": "/joint_states", "ee": "/ee_pose"},
              fps=10.0, text="wipe the table")


@pytest.mark.parametrize("mcap", [False, True])
def test_rosbag2_topics_align_to_the_grid(tmp_path, mcap):
    from cosmos3_robot.synthetic import write_rosbag

    from cosmos3_robot.data.sources.rosbag import RosbagLayout, read_rosbag

    path = write_rosbag(tmp_path / "bag", mcap=mcap)
    (ep,) = list(read_rosbag(path, RosbagLayout(**ROSBAG)))
    assert len(ep) == 31 and ep.text == "wipe the table"
    np.testing.assert_allclose(np.diff(ep.timestamps), 0.1, atol=1e-9)
    assert ep.frames["front"].shape == (31, 32, 32, 3) and ep.state["joints"].shape == (31, 8)
    # sample-and-hold: at grid time t the latest joint message at or before t (100 Hz: exactly t)
    t = 100.0 + ep.timestamps
    np.testing.assert_allclose(ep.state["joints"][:, 0], np.sin(t), atol=1e-6)
    np.testing.assert_allclose(ep.state["ee"][:, 0, 3], 0.1 * t, atol=1e-6)
    assert ep.state["ee"].shape == (31, 4, 4)
    # the poses feed a codec through a transform-free embodiment path
    from cosmos3_robot.transforms import Split, Squeeze

    ds = WindowDataset([ep], WindowSpec("single_arm_10d", "front", chunk=8, image_size=32),
                       transforms=(Split("joints", (("gripper", 7, 8),)), Squeeze("gripper")))
    a = ds.raw_actions(0)
    # 0.1 m/s along world x for 0.1 s, seen in the previous end-effector frame (yawed by 0.2 t rad)
    np.testing.assert_allclose(a[:, 0], 0.01 * np.cos(0.2 * t[:8]), atol=1e-6)
    np.testing.assert_allclose(a[:, 1], -0.01 * np.sin(0.2 * t[:8]), atol=1e-6)
    assert a.shape == (8, 10)


def test_rosbag2_gaps_and_missing_topics_are_errors(tmp_path):
    from cosmos3_robot.synthetic import write_rosbag

    from cosmos3_robot.data.sources.rosbag import RosbagLayout, read_rosbag

    path = write_rosbag(tmp_path / "bag", drop_images=(1.5, 2.2))
    with pytest.raises(DataError, match=r"bag:/camera/image_raw: no message within 0\.200 s before t=1\.700 s"):
        list(read_rosbag(path, RosbagLayout(**{**ROSBAG, "state": {"joints": "/joint_states"}})))
    with pytest.raises(DataError, match=r"topic\(s\) \['/wrist/image'\] not in the bag"):
        list(read_rosbag(path, RosbagLayout(cameras={"w": "/wrist/image"})))


def test_convert_hdf5_and_rosbag_to_lerobot_and_read_back(tmp_path):
    from cosmos3_robot.synthetic import write_rosbag

    from cosmos3_robot.cli import main
    from cosmos3_robot.data.sources.lerobot import LeRobotLayout, read_lerobot

    h5 = write_libero_hdf5(tmp_path / "demo.hdf5", n_demos=2, T=20)
    assert main(["convert", "--format", "hdf5", "--input", str(h5), "--layout", "libero",
                 "--out", str(tmp_path / "lr"), "--repo-id", "local/libero_conv", "--fps", "20"]) == 0
    layout = LeRobotLayout(cameras={"agentview": "observation.images.agentview"},
                           state={"ee_pos": "observation.ee_pos"}, commands={"actions": "action"})
    back = list(read_lerobot("local/libero_conv", layout, root=str(tmp_path / "lr")))
    orig = list(read_hdf5(h5, LIBERO))
    assert len(back) == 2 and back[0].text == INSTRUCTION
    np.testing.assert_allclose(back[1].commands["actions"], orig[1].commands["actions"], atol=1e-6)
    np.testing.assert_allclose(back[0].state["ee_pos"], orig[0].state["ee_pos"], atol=1e-6)
    err = np.abs(back[0].frames["agentview"].astype(int) - orig[0].frames["agentview"].astype(int)).mean()
    assert err < 12, err  # video compression, same upright picture
    bag = write_rosbag(tmp_path / "bag")
    import json

    assert main(["convert", "--from-rosbag", str(bag), "--layout", json.dumps(ROSBAG),
                 "--out", str(tmp_path / "lr2"), "--repo-id", "local/bag", "--fps", "10", "--images"]) == 0
    (ep,) = list(read_lerobot("local/bag", LeRobotLayout(cameras={"front": "observation.images.front"},
                                                         state={"ee": "observation.ee"}, commands={}),
                              root=str(tmp_path / "lr2")))
    assert ep.state["ee"].shape == (31, 4, 4) and ep.text == "wipe the table"
    assert main(["convert", "--format", "zarr", "--input", str(tmp_path / "none.zarr"), "--layout", "{}",
                 "--out", str(tmp_path / "lr3"), "--fps", "10"]) == 2
    assert main(["convert", "--out", str(tmp_path / "lr4"), "--fps", "10"]) == 2  # no input named


def test_counted_skip_when_asked(tmp_path):
    import h5py

    path = write_libero_hdf5(tmp_path / "mixed.hdf5", n_demos=3)
    with h5py.File(path, "a") as f:
        del f["data/demo_1/obs/ee_pos"]  # a broken demo
        a = f["data/demo_2/actions"][()]
        a[20, 6] = 5.0  # one bad command: windows covering step 20 are rejected by the codec
        f["data/demo_2/actions"][...] = a
    with pytest.raises(DataError, match="demo_1"):
        list(read_hdf5(path, LIBERO))
    skipped: list[str] = []
    eps = list(read_hdf5(path, LIBERO, skipped=skipped))
    assert [e.name.split(":")[1] for e in eps] == ["demo_0", "demo_2"]
    assert len(skipped) == 1 and "demo_1: state['ee_pos']: missing dataset" in skipped[0]
    ds = WindowDataset(eps, WindowSpec("libero", "agentview", chunk=8, image_size=32), skip_bad=True)
    assert len(ds.skipped) == 8 and all("demo_2" in s for s in ds.skipped)  # windows starting at 13..20
    assert len(ds) == 2 * 32 - 8
    for i in range(len(ds)):
        assert torch.isfinite(ds[i]["actions"]).all()


def test_corrupt_lerobot_video_names_episode_and_camera(tmp_path):
    from cosmos3_robot.synthetic import write_lerobot_dataset

    from cosmos3_robot.data.sources.lerobot import LeRobotLayout, read_lerobot

    root = write_lerobot_dataset(tmp_path / "ds", n_episodes=1)
    (video,) = list((root / "videos").rglob("*.mp4"))
    video.write_bytes(video.read_bytes()[: 200])  # truncated file
    layout = LeRobotLayout(cameras={"front": "observation.images.front"}, commands={"actions": "action"})
    with pytest.raises(DataError, match=r"episode_0: frames\['front'\]: video .* could not be decoded"):
        list(read_lerobot("local/cosmos3_test", layout, root=str(root)))


def test_end_padding_holds_the_last_step():
    """pad_end: an episode shorter than a chunk still gives windows; past the end the robot holds."""
    T = 6
    t = np.arange(T) / 10
    pos = np.c_[np.linspace(0, 0.1, T), np.zeros(T), np.full(T, 0.5)]
    state = np.c_[pos, np.tile([1.0, 0, 0, 0], (T, 1)), np.r_[np.zeros(3), np.ones(3)]].astype(np.float32)
    frames = np.stack([np.full((16, 16, 3), 20 * i, np.uint8) for i in range(T)])
    ep = Episode("short", t, {"front": frames}, {"state": state}, {}, "reach")
    spec = WindowSpec(embodiment="sim_arm", camera="front", fps=None, n_context=1, n_future=2, chunk=8,
                      image_size=16, pad_end=False)
    with pytest.raises(DataError, match="no window fits"):
        WindowDataset([ep], spec)
    ds = WindowDataset([ep], WindowSpec(**{**spec.__dict__, "pad_end": True}))
    assert [t for _, t in ds.index] == list(range(T - 1))  # every step with a real next transition
    last = ds.raw_actions(len(ds) - 1)  # from step T-2: one real move, then holding still
    assert last[0, 0] == pytest.approx(0.02, abs=1e-6) and np.allclose(last[1:, :3], 0, atol=1e-9)
    assert np.allclose(last[:, 9], 1.0)  # the gripper holds its last value
    sample = ds[len(ds) - 1]
    assert torch.equal(sample["video"][1], sample["video"][2])  # the last frame is held too
