"""Rotations: quaternions, axis-angle, Euler angles, 6D, and checks on rotation matrices."""

from __future__ import annotations

import math

import torch

from cosmos3_robot.geometry.base import Array, QuatOrder, Rot6dConvention, ROT6D_CONVENTION, dual, _check_last, _safe_norm


# --------------------------------------------------------------------------------------
# Quaternions
# --------------------------------------------------------------------------------------
def _check_order(order: str) -> None:
    if order not in ("wxyz", "xyzw"):
        raise ValueError(f"quaternion order: expected 'wxyz' or 'xyzw', got {order!r}")


def _to_wxyz(q: torch.Tensor, order: QuatOrder) -> torch.Tensor:
    _check_order(order)
    return q if order == "wxyz" else torch.cat([q[..., 3:], q[..., :3]], dim=-1)


def _from_wxyz(q: torch.Tensor, order: QuatOrder) -> torch.Tensor:
    _check_order(order)
    return q if order == "wxyz" else torch.cat([q[..., 1:], q[..., :1]], dim=-1)


@dual
def quat_convert(q: Array, *, src: QuatOrder, dst: QuatOrder) -> Array:
    """Reorder quaternion components ``(..., 4)`` from ``src`` to ``dst`` order."""
    _check_last(q, (4,), "quaternion")
    return _from_wxyz(_to_wxyz(q, src), dst)


@dual
def quat_canonical(q: Array, *, order: QuatOrder) -> Array:
    """Unit-normalise ``(..., 4)`` quaternions and flip them to a non-negative scalar part."""
    _check_last(q, (4,), "quaternion")
    w = _to_wxyz(q, order)
    w = w / _safe_norm(w, keepdim=True)
    w = torch.where(w[..., :1] < 0, -w, w)
    return _from_wxyz(w, order)


@dual
def quat_to_matrix(q: Array, *, order: QuatOrder) -> Array:
    """Quaternion ``(..., 4)`` (normalised here) to rotation matrix ``(..., 3, 3)``."""
    _check_last(q, (4,), "quaternion")
    q = _to_wxyz(q, order)
    q = q / _safe_norm(q, keepdim=True)
    w, x, y, z = q.unbind(-1)
    xx, yy, zz = x * x, y * y, z * z
    xy, xz, yz = x * y, x * z, y * z
    wx, wy, wz = w * x, w * y, w * z
    rows = [
        1 - 2 * (yy + zz), 2 * (xy - wz), 2 * (xz + wy),
        2 * (xy + wz), 1 - 2 * (xx + zz), 2 * (yz - wx),
        2 * (xz - wy), 2 * (yz + wx), 1 - 2 * (xx + yy),
    ]
    return torch.stack(rows, dim=-1).reshape(q.shape[:-1] + (3, 3))


@dual
def matrix_to_quat(R: Array, *, order: QuatOrder) -> Array:
    """Rotation matrix ``(..., 3, 3)`` to unit quaternion ``(..., 4)`` with scalar >= 0.

    Shepperd's method: of the four algebraically equal formulas, each row-normalised, the
    one built on the largest diagonal term is taken, so rotations near 180 degrees stay
    accurate.
    """
    _check_last(R, (3, 3), "rotation matrix")
    m = R
    m00, m01, m02 = m[..., 0, 0], m[..., 0, 1], m[..., 0, 2]
    m10, m11, m12 = m[..., 1, 0], m[..., 1, 1], m[..., 1, 2]
    m20, m21, m22 = m[..., 2, 0], m[..., 2, 1], m[..., 2, 2]
    # Each candidate equals 4 * q_k * q (wxyz) for k = w, x, y, z.
    cand = torch.stack(
        [
            torch.stack([1 + m00 + m11 + m22, m21 - m12, m02 - m20, m10 - m01], -1),
            torch.stack([m21 - m12, 1 + m00 - m11 - m22, m01 + m10, m02 + m20], -1),
            torch.stack([m02 - m20, m01 + m10, 1 - m00 + m11 - m22, m12 + m21], -1),
            torch.stack([m10 - m01, m02 + m20, m12 + m21, 1 - m00 - m11 + m22], -1),
        ],
        dim=-2,
    )
    diag = torch.stack(
        [1 + m00 + m11 + m22, 1 + m00 - m11 - m22, 1 - m00 + m11 - m22, 1 - m00 - m11 + m22], -1
    )
    best = diag.argmax(dim=-1)
    idx = best[..., None, None].expand(best.shape + (1, 4))
    q = torch.gather(cand, -2, idx).squeeze(-2)
    q = q / _safe_norm(q, keepdim=True)
    q = torch.where(q[..., :1] < 0, -q, q)
    return _from_wxyz(q, order)


