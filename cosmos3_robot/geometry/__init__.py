"""Rotation and SE(3) math: one implementation, batched, for torch (differentiable) and numpy.

Every function takes arrays with any number of leading batch dimensions. The math is
written once, in torch; numpy inputs are wrapped zero-copy with ``torch.from_numpy`` and
the result comes back as ``numpy.ndarray`` of the same dtype. Keeping one implementation
(rather than a numpy twin) is the "one source of truth per concept" rule: the codecs,
data pipeline and model all call these functions.

Conventions, named once here and tested in ``tests/test_geometry.py``:

- Rotation matrices act on column vectors, ``x_parent = R @ x_child``; shape ``(..., 3, 3)``.
- Quaternions are unit quaternions whose component order is always passed explicitly as
  ``order="wxyz"`` (scalar first, Hamilton/MuJoCo/pytorch3d) or ``order="xyzw"`` (scalar
  last, scipy/ROS). Outputs are canonicalised to a non-negative scalar part.
- Axis-angle is the rotation vector ``angle * unit_axis`` in radians, angle in ``[0, pi]``.
- Euler angles use scipy's naming: three letters from ``xyz``; lowercase means extrinsic
  (rotations about the fixed parent axes, applied left to right), uppercase means intrinsic
  (about the moving axes). ``"xyz"`` is roll-pitch-yaw as used by DROID:
  ``R = Rz(yaw) @ Ry(pitch) @ Rx(roll)``.
- 6D rotation is the first two **columns** of R, ``[R[:, 0], R[:, 1]]`` (Zhou et al. 2019, the
  Cosmos code). ``convention="rows"`` selects pytorch3d's variant, the first two rows,
  which is the columns convention applied to ``R.T``. Decoding orthonormalises by
  Gram-Schmidt and takes the third column as a cross product, so any non-degenerate 6D
  vector maps to a proper rotation.
- A pose is a homogeneous ``(..., 4, 4)`` matrix ``[[R, t], [0, 0, 0, 1]]`` that maps child
  coordinates to parent coordinates (``T_parent_child``); translations in metres.
- A 9D pose is ``[t (3, metres), rot6d (6, unitless)]``.
- Relative ("backward frame-wise") deltas are ``dT_i = inv(T_i) @ T_{i+1}``, expressed in the
  previous frame; anchored deltas are ``inv(T_0) @ T_{i+1}``. Integration inverts both.
"""


from cosmos3_robot.geometry.base import ROT6D_CONVENTION, Array, QuatOrder, RelativeMode, Rot6dConvention, dual
from cosmos3_robot.geometry.rotations import (
    quat_convert,
    quat_canonical,
    quat_to_matrix,
    matrix_to_quat,
    quat_multiply,
    skew,
    axis_angle_to_matrix,
    axis_angle_to_quat,
    quat_to_axis_angle,
    matrix_to_axis_angle,
    euler_to_matrix,
    matrix_to_euler,
    matrix_to_rot6d,
    rot6d_to_matrix,
    rot6d_degeneracy,
    orthonormalize,
    rotation_error,
    rotation_angle_between,
)
from cosmos3_robot.geometry.poses import (
    make_pose,
    pose_inverse,
    pose_compose,
    transform_points,
    pose_to_9d,
    pose_from_9d,
    pose_from_pos_quat,
    pose_from_pos_axis_angle,
    pose_from_pos_euler,
    pose_from_planar,
    relative_poses,
    integrate_relative,
)
