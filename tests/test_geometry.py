"""Geometry against scipy's Rotation (the reference implementation), plus property tests."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy.spatial.transform import Rotation

from cosmos3_robot import geometry as geo

N = 500


@pytest.fixture
def rots(rng) -> Rotation:
    return Rotation.random(N, random_state=1)


def near_pi_rotations(n: int, rng: np.random.Generator) -> Rotation:
    axes = rng.normal(size=(n, 3))
    axes /= np.linalg.norm(axes, axis=1, keepdims=True)
    angles = math.pi - np.concatenate([[0.0, 1e-12, 1e-9, 1e-7, 1e-5], rng.uniform(0, 1e-3, n - 5)])
    return Rotation.from_rotvec(axes * angles[:, None])


def quat_close(q1: np.ndarray, q2: np.ndarray, tol: float = 1e-9) -> bool:
    """Equal as rotations: q and -q are the same rotation."""
    return bool(np.all(np.abs(np.abs(np.sum(q1 * q2, -1)) - 1) < tol))


# ---- quaternions ----------------------------------------------------------------------
def test_quaternion_orders_match_scipy(rots):
    R = rots.as_matrix()
    q_xyzw = geo.matrix_to_quat(R, order="xyzw")
    q_wxyz = geo.matrix_to_quat(R, order="wxyz")
    ref = rots.as_quat()  # scipy is scalar-last (xyzw)
    assert quat_close(q_xyzw, ref, 1e-12)
    np.testing.assert_allclose(q_wxyz, np.roll(q_xyzw, 1, axis=-1))
    assert np.all(q_wxyz[:, 0] >= 0), "canonical form has a non-negative scalar part"
    np.testing.assert_allclose(geo.quat_to_matrix(ref, order="xyzw"), R, atol=1e-12)
    np.testing.assert_allclose(geo.quat_to_matrix(q_wxyz, order="wxyz"), R, atol=1e-12)
    np.testing.assert_allclose(geo.quat_convert(ref, src="xyzw", dst="wxyz"), np.roll(ref, 1, -1))


def test_quaternion_order_must_be_named():
    with pytest.raises(TypeError):
        geo.quat_to_matrix(np.array([1.0, 0, 0, 0]))  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="quaternion order"):
        geo.quat_to_matrix(np.array([1.0, 0, 0, 0]), order="wzyx")  # type: ignore[arg-type]


def test_matrix_to_quat_near_180_degrees(rng):
    rots = near_pi_rotations(200, rng)
    q = geo.matrix_to_quat(rots.as_matrix(), order="xyzw")
    assert quat_close(q, rots.as_quat(), 1e-10)


def test_quat_multiply_matches_scipy(rots):
    a, b = rots[: N // 2], rots[N // 2:]
    q = geo.quat_multiply(a.as_quat(), b.as_quat(), order="xyzw")
    assert quat_close(q, (a * b).as_quat(), 1e-12)


# ---- axis-angle -------------------------------------------------------------------------
def test_axis_angle_matches_scipy(rots, rng):
    rv = rots.as_rotvec()
    np.testing.assert_allclose(geo.axis_angle_to_matrix(rv), rots.as_matrix(), atol=1e-12)
    np.testing.assert_allclose(geo.matrix_to_axis_angle(rots.as_matrix()), rv, atol=1e-10)
    small = rng.normal(size=(50, 3)) * np.logspace(-12, -3, 50)[:, None]
    np.testing.assert_allclose(geo.axis_angle_to_matrix(small), Rotation.from_rotvec(small).as_matrix(), atol=1e-15)
    np.testing.assert_allclose(geo.matrix_to_axis_angle(Rotation.from_rotvec(small).as_matrix()), small, atol=1e-14)
    np.testing.assert_allclose(geo.axis_angle_to_quat(rv, order="xyzw"), Rotation.from_rotvec(rv).as_quat(canonical=True), atol=1e-12)
    np.testing.assert_allclose(geo.quat_to_axis_angle(rots.as_quat(), order="xyzw"), rv, atol=1e-10)


def test_axis_angle_near_180_degrees(rng):
    rots = near_pi_rotations(200, rng)
    aa = geo.matrix_to_axis_angle(rots.as_matrix())
    # Near pi the vector's sign is ambiguous (aa and -aa are both ~pi rotations): compare rotations.
    back = Rotation.from_rotvec(aa)
    assert np.max((back.inv() * rots).magnitude()) < 1e-8
    np.testing.assert_allclose(np.linalg.norm(aa, axis=-1), rots.magnitude(), atol=1e-8)


# ---- Euler --------------------------------------------------------------------------------
ALL_SEQUENCES = [
    "".join(p) for p in itertools.product("xyz", repeat=3) if p[0] != p[1] and p[1] != p[2]
]


@pytest.mark.parametrize("seq", ALL_SEQUENCES + [s.upper() for s in ALL_SEQUENCES])
def test_euler_matches_scipy(seq, rots):
    R = rots.as_matrix()
    ang = rots.as_euler(seq)
    np.testing.assert_allclose(geo.euler_to_matrix(ang, seq), R, atol=1e-12)
    ours = geo.matrix_to_euler(R, seq)
    np.testing.assert_allclose(ours, ang, atol=1e-9)


@pytest.mark.parametrize("seq", ["xyz", "ZYX", "zxz", "XYX"])
def test_euler_gimbal_lock_reproduces_matrix(seq, rng):
    proper = seq[0].lower() == seq[2].lower()
    mids = [0.0, math.pi] if proper else [math.pi / 2, -math.pi / 2]
    for mid in mids:
        ang = np.stack([rng.uniform(-3, 3, 20), np.full(20, mid), rng.uniform(-3, 3, 20)], -1)
        R = geo.euler_to_matrix(ang, seq)
        back = geo.euler_to_matrix(geo.matrix_to_euler(R, seq), seq)
        np.testing.assert_allclose(back, R, atol=1e-6)


def test_euler_convention_is_validated():
    for bad in ["xxy", "xYz", "abc", "xy", "xyzx"]:
        with pytest.raises(ValueError, match="Euler convention"):
            geo.euler_to_matrix(np.zeros(3), bad)


def test_droid_roll_pitch_yaw_is_extrinsic_xyz():
    """DROID stores extrinsic roll-pitch-yaw: R = Rz(yaw) Ry(pitch) Rx(roll)."""
    r, p, y = 0.3, -0.2, 1.1
    R = geo.euler_to_matrix(np.array([r, p, y]), "xyz")
    Rx = Rotation.from_euler("x", r).as_matrix()
    Ry = Rotation.from_euler("y", p).as_matrix()
    Rz = Rotation.from_euler("z", y).as_matrix()
    np.testing.assert_allclose(R, Rz @ Ry @ Rx, atol=1e-12)


# ---- 6D ---------------------------------------------------------------------------------
def test_rot6d_is_first_two_columns(rots):
    R = rots.as_matrix()
    d6 = geo.matrix_to_rot6d(R)
    np.testing.assert_array_equal(d6[:, :3], R[:, :, 0])
    np.testing.assert_array_equal(d6[:, 3:], R[:, :, 1])
    np.testing.assert_array_equal(geo.matrix_to_rot6d(np.eye(3)), [1, 0, 0, 0, 1, 0])
    np.testing.assert_allclose(geo.rot6d_to_matrix(d6), R, atol=1e-12)
    assert geo.ROT6D_CONVENTION == "columns"


def test_rot6d_rows_convention_is_the_transpose(rots):
    """pytorch3d's 6D (first two rows) is the columns convention applied to R^T."""
    R = rots.as_matrix()
    rows = geo.matrix_to_rot6d(R, "rows")
    np.testing.assert_array_equal(rows[:, :3], R[:, 0, :])
    np.testing.assert_array_equal(rows[:, 3:], R[:, 1, :])
    np.testing.assert_array_equal(rows, geo.matrix_to_rot6d(np.swapaxes(R, -1, -2)))
    np.testing.assert_allclose(geo.rot6d_to_matrix(rows, "rows"), R, atol=1e-12)
    # The same numbers read with the wrong convention give R^T, not R.
    np.testing.assert_allclose(geo.rot6d_to_matrix(rows, "columns"), np.swapaxes(R, -1, -2), atol=1e-12)
    assert not np.allclose(geo.rot6d_to_matrix(rows, "columns"), R)