@dual
def quat_multiply(a: Array, b: Array, *, order: QuatOrder) -> Array:
    """Hamilton product ``a * b`` of ``(..., 4)`` quaternions (rotation ``a`` after ``b``)."""
    _check_last(a, (4,), "quaternion a")
    _check_last(b, (4,), "quaternion b")
    aw, ax, ay, az = _to_wxyz(a, order).unbind(-1)
    bw, bx, by, bz = _to_wxyz(b, order).unbind(-1)
    out = torch.stack(
        [
            aw * bw - ax * bx - ay * by - az * bz,
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
        ],
        -1,
    )
    return _from_wxyz(out, order)


# --------------------------------------------------------------------------------------
# Axis-angle
# --------------------------------------------------------------------------------------
def _skew(v: torch.Tensor) -> torch.Tensor:
    x, y, z = v.unbind(-1)
    o = torch.zeros_like(x)
    return torch.stack([o, -z, y, z, o, -x, -y, x, o], -1).reshape(v.shape[:-1] + (3, 3))


@dual
def skew(v: Array) -> Array:
    """Cross-product matrix ``(..., 3, 3)`` of ``(..., 3)`` vectors: ``skew(a) @ b = a x b``."""
    _check_last(v, (3,), "vector")
    return _skew(v)


@dual
def axis_angle_to_matrix(aa: Array) -> Array:
    """Rotation vector ``(..., 3)`` in radians to rotation matrix ``(..., 3, 3)`` (Rodrigues)."""
    _check_last(aa, (3,), "axis-angle")
    theta2 = (aa * aa).sum(-1)
    small = theta2 < 1e-6
    safe2 = torch.where(small, torch.ones_like(theta2), theta2)
    safe = torch.sqrt(safe2)
    # A = sin(t)/t, B = (1 - cos(t))/t^2 with Taylor series near zero.
    a = torch.where(small, 1 - theta2 / 6 + theta2 * theta2 / 120, torch.sin(safe) / safe)
    b = torch.where(small, 0.5 - theta2 / 24 + theta2 * theta2 / 720, (1 - torch.cos(safe)) / safe2)
    k = _skew(aa)
    eye = torch.eye(3, dtype=aa.dtype, device=aa.device).expand(k.shape)
    return eye + a[..., None, None] * k + b[..., None, None] * (k @ k)


@dual
def axis_angle_to_quat(aa: Array, *, order: QuatOrder) -> Array:
    """Rotation vector ``(..., 3)`` to unit quaternion ``(..., 4)``."""
    _check_last(aa, (3,), "axis-angle")
    theta2 = (aa * aa).sum(-1)
    small = theta2 < 1e-6
    safe = torch.sqrt(torch.where(small, torch.ones_like(theta2), theta2))
    half_sinc = torch.where(small, 0.5 - theta2 / 48, torch.sin(safe / 2) / safe)
    w = torch.where(small, 1 - theta2 / 8, torch.cos(safe / 2))
    q = torch.cat([w[..., None], aa * half_sinc[..., None]], -1)
    return quat_canonical(_from_wxyz(q, order), order=order)


@dual
def quat_to_axis_angle(q: Array, *, order: QuatOrder) -> Array:
    """Unit quaternion ``(..., 4)`` to rotation vector ``(..., 3)``, angle in ``[0, pi]``."""
    _check_last(q, (4,), "quaternion")
    q = _to_wxyz(quat_canonical(q, order=order), order)
    w, v = q[..., 0], q[..., 1:]
    s2 = (v * v).sum(-1)
    small = s2 < 1e-12
    s = torch.sqrt(torch.where(small, torch.ones_like(s2), s2))
    angle = 2 * torch.atan2(s, w)
    # angle / s -> 2 / w as s -> 0 (w -> 1)
    scale = torch.where(small, 2 / w * (1 + s2 / (3 * w * w)), angle / s)
    return v * scale[..., None]


@dual
def matrix_to_axis_angle(R: Array) -> Array:
    """Rotation matrix ``(..., 3, 3)`` to rotation vector ``(..., 3)`` (through Shepperd)."""
    return quat_to_axis_angle(matrix_to_quat(R, order="wxyz"), order="wxyz")


# --------------------------------------------------------------------------------------
# Euler angles
# --------------------------------------------------------------------------------------
_AXES = {"x": 0, "y": 1, "z": 2}


def _parse_euler(convention: str) -> tuple[list[int], bool]:
    if (
        not isinstance(convention, str)
        or len(convention) != 3
        or not (convention.islower() or convention.isupper())
        or any(c not in _AXES for c in convention.lower())
        or convention[0].lower() == convention[1].lower()
        or convention[1].lower() == convention[2].lower()
    ):
        raise ValueError(
            "Euler convention: expected 3 letters from 'xyz', all lowercase (extrinsic) or "
            f"all uppercase (intrinsic), no axis twice in a row; got {convention!r}"
        )
    return [_AXES[c] for c in convention.lower()], convention.islower()


