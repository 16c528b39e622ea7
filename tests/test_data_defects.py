"""Corrupt data in each of the four formats gives an error naming the episode and the field,
never a traceback from inside a library or a silently changed trajectory; convert leaves
nothing half-written."""

from __future__ import annotations

import numpy as np
import pytest
from cosmos3_robot.synthetic import write_libero_hdf5, write_lerobot_dataset, write_umi_zarr

from cosmos3_robot.data import DataError
from cosmos3_robot.data.sources.zarr_store import ZarrLayout, read_zarr

UMI = ZarrLayout(cameras={"cam0": "camera0_rgb"}, state={"pos": "robot0_eef_pos"}, fps=10)


def _set_ends(path, ends) -> None:
    import zarr

    root = zarr.open_group(str(path), mode="a")
    del root["meta"]["episode_ends"]
    root["meta"].create_array("episode_ends", data=np.asarray(ends))


@pytest.mark.parametrize("ends, match", [
    (np.zeros(0, np.int64), r"episode_ends: expected \(E >= 1,\)"),
    (np.array([30, 40]), "has 60 rows but meta/episode_ends ends at 40 .the last rows belong to no episode"),
    (np.array([30.5, 60.0]), "expected whole row indices"),
])
def test_zarr_episode_ends_are_checked(tmp_path, ends, match):
    path = write_umi_zarr(tmp_path / "u.zarr", n_episodes=2, T=30)
    _set_ends(path, ends)
    with pytest.raises(DataError, match=match):
        list(read_zarr(path, UMI))


def test_zarr_whole_float_ends_are_read(tmp_path):
    path = write_umi_zarr(tmp_path / "u.zarr", n_episodes=2, T=30)
    _set_ends(path, np.array([30.0, 60.0]))
    assert [len(e) for e in read_zarr(path, UMI)] == [30, 30]


def test_convert_names_the_episode_and_leaves_no_partial_dataset(tmp_path):
    import h5py

    from cosmos3_robot.cli import main

    h5 = write_libero_hdf5(tmp_path / "demo.hdf5", n_demos=3, T=20)
    with h5py.File(h5, "a") as f:
        a = f["data/demo_1/actions"][()]
        del f["data/demo_1/actions"]
        f["data/demo_1"].create_dataset("actions", data=a[:, :5])  # 5-wide actions
    out = tmp_path / "lr"
    args = ["convert", "--format", "hdf5", "--input", str(h5), "--layout", "libero", "--out", str(out),
            "--repo-id", "local/x", "--fps", "20", "--images"]
    from cosmos3_robot.data.convert import to_lerobot
    from cosmos3_robot.data.sources.hdf5 import LIBERO, read_hdf5

    with pytest.raises(DataError, match=r"demo_1: commands\['actions'\] has per-step shape \(5,\); the first "
                                        r"episode's is \(7,\)"):
        to_lerobot(read_hdf5(h5, LIBERO), out, "local/x", 20, use_videos=False)
    assert not out.exists() and not list(tmp_path.glob(".lr.partial-*"))
    assert main(args) == 2  # the CLI says it and exits 2, twice the same (no FileExistsError)
    assert main(args) == 2 and not out.exists()
    good = write_libero_hdf5(tmp_path / "good.hdf5", n_demos=1, T=20)
    assert main([*args[:4], str(good), *args[5:]]) == 0 and (out / "meta" / "info.json").exists()
    with pytest.raises(DataError, match="already exists"):
        to_lerobot(read_hdf5(good, LIBERO), out, "local/x", 20, use_videos=False)


def test_rosbag_stamps_running_backwards_are_refused_unless_sorting_is_asked(tmp_path):
    from cosmos3_robot.synthetic import write_rosbag

    from cosmos3_robot.data.sources.rosbag import RosbagLayout, read_rosbag

    layout = dict(cameras={"front": "/camera/image_raw"}, state={"joints": "/joint_states"}, fps=10.0)
    bag = write_rosbag(tmp_path / "bag", reverse_stamps="/joint_states")
    with pytest.raises(DataError, match="/joint_states: stamps run backwards"):
        list(read_rosbag(bag, RosbagLayout(**layout)))
    (ep,) = list(read_rosbag(bag, RosbagLayout(**layout, sort_stamps=True)))
    assert len(ep) > 10


def _parquet_files(root):
    return sorted((root / "data").rglob("*.parquet"))


def test_lerobot_missing_column_null_value_and_deleted_video_are_named(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from cosmos3_robot.data.sources.lerobot import LeRobotLayout, read_lerobot

    layout = LeRobotLayout(cameras={"front": "observation.images.front"}, state={"state": "observation.state"},
                           commands={"actions": "action"})
    root = write_lerobot_dataset(tmp_path / "a", n_episodes=1, use_videos=False)
    for p in _parquet_files(root):
        t = pq.read_table(p)
        pq.write_table(t.drop(["action"]), p)
    with pytest.raises(DataError, match=r"episode_0: commands\['actions'\] \(action\): no values \(the column is missing"):
        list(read_lerobot("local/cosmos3_test", layout, root=str(root)))

    root = write_lerobot_dataset(tmp_path / "b", n_episodes=1, use_videos=False)
    for p in _parquet_files(root):
        t = pq.read_table(p)
        col = t.column("action").to_pylist()
        col[3] = None
        i = t.schema.get_field_index("action")
        pq.write_table(t.set_column(i, pa.field("action", t.schema.field("action").type, nullable=True),
                                    pa.array(col, type=t.schema.field("action").type)), p)
    with pytest.raises(DataError, match=r"episode_0: commands\['actions'\] \(action\): null values at frame\(s\) \[3\]"):
        list(read_lerobot("local/cosmos3_test", layout, root=str(root)))

    root = write_lerobot_dataset(tmp_path / "c", n_episodes=1)
    (video,) = list((root / "videos").rglob("*.mp4"))
    video.unlink()
    with pytest.raises(DataError, match=rf"missing: .*{video.name}"):
        list(read_lerobot("local/cosmos3_test", layout, root=str(root)))
