"""SE(3): homogeneous poses, their 9D form, relative deltas and their integration."""

from __future__ import annotations


import torch

from cosmos3_robot.geometry.base import Array, QuatOrder, RelativeMode, dual, _check_last
from cosmos3_robot.geometry.rotations import quat_to_matrix, axis_angle_to_matrix, _elementary, euler_to_matrix, matrix_to_rot6d, rot6d_to_matrix, orthonormalize


# --------------------------------------------------------------------------------------
# SE(3)
# --------------------------------------------------------------------------------------
@dual
def make_pose(R: Array, t: Array) -> Array:
    """Homogeneous pose ``(..., 4, 4)`` from rotation ``(..., 3, 3)`` and translation ``(..., 3)``."""
    _check_last(R, (3, 3), "rotation matrix")
    _check_last(t, (3,), "translation")
    batch = torch.broadcast_shapes(R.shape[:-2], t.shape[:-1])
    top = torch.cat([R.expand(batch + (3, 3)), t.expand(batch + (3,))[..., None]], -1)
    bottom = torch.zeros(batch + (1, 4), dtype=R.dtype, device=R.device)
    bottom[..., 0, 3] = 1
    return torch.cat([top, bottom], -2)


@dual
def pose_inverse(T: Array) -> Array:
    """Inverse ``(..., 4, 4)`` of homogeneous poses, using ``R^T`` (exact for rotations)."""
    _check_last(T, (4, 4), "pose")
    Rt = T[..., :3, :3].transpose(-1, -2)
    t = -(Rt @ T[..., :3, 3:4])[..., 0]
    return make_pose(Rt, t)


@dual
def pose_compose(a: Array, b: Array) -> Array:
    """``a @ b`` for homogeneous ``(..., 4, 4)`` poses (apply b, then a)."""
    _check_last(a, (4, 4), "pose a")
    _check_last(b, (4, 4), "pose b")
    return a @ b


@dual
def transform_points(T: Array, p: Array) -> Array:
    """Apply poses ``(..., 4, 4)`` to points ``(..., N, 3)``: ``R p + t`` per point."""
    _check_last(T, (4, 4), "pose")
    _check_last(p, (3,), "points")
    return (T[..., None, :3, :3] @ p[..., None])[..., 0] + T[..., None, :3, 3]


@dual
def pose_to_9d(T: Array) -> Array:
    """Pose ``(..., 4, 4)`` to ``(..., 9)``: translation (3, metres) + 6D rotation (columns)."""
    _check_last(T, (4, 4), "pose")
    return torch.cat([T[..., :3, 3], matrix_to_rot6d(T[..., :3, :3])], -1)


@dual
def pose_from_9d(x: Array) -> Array:
    """``(..., 9)`` translation + 6D (columns) to a homogeneous pose ``(..., 4, 4)``."""
    _check_last(x, (9,), "9D pose")
    return make_pose(rot6d_to_matrix(x[..., 3:9]), x[..., :3])


@dual
def pose_from_pos_quat(pos: Array, quat: Array, *, order: QuatOrder) -> Array:
    """Pose ``(..., 4, 4)`` from position ``(..., 3)`` and quaternion ``(..., 4)``."""
    return make_pose(quat_to_matrix(quat, order=order), pos)


@dual
def pose_from_pos_axis_angle(pos: Array, aa: Array) -> Array:
    """Pose ``(..., 4, 4)`` from position ``(..., 3)`` and rotation vector ``(..., 3)``."""
    return make_pose(axis_angle_to_matrix(aa), pos)


@dual
def pose_from_pos_euler(pos: Array, euler: Array, convention: str) -> Array:
    """Pose ``(..., 4, 4)`` from position ``(..., 3)`` and Euler angles ``(..., 3)``."""
    return make_pose(euler_to_matrix(euler, convention), pos)


@dual
def pose_from_planar(xy: Array, heading: Array, z: float = 0.0) -> Array:
    """Ground-plane poses ``(..., 4, 4)`` from positions ``(..., 2)`` and headings ``(...)``.

    Heading is yaw about +z in radians (x forward, y left, z up: the AV ego convention).
    """
    _check_last(xy, (2,), "planar position")
    zeros = torch.zeros_like(heading)
    R = _elementary(2, heading)
    t = torch.stack([xy[..., 0], xy[..., 1], zeros + z], -1)
    return make_pose(R, t)


@dual
def relative_poses(T: Array, mode: RelativeMode = "framewise") -> Array:
    """Relative deltas ``(..., N-1, 4, 4)`` of a pose sequence ``(..., N, 4, 4)``.

    ``"framewise"``: ``inv(T_i) @ T_{i+1}`` (each step in the previous frame);
    ``"anchored"``: ``inv(T_0) @ T_{i+1}`` (every step in the first frame).
    """
    _check_last(T, (4, 4), "pose sequence")
    if T.dim() < 3 or T.shape[-3] < 2:
        raise ValueError(f"pose sequence: expected (..., N>=2, 4, 4), got {tuple(T.shape)}")
    if mode == "framewise":
        return pose_inverse(T[..., :-1, :, :]) @ T[..., 1:, :, :]
    if mode == "anchored":
        return pose_inverse(T[..., :1, :, :]) @ T[..., 1:, :, :]
    raise ValueError(f"relative mode: expected 'framewise' or 'anchored', got {mode!r}")


@dual
def integrate_relative(
    T0: Array, dT: Array, mode: RelativeMode = "framewise", reorthonormalize: bool = False
) -> Array:
    """Absolute poses ``(..., N, 4, 4)`` from a start ``(..., 4, 4)`` and deltas ``(..., N-1, 4, 4)``.

    Inverts :func:`relative_poses`: framewise ``T_{i+1} = T_i @ dT_i``, anchored
    ``T_{i+1} = T_0 @ dT_i``. ``reorthonormalize`` re-projects each running rotation onto
    SO(3), which bounds the drift of long float32 integrations.
    """
    _check_last(T0, (4, 4), "start pose")
    _check_last(dT, (4, 4), "pose deltas")
    if dT.dim() < 3:
        raise ValueError(f"pose deltas: expected (..., N-1, 4, 4), got {tuple(dT.shape)}")
    if mode == "anchored":
        out = T0[..., None, :, :] @ dT
    elif mode == "framewise":
        poses = []
        cur = T0.expand(dT.shape[:-3] + (4, 4))
        for i in range(dT.shape[-3]):
            cur = cur @ dT[..., i, :, :]
            if reorthonormalize:
                cur = make_pose(orthonormalize(cur[..., :3, :3]), cur[..., :3, 3])
            poses.append(cur)
        out = torch.stack(poses, -3) if poses else dT
    else:
        raise ValueError(f"relative mode: expected 'framewise' or 'anchored', got {mode!r}")
    start = T0.expand(out.shape[:-3] + (4, 4))[..., None, :, :]
    return torch.cat([start, out], -3)