def _elementary(axis: int, angle: torch.Tensor) -> torch.Tensor:
    c, s = torch.cos(angle), torch.sin(angle)
    o, i = torch.zeros_like(angle), torch.ones_like(angle)
    if axis == 0:
        m = [i, o, o, o, c, -s, o, s, c]
    elif axis == 1:
        m = [c, o, s, o, i, o, -s, o, c]
    else:
        m = [c, -s, o, s, c, o, o, o, i]
    return torch.stack(m, -1).reshape(angle.shape + (3, 3))


@dual
def euler_to_matrix(angles: Array, convention: str) -> Array:
    """Euler angles ``(..., 3)`` in radians to rotation matrix ``(..., 3, 3)``.

    ``convention`` follows scipy: ``"xyz"`` extrinsic gives ``Rz(c) @ Ry(b) @ Rx(a)``;
    ``"XYZ"`` intrinsic gives ``Rx(a) @ Ry(b) @ Rz(c)``.
    """
    _check_last(angles, (3,), "Euler angles")
    axes, extrinsic = _parse_euler(convention)
    m = [_elementary(ax, angles[..., k]) for k, ax in enumerate(axes)]
    return m[2] @ m[1] @ m[0] if extrinsic else m[0] @ m[1] @ m[2]


@dual
def matrix_to_euler(R: Array, convention: str) -> Array:
    """Rotation matrix ``(..., 3, 3)`` to Euler angles ``(..., 3)`` in radians.

    Any of the 12 sequences (Tait-Bryan and proper Euler), by the direct quaternion method
    of Bernardes & Zhang (2022). Ranges: first and last angle in ``[-pi, pi]``; the middle in
    ``[-pi/2, pi/2]`` (Tait-Bryan) or ``[0, pi]`` (proper). At gimbal lock the last angle
    of the extrinsic sequence is set to zero; the matrix is still reproduced exactly.
    """
    _check_last(R, (3, 3), "rotation matrix")
    axes, extrinsic = _parse_euler(convention)
    if not extrinsic:  # intrinsic ABC equals extrinsic cba with the angles reversed
        axes = axes[::-1]
    q = matrix_to_quat(R, order="wxyz")
    qw, qv = q[..., 0], q[..., 1:]
    i, j, k = axes
    proper = i == k
    if proper:
        k = 3 - i - j
    sign = (i - j) * (j - k) * (k - i) // 2
    if proper:
        a, b, c, d = qw, qv[..., i], qv[..., j], qv[..., k] * sign
    else:
        a = qw - qv[..., j]
        b = qv[..., i] + qv[..., k] * sign
        c = qv[..., j] + qw
        d = qv[..., k] * sign - qv[..., i]
    mid = 2 * torch.atan2(torch.hypot(c, d), torch.hypot(a, b))
    half_sum = torch.atan2(b, a)
    half_diff = torch.atan2(d, c)
    # Below this middle angle (or its distance to pi) the split between first and last angle
    # is ill-conditioned; the lock branch's matrix error is of the order of the tolerance.
    tol = 1e-10 if R.dtype == torch.float64 else 1e-4
    lock0 = mid.abs() <= tol
    lock_pi = (mid - math.pi).abs() <= tol
    first = torch.where(
        lock0, 2 * half_sum, torch.where(lock_pi, -2 * half_diff, half_sum - half_diff)
    )
    last = torch.where(lock0 | lock_pi, torch.zeros_like(mid), half_sum + half_diff)
    if not proper:
        last = last * sign
        mid = mid - math.pi / 2
    # Gimbal-lock branches drop one angle: fix the sign convention of `first` numerically
    # by checking which candidate reproduces R (cheap, and avoids a per-sequence table).
    out = torch.stack([first, mid, last], -1)
    if bool((lock0 | lock_pi).any()):
        alt = torch.stack([-first, mid, last], -1)
        seq = "".join("xyz"[a] for a in axes)
        err = (euler_to_matrix(out, seq) - R).abs().amax((-2, -1))
        err_alt = (euler_to_matrix(alt, seq) - R).abs().amax((-2, -1))
        out = torch.where((err_alt < err)[..., None], alt, out)
    out = torch.remainder(out + math.pi, 2 * math.pi) - math.pi
    if not extrinsic:
        out = out.flip(-1)
    return out


# --------------------------------------------------------------------------------------
# 6D rotation
# --------------------------------------------------------------------------------------
def _check_rot6d_convention(convention: str) -> None:
    if convention not in ("columns", "rows"):
        raise ValueError(f"6D convention: expected 'columns' or 'rows', got {convention!r}")


