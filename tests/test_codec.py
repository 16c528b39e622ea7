"""Embodiment codecs: exact round trips for every built-in layout, conventions, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from cosmos3_robot.synthetic import max_episode_error, random_episode, random_pose_trajectory
from scipy.spatial.transform import Rotation

from cosmos3_robot import embodiments
from cosmos3_robot import geometry as geo
from cosmos3_robot.codec import ActionCodec, GripperBlock, PointsBlock, PoseBlock

BUILTIN_WIDTHS = {
    "single_arm": 19, "single_arm_10d": 10, "dual_arm": 20, "humanoid": 57, "agibot": 29,
    "av": 9, "camera": 9, "libero": 7, "libero_10d": 10, "droid": 10,
}


@pytest.mark.parametrize("name", sorted(BUILTIN_WIDTHS))
def test_round_trip_float64_long_trajectories(name, rng):
    emb = embodiments.get(name)
    assert emb.width == BUILTIN_WIDTHS[name]
    assert len(emb.dim_names()) == len(emb.units()) == emb.width
    T = 1000
    ep = random_episode(emb.codec, T, rng)
    x = emb.encode(ep)
    assert x.shape == (T - 1, emb.width) and x.dtype == np.float64
    back = emb.decode(x, emb.start_state(ep))
    assert max_episode_error(ep, back) < 1e-5


@pytest.mark.parametrize("name", ["single_arm", "humanoid", "dual_arm"])
def test_round_trip_batched_torch(name, rng):
    emb = embodiments.get(name)
    ep = {k: torch.from_numpy(v) for k, v in random_episode(emb.codec, 50, rng, batch=(3,)).items()}
    x = emb.encode(ep)
    assert isinstance(x, torch.Tensor) and x.shape == (3, 49, emb.width)
    back = emb.decode(x, emb.start_state(ep))
    assert max_episode_error({k: v.numpy() for k, v in ep.items()}, {k: v.numpy() for k, v in back.items()}) < 1e-9


def test_float32_integration_drift_is_small_and_reported(rng, record_property, capsys):
    """Decoding integrates deltas; in float32 rounding accumulates. Report it, and bound it."""
    emb = embodiments.get("single_arm_10d")
    T = 1000
    ep = random_episode(emb.codec, T, rng)
    x32 = emb.encode(ep).astype(np.float32)
    start32 = {k: np.asarray(v, np.float32) for k, v in emb.start_state(ep).items()}
    back = emb.decode(x32, start32)
    pos_err = np.abs(back["ee"][:, :3, 3] - ep["ee"][:, :3, 3]).max(-1)
    rot_err = geo.rotation_angle_between(back["ee"][:, :3, :3].astype(np.float64), ep["ee"][:, :3, :3])
    record_property("float32_drift_pos_m", float(pos_err.max()))
    record_property("float32_drift_rot_rad", float(rot_err.max()))
    with capsys.disabled():
        print(f"\n[float32 drift over {T} steps] position {pos_err.max():.2e} m, rotation {rot_err.max():.2e} rad")
    assert pos_err.max() < 1e-3 and rot_err.max() < 1e-3
    assert pos_err[-1] > pos_err[10], "drift should grow with the horizon (else the test measures nothing)"


def test_pose_block_encodes_relative_frame_wise_delta_in_columns_6d(rng):
    emb = embodiments.get("single_arm_10d")
    ep = random_episode(emb.codec, 5, rng)
    x = emb.encode(ep)
    T = ep["ee"]
    d = np.linalg.inv(T[1]) @ T[2]  # expressed in the previous frame
    np.testing.assert_allclose(x[1, :3], d[:3, 3], atol=1e-12)
    np.testing.assert_allclose(x[1, 3:6], d[:3, 0], atol=1e-12)  # first column
    np.testing.assert_allclose(x[1, 6:9], d[:3, 1], atol=1e-12)  # second column
    np.testing.assert_allclose(x[1, 9], ep["gripper"][2])  # absolute gripper at the step's end
    # A robot standing still encodes as the identity: [0,0,0, 1,0,0, 0,1,0].
    still = {"ee": np.repeat(T[:1], 4, 0), "gripper": np.zeros(4)}
    np.testing.assert_allclose(emb.encode(still)[:, :9], np.tile([0, 0, 0, 1, 0, 0, 0, 1, 0], (3, 1)), atol=1e-12)


def test_anchored_mode_round_trip(rng):
    codec = ActionCodec((PoseBlock("ee", relative="anchored"), GripperBlock("g")))
    ep = random_episode(codec, 200, rng)
    x = codec.encode(ep)
    np.testing.assert_allclose(x[7, :3], (np.linalg.inv(ep["ee"][0]) @ ep["ee"][8])[:3, 3], atol=1e-12)
    assert max_episode_error(ep, codec.decode(x, codec.start_state(ep))) < 1e-9


def test_absolute_mode_encodes_the_poses_themselves_and_decodes_without_the_start(rng):
    codec = ActionCodec((PoseBlock("ee", relative="absolute"), GripperBlock("g")))
    ep = random_episode(codec, 50, rng)
    x = codec.encode(ep)
    T = ep["ee"]
    assert x.shape == (49, 10)
    np.testing.assert_allclose(x[6, :3], T[7][:3, 3], atol=1e-12)  # step i is the pose at i + 1
    np.testing.assert_allclose(x[6, 3:9], np.r_[T[7][:3, 0], T[7][:3, 1]], atol=1e-12)
    assert max_episode_error(ep, codec.decode(x, codec.start_state(ep))) < 1e-9
    # The start only fills step 0: any other start decodes the same targets.
    other = codec.start_state(random_episode(codec, 2, rng))
    np.testing.assert_allclose(codec.decode(x, other)["ee"][1:], T[1:], atol=1e-9)
    # In a parent's frame: the local pose inv(T_parent) @ T, and back.
    nested = ActionCodec((PoseBlock("ego"), PoseBlock("ee", parent="ego", relative="absolute")))
    ep2 = random_episode(nested, 6, rng)
    local = np.linalg.inv(ep2["ego"]) @ ep2["ee"]
    np.testing.assert_allclose(nested.encode(ep2)[2, 9:12], local[3][:3, 3], atol=1e-12)
    assert max_episode_error(ep2, nested.decode(nested.encode(ep2), nested.start_state(ep2))) < 1e-9
    with pytest.raises(ValueError, match="relative must be 'framewise', 'anchored' or 'absolute'"):
        PoseBlock("ee", relative="world")


def test_single_arm_19d_end_effector_is_expressed_in_the_ego_frame(rng):
    emb = embodiments.get("single_arm")
    ep = random_episode(emb.codec, 4, rng)
    x = emb.encode(ep)
    local = np.linalg.inv(ep["ego"]) @ ep["ee"]
    d = np.linalg.inv(local[0]) @ local[1]
    np.testing.assert_allclose(x[0, 9:12], d[:3, 3], atol=1e-12)
    # A fixed camera: no ego given, the adapter fills the identity and the ego block is identity deltas.
    raw = {"ee": ep["ee"], "gripper": ep["gripper"]}
    x_fixed = emb.encode_raw(raw)
    np.testing.assert_allclose(x_fixed[:, :9], np.tile([0, 0, 0, 1, 0, 0, 0, 1, 0], (3, 1)), atol=1e-12)
    np.testing.assert_allclose(x_fixed[:, 9:18], emb.encode(emb.from_raw(raw))[:, 9:18])


def test_humanoid_fingertips_are_in_that_steps_wrist_frame(rng):
    emb = embodiments.get("humanoid")
    ep = random_episode(emb.codec, 6, rng)
    x = emb.encode(ep)
    sl = emb.codec.slices["left_fingertips"]
    wrist = ep["left_wrist"][3]
    local = (np.linalg.inv(wrist) @ np.c_[ep["left_fingertips"][3], np.ones(5)].T).T[:, :3]
    np.testing.assert_allclose(x[2, sl].reshape(5, 3), local, atol=1e-12)
    assert emb.dim_names()[sl.start:sl.start + 3] == ["left_fingertips.thumb.x", "left_fingertips.thumb.y", "left_fingertips.thumb.z"]
    assert [b.name for b in emb.codec.blocks] == ["ego", "right_wrist", "right_fingertips", "left_wrist", "left_fingertips"]


def test_droid_applies_rz_minus_90_and_round_trips_raw(rng):
    emb = embodiments.get("droid")
    T = 30
    poses = random_pose_trajectory(T, rng)
    rpy = Rotation.from_matrix(poses[:, :3, :3]).as_euler("xyz")
    raw = {"cartesian_position": np.c_[poses[:, :3, 3], rpy], "gripper_position": rng.uniform(0, 1, (T, 1))}
    ep = emb.from_raw(raw)
    Rz = Rotation.from_euler("z", -90, degrees=True).as_matrix()
    np.testing.assert_allclose(ep["ee"][:, :3, :3], poses[:, :3, :3] @ Rz, atol=1e-12)
    x = emb.encode(ep)
    back = emb.to_raw(emb.decode(x, emb.start_state(ep)))
    assert set(back) == set(raw)
    np.testing.assert_allclose(back["gripper_position"], raw["gripper_position"], atol=1e-12)
    np.testing.assert_allclose(back["cartesian_position"][:, :3], raw["cartesian_position"][:, :3], atol=1e-10)
    # Euler angles compare as rotations (wrap-around).
    R_back = Rotation.from_euler("xyz", back["cartesian_position"][:, 3:])
    assert np.max((R_back.inv() * Rotation.from_euler("xyz", rpy)).magnitude()) < 1e-9


def test_droid_gripper_flip_option(rng):
    from cosmos3_robot.embodiments.droid import make_droid

    raw = {"cartesian_position": np.zeros((3, 6)), "gripper_position": np.array([[0.0], [0.25], [1.0]])}
    flipped = make_droid(flip_gripper=True).from_raw(raw)
    np.testing.assert_allclose(flipped["gripper"], [1.0, 0.75, 0.0])
    np.testing.assert_allclose(make_droid(flip_gripper=True).to_raw(flipped)["gripper_position"], raw["gripper_position"])


def test_libero_native_and_rot6d_forms(rng):
    native = embodiments.get("libero")
    rot6d = embodiments.get("libero_10d")
    actions = np.c_[rng.uniform(-1, 1, (40, 6)), rng.choice([-1.0, 1.0], 40)]
    raw = {"actions": actions}
    x7 = native.encode_raw(raw)
    np.testing.assert_array_equal(x7, actions)
    x10 = rot6d.encode_raw(raw)
    assert x10.shape == (40, 10)
    np.testing.assert_allclose(x10[:, :3], actions[:, :3] * 0.05)  # metres
    R = Rotation.from_rotvec(actions[:, 3:6] * 0.5).as_matrix()  # radians
    np.testing.assert_allclose(x10[:, 3:9], np.c_[R[:, :, 0], R[:, :, 1]], atol=1e-12)
    back = rot6d.to_raw(rot6d.decode(x10))
    np.testing.assert_allclose(back["actions"], actions, atol=1e-12)
    with pytest.raises(ValueError, match=r"block 'gripper'.*outside the range \[-1, 1\]"):
        native.encode_raw({"actions": np.c_[actions[:, :6], np.full(40, 2.0)]})
    with pytest.raises(ValueError, match=r"block 'delta_ee'.*outside \[-1, 1\]"):
        rot6d.encode_raw({"actions": np.c_[actions[:, :6] * 3, actions[:, 6]]})


def test_av_from_waypoints(rng):
    from cosmos3_robot.embodiments.av import from_waypoints

    emb = embodiments.get("av")
    t = np.linspace(0, 6, 61)
    xy = np.c_[10 * t, np.sin(t)]
    heading = np.arctan2(np.cos(t), 10 * np.ones_like(t))
    ep = from_waypoints(xy, heading)
    x = emb.encode(ep)
    assert x.shape == (60, 9)
    assert np.all(x[:, 0] > 0.9), "moving forward shows as +x in the previous ego frame"
    np.testing.assert_allclose(x[:, 2], 0, atol=1e-12)
    back = emb.to_raw(emb.decode(x, emb.start_state(ep)))
    np.testing.assert_allclose(back["ego"], ep["ego"], atol=1e-10)


# ---- bad input ------------------------------------------------------------------------------
def _arm_episode(rng, T=10):
    emb = embodiments.get("single_arm_10d")
    return emb, random_episode(emb.codec, T, rng)


def test_bad_shapes_name_the_block(rng):
    emb, ep = _arm_episode(rng)
    with pytest.raises(ValueError, match=r"block 'ee' \(PoseBlock\): expected shape \(\.\.\., T, 4, 4\)"):
        emb.encode({**ep, "ee": ep["ee"][:, :3, :3]})
    with pytest.raises(ValueError, match=r"missing block\(s\) \['gripper'\]"):
        emb.encode({"ee": ep["ee"]})
    with pytest.raises(ValueError, match="disagree on the number of steps"):
        emb.encode({**ep, "gripper": ep["gripper"][:-1]})
    with pytest.raises(ValueError, match="at least 2 steps"):
        emb.encode({"ee": ep["ee"][:1], "gripper": ep["gripper"][:1]})
    with pytest.raises(ValueError, match=r"expected shape \(\.\.\., T-1, 10\)"):
        emb.decode(np.zeros((5, 9)), emb.start_state(ep))
    with pytest.raises(ValueError, match="start state: required"):
        emb.decode(np.zeros((5, 10)))
    with pytest.raises(ValueError, match="numeric array"):
        emb.encode({**ep, "gripper": np.array(["a"] * 10)})


def test_non_finite_values_are_rejected(rng):
    emb, ep = _arm_episode(rng)
    bad = ep["ee"].copy()
    bad[3, 0, 3] = np.nan
    with pytest.raises(ValueError, match=r"block 'ee'.*non-finite value.*index \(3, 0, 3\)"):
        emb.encode({**ep, "ee": bad})
    g = ep["gripper"].copy()
    g[2] = np.inf
    with pytest.raises(ValueError, match=r"block 'gripper'.*non-finite"):
        emb.encode({**ep, "gripper": g})
    x = emb.encode(ep)
    x[1, 4] = np.nan
    with pytest.raises(ValueError, match=r"block 'ee'.*pseudo-actions: non-finite"):
        emb.decode(x, emb.start_state(ep))


def test_non_rotations_are_rejected(rng):
    emb, ep = _arm_episode(rng)
    for _kind, M in {
        "reflection": np.diag([1.0, 1.0, -1.0]),
        "scaled": np.eye(3) * 1.01,
        "sheared": np.array([[1, 0.05, 0], [0, 1, 0], [0, 0, 1.0]]),
    }.items():
        bad = ep["ee"].copy()
        bad[4, :3, :3] = bad[4, :3, :3] @ M
        with pytest.raises(ValueError, match=r"block 'ee'.*index \(4,\) is not a proper rotation"):
            emb.encode({**ep, "ee": bad})
    bad = ep["ee"].copy()
    bad[2, 3, 0] = 0.5
    with pytest.raises(ValueError, match=r"last row of each pose must be \[0, 0, 0, 1\]"):
        emb.encode({**ep, "ee": bad})
    start = emb.start_state(ep)
    with pytest.raises(ValueError, match="start state.*block 'ee'.*not a proper rotation"):
        emb.decode(emb.encode(ep), {**start, "ee": start["ee"] @ np.diag([1, 1, -1, 1.0])})


def test_gripper_out_of_range_and_degenerate_6d(rng):
    emb, ep = _arm_episode(rng)
    with pytest.raises(ValueError, match=r"block 'gripper'.*value 1\.5 at index \(7,\) is outside the range \[0, 1\]"):
        emb.encode({**ep, "gripper": np.where(np.arange(10) == 7, 1.5, ep["gripper"])})
    x = emb.encode(ep)
    x[2, 3:9] = [1, 0, 0, 2, 0, 0]  # parallel columns: no rotation
    with pytest.raises(ValueError, match=r"block 'ee'.*6D rotation at index \(2,\) is degenerate"):
        emb.decode(x, emb.start_state(ep))


def test_layout_rules():
    with pytest.raises(ValueError, match="must come earlier"):
        ActionCodec((PoseBlock("ee", parent="ego"), PoseBlock("ego")))
    with pytest.raises(ValueError, match="used twice"):
        ActionCodec((GripperBlock("g"), GripperBlock("g")))
    with pytest.raises(ValueError, match="must come earlier"):
        ActionCodec((GripperBlock("g"), PointsBlock("tips", frame="g")))
    codec = embodiments.get("single_arm").codec
    mask = codec.rotation_mask()
    assert mask.sum() == 12 and not mask[[0, 1, 2, 9, 10, 11, 18]].any()


def test_proprioception_is_position_6d_rotation_and_gripper_in_layout_order():
    """The model's state input: each state block at one step, a pose as its translation and
    the first two columns of its rotation (checked against scipy), a gripper as it is."""
    emb = embodiments.get("single_arm_10d")
    rot = Rotation.from_euler("xyz", [0.3, -0.2, 1.1])
    T = np.eye(4)
    T[:3, :3], T[:3, 3] = rot.as_matrix(), [0.4, -0.1, 0.25]
    x = emb.codec.proprio({"ee": T, "gripper": np.array(0.7)})
    R = rot.as_matrix()
    assert x.shape == (10,)
    np.testing.assert_allclose(x, np.r_[0.4, -0.1, 0.25, R[:, 0], R[:, 1], 0.7], atol=1e-12)
    assert embodiments.get("libero").codec.proprio({}).shape == (0,)  # command-only: nothing to read
    with pytest.raises(ValueError, match="start state: missing block"):
        emb.codec.proprio({"ee": T})


@pytest.mark.parametrize("name", ["single_arm", "single_arm_10d", "humanoid", "sim_arm", "droid", "libero"])
def test_proprio_rotation_mask_marks_the_6d_entries_of_the_state_input(name, rng):
    codec = embodiments.get(name).codec
    ep = random_episode(codec, 3, rng)
    x = codec.proprio(codec.start_state(ep))
    mask = codec.proprio_rotation_mask()
    assert mask.shape == x.shape and mask.dtype == bool
    pose_blocks = [b for b in codec.state_blocks if isinstance(b, PoseBlock)]
    assert int(mask.sum()) == 6 * len(pose_blocks)
    # The marked entries are the first two columns of the poses' rotations.
    first = codec.state_blocks.index(pose_blocks[0]) if pose_blocks else None
    if first is not None:
        off = sum(b.width for b in codec.state_blocks[:first])
        R = np.asarray(codec.start_state(ep)[pose_blocks[0].name])[..., :3, :3]
        np.testing.assert_allclose(x[mask][:6], np.r_[R[:, 0], R[:, 1]], atol=1e-12)
        assert mask[off + 3: off + 9].all() and not mask[off: off + 3].any()