def test_rot6d_decoding_gram_schmidt(rng):
    x = rng.normal(size=(1000, 6))
    R = geo.rot6d_to_matrix(x)
    assert np.max(geo.rotation_error(R)) < 1e-12
    a1 = x[:, :3] / np.linalg.norm(x[:, :3], axis=1, keepdims=True)
    np.testing.assert_allclose(R[:, :, 0], a1, atol=1e-12)  # first column keeps its direction
    # second column lies in span(a1, a2) on the a2 side
    assert np.all(np.sum(R[:, :, 1] * x[:, 3:], 1) > 0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_rot6d_near_singular_still_gives_proper_rotations(dtype, rng):
    a1 = rng.normal(size=(500, 3))
    # float32 resolves directions to ~1e-7: 1e-4 is near-singular there, 1e-8 is for float64.
    for eps in ((1e-2, 1e-3, 1e-4) if dtype == np.float32 else (1e-2, 1e-5, 1e-8)):
        a2 = a1 * rng.uniform(0.5, 2, (500, 1)) + rng.normal(size=(500, 3)) * eps
        x = np.concatenate([a1, a2], 1).astype(dtype)
        R = geo.rot6d_to_matrix(x)
        assert R.dtype == dtype
        # Whatever is representably non-parallel in this dtype decodes to a proper rotation.
        defined = geo.rot6d_degeneracy(x) > (1e-6 if dtype == np.float32 else 1e-12)
        assert defined.mean() > 0.99, eps
        tol = 1e-5 if dtype == np.float32 else 1e-12
        assert np.max(geo.rotation_error(R)[defined]) < tol, eps
    assert geo.rot6d_degeneracy(np.array([1.0, 0, 0, 2, 0, 0])) == 0
    assert geo.rot6d_degeneracy(np.zeros(6)) == 0


# ---- SE(3) ---------------------------------------------------------------------------------
def test_pose_inverse_compose_and_points(rots, rng):
    t = rng.normal(size=(N, 3))
    T = geo.make_pose(rots.as_matrix(), t)
    np.testing.assert_allclose(T @ geo.pose_inverse(T), np.broadcast_to(np.eye(4), T.shape), atol=1e-12)
    np.testing.assert_allclose(geo.pose_inverse(T), np.linalg.inv(T), atol=1e-10)
    p = rng.normal(size=(N, 7, 3))
    ref = rots.as_matrix()[:, None] @ p[..., None]
    np.testing.assert_allclose(geo.transform_points(T, p), ref[..., 0] + t[:, None], atol=1e-12)
    np.testing.assert_allclose(geo.pose_from_9d(geo.pose_to_9d(T)), T, atol=1e-12)


def test_relative_deltas_and_integration(rng):
    from cosmos3_robot.synthetic import random_pose_trajectory

    T = random_pose_trajectory(300, rng, batch=(3,))
    for mode in ("framewise", "anchored"):
        d = geo.relative_poses(T, mode)
        assert d.shape == (3, 299, 4, 4)
        if mode == "framewise":
            np.testing.assert_allclose(d[:, 5], np.linalg.inv(T[:, 5]) @ T[:, 6], atol=1e-10)
        else:
            np.testing.assert_allclose(d[:, 5], np.linalg.inv(T[:, 0]) @ T[:, 6], atol=1e-10)
        back = geo.integrate_relative(T[:, 0], d, mode)
        assert np.max(np.abs(back - T)) < 1e-9
    with pytest.raises(ValueError, match="relative mode"):
        geo.relative_poses(T, "absolute")  # type: ignore[arg-type]


def test_planar_poses():
    T = geo.pose_from_planar(np.array([[1.0, 2.0]]), np.array([math.pi / 2]))
    np.testing.assert_allclose(T[0, :3, 3], [1, 2, 0])
    np.testing.assert_allclose(T[0, :3, 0], [0, 1, 0], atol=1e-15)  # forward axis now points +y


# ---- numpy / torch / autograd ------------------------------------------------------------
def test_numpy_and_torch_agree_and_keep_dtype(rots):
    R = rots.as_matrix()
    for fn in (geo.matrix_to_rot6d, geo.matrix_to_axis_angle, lambda r: geo.matrix_to_quat(r, order="wxyz"),
               lambda r: geo.matrix_to_euler(r, "ZYX")):
        out_np = fn(R)
        out_t = fn(torch.from_numpy(R))
        assert isinstance(out_np, np.ndarray) and isinstance(out_t, torch.Tensor)
        np.testing.assert_allclose(out_np, out_t.numpy(), atol=1e-12)
    assert geo.matrix_to_rot6d(R.astype(np.float32)).dtype == np.float32
    assert geo.rot6d_to_matrix(torch.zeros(2, 6, dtype=torch.float32) + 1).dtype == torch.float32


def test_gradients_are_correct_and_finite():
    torch.manual_seed(0)
    x6 = torch.randn(4, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(geo.rot6d_to_matrix, (x6,))
    aa = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(geo.axis_angle_to_matrix, (aa,))
    q = torch.randn(4, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda v: geo.quat_to_matrix(v, order="wxyz"), (q,))
    R = torch.from_numpy(Rotation.random(4, random_state=3).as_matrix()).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda m: geo.matrix_to_quat(m, order="wxyz"), (R,))
    # At the identity (zero rotation) the gradients stay finite.
    zero = torch.zeros(2, 3, dtype=torch.float64, requires_grad=True)
    geo.axis_angle_to_matrix(zero).sum().backward()
    assert torch.isfinite(zero.grad).all()
    zero_q = torch.tensor([[1.0, 0, 0, 0]], dtype=torch.float64, requires_grad=True)
    geo.quat_to_axis_angle(zero_q, order="wxyz").sum().backward()
    assert torch.isfinite(zero_q.grad).all()


# ---- properties (hypothesis) -------------------------------------------------------------
finite = st.floats(-10, 10, allow_nan=False, allow_infinity=False)


@settings(max_examples=200, deadline=None)
@given(arrays(np.float64, (6,), elements=finite))
def test_property_rot6d_decode_is_proper_and_idempotent(x):
    if geo.rot6d_degeneracy(x) < 1e-6:
        return  # no rotation is defined
    R = geo.rot6d_to_matrix(x)
    assert geo.rotation_error(R) < 1e-9
    np.testing.assert_allclose(geo.rot6d_to_matrix(geo.matrix_to_rot6d(R)), R, atol=1e-9)


@settings(max_examples=200, deadline=None)
@given(arrays(np.float64, (4,), elements=finite))
def test_property_quaternion_round_trip(q):
    if np.linalg.norm(q) < 1e-3:
        return
    for order in ("wxyz", "xyzw"):
        R = geo.quat_to_matrix(q, order=order)
        back = geo.matrix_to_quat(R, order=order)
        assert quat_close(back, q / np.linalg.norm(q), 1e-9)


@settings(max_examples=200, deadline=None)
@given(arrays(np.float64, (3,), elements=st.floats(-3.1, 3.1)))
def test_property_axis_angle_round_trip(aa):
    R = geo.axis_angle_to_matrix(aa)
    np.testing.assert_allclose(geo.axis_angle_to_matrix(geo.matrix_to_axis_angle(R)), R, atol=1e-9)
    if np.linalg.norm(aa) < math.pi - 1e-3:
        np.testing.assert_allclose(geo.matrix_to_axis_angle(R), aa, atol=1e-8)


@settings(max_examples=100, deadline=None)
@given(arrays(np.float64, (3,), elements=st.floats(-3.1, 3.1)),
       st.sampled_from(ALL_SEQUENCES + [s.upper() for s in ALL_SEQUENCES]))
def test_property_euler_round_trip(ang, seq):
    R = geo.euler_to_matrix(ang, seq)
    np.testing.assert_allclose(geo.euler_to_matrix(geo.matrix_to_euler(R, seq), seq), R, atol=1e-6)