@dual
def matrix_to_rot6d(R: Array, convention: Rot6dConvention = ROT6D_CONVENTION) -> Array:
    """Rotation matrix ``(..., 3, 3)`` to 6D ``(..., 6)``.

    ``"columns"`` (default, Cosmos): ``[R[:, 0], R[:, 1]]``. ``"rows"`` (pytorch3d):
    ``[R[0, :], R[1, :]]``, equal to the columns convention of ``R.T``.
    """
    _check_last(R, (3, 3), "rotation matrix")
    _check_rot6d_convention(convention)
    if convention == "rows":
        R = R.transpose(-1, -2)
    return torch.cat([R[..., :, 0], R[..., :, 1]], dim=-1)


def _unit_scale(v: torch.Tensor) -> torch.Tensor:
    """Divide 3-vectors by their largest magnitude entry: decoding is scale-free, and this
    keeps tiny or huge inputs away from under/overflow."""
    m = v.detach().abs().amax(-1, keepdim=True)
    return v / torch.where(m > 0, m, torch.ones_like(m))


def _gram_schmidt(a1: torch.Tensor, a2: torch.Tensor) -> torch.Tensor:
    """Orthonormal frame ``(..., 3, 3)`` whose columns are b1 || a1, b2 in span(a1, a2), b1 x b2.

    The second vector is re-orthogonalised once more ("twice is enough", Kahan), so even
    nearly parallel inputs give an orthonormal, right-handed result in float32.
    """
    a1, a2 = _unit_scale(a1), _unit_scale(a2)
    b1 = a1 / _safe_norm(a1, keepdim=True)
    b2 = a2 - (b1 * a2).sum(-1, keepdim=True) * b1
    b2 = b2 / _safe_norm(b2, keepdim=True)
    b2 = b2 - (b1 * b2).sum(-1, keepdim=True) * b1
    b2 = b2 / _safe_norm(b2, keepdim=True)
    b3 = torch.linalg.cross(b1, b2, dim=-1)
    return torch.stack([b1, b2, b3], dim=-1)


@dual
def rot6d_to_matrix(x: Array, convention: Rot6dConvention = ROT6D_CONVENTION) -> Array:
    """6D rotation ``(..., 6)`` to a proper rotation matrix ``(..., 3, 3)`` (Gram-Schmidt).

    The first 3 entries give the first basis vector, the next 3 the second after removing
    its component along the first; the third is their cross product. Degenerate inputs
    (a zero or parallel pair) have no rotation: check them with :func:`rot6d_degeneracy`.
    """
    _check_last(x, (6,), "6D rotation")
    _check_rot6d_convention(convention)
    R = _gram_schmidt(x[..., :3], x[..., 3:6])
    return R.transpose(-1, -2) if convention == "rows" else R


@dual
def rot6d_degeneracy(x: Array) -> Array:
    """How close ``(..., 6)`` is to having no rotation: ``|a1 x a2| / (|a1| |a2|)`` in [0, 1].

    1 for perpendicular halves, 0 for a zero or parallel pair (decoding is then undefined).
    """
    _check_last(x, (6,), "6D rotation")
    a1, a2 = _unit_scale(x[..., :3]), _unit_scale(x[..., 3:6])
    cross = torch.linalg.cross(a1, a2, dim=-1)
    denom = (a1 * a1).sum(-1).sqrt() * (a2 * a2).sum(-1).sqrt()
    return torch.where(denom > 0, (cross * cross).sum(-1).sqrt() / denom.clamp_min(1e-300), 0 * denom)


@dual
def orthonormalize(R: Array) -> Array:
    """Nearest-in-spirit proper rotation to a drifted ``(..., 3, 3)`` matrix (via its 6D)."""
    _check_last(R, (3, 3), "rotation matrix")
    return _gram_schmidt(R[..., :, 0], R[..., :, 1])


@dual
def rotation_error(R: Array, tol: float | None = None) -> Array:
    """Per-matrix deviation from SO(3): ``max(|R^T R - I|, |det R - 1|)``, shape ``(...)``."""
    _check_last(R, (3, 3), "rotation matrix")
    eye = torch.eye(3, dtype=R.dtype, device=R.device)
    ortho = (R.transpose(-1, -2) @ R - eye).abs().amax((-2, -1))
    det = (torch.linalg.det(R) - 1).abs()
    return torch.maximum(ortho, det)


@dual
def rotation_angle_between(Ra: Array, Rb: Array) -> Array:
    """Geodesic angle in radians ``(...)`` between two rotation matrices."""
    _check_last(Ra, (3, 3), "rotation matrix a")
    _check_last(Rb, (3, 3), "rotation matrix b")
    aa = matrix_to_axis_angle(Ra.transpose(-1, -2) @ Rb)
    return _safe_norm(aa)
