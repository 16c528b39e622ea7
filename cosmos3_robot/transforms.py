"""Small named steps between a robot's raw data and a codec's episode (openpi-style).

Each transform is a frozen dataclass that maps a dict of arrays to a new dict (the input is
never modified) and, where the step is invertible, maps back with :meth:`invert`. An
embodiment's whole adapter is a short tuple of them, applied in order by
:func:`apply`; :func:`invert_all` runs the inverses in reverse order, which is how a decoded
action chunk returns to the robot's own units (e.g. DROID's Cartesian position + Euler).

Arrays may be numpy or torch; the geometry module handles both.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from cosmos3_robot import geometry as geo

Data = dict[str, Any]


def _need(data: Mapping[str, Any], key: str, step: str, expected: str) -> Any:
    if key not in data:
        raise ValueError(f"{step}: missing key {key!r} ({expected}); present keys: {sorted(data)}")
    return data[key]


def _last_dim(x: Any, n: int, key: str, step: str, expected: str) -> None:
    if x.ndim < 1 or x.shape[-1] != n:
        raise ValueError(f"{step}: {key!r} expected shape {expected}, got {tuple(x.shape)}")


def _cat(parts: Sequence[Any]) -> Any:
    if any(isinstance(p, torch.Tensor) for p in parts):
        return torch.cat([torch.as_tensor(p) for p in parts], -1)
    return np.concatenate(parts, -1)


@dataclass(frozen=True)
class Transform:
    """Base class: ``__call__`` maps raw -> episode-side data; ``invert`` maps back.

    ``reads`` / ``writes`` name the keys a step consumes and produces, so that only the
    steps a subset of the episode needs can run (a robot's current state carries its state
    keys, not its commands: :func:`apply_for`). A step that leaves them ``None`` (a plugin's
    own transform that does not say) always runs."""

    def __call__(self, data: Mapping[str, Any]) -> Data:
        raise NotImplementedError

    def reads(self) -> tuple[str, ...] | None:
        return None

    def writes(self) -> tuple[str, ...] | None:
        return None

    def invert(self, data: Mapping[str, Any]) -> Data:
        raise NotImplementedError(f"{type(self).__name__} has no inverse")


class _OnKey:
    """``reads`` / ``writes`` of a step that changes one key in place (``self.key``)."""

    def reads(self):
        return (self.key,)

    def writes(self):
        return (self.key,)


@dataclass(frozen=True)
class Rename(Transform):
    """Rename keys: ``mapping`` is old name -> new name."""

    mapping: tuple[tuple[str, str], ...]

    def __call__(self, data):
        out = dict(data)
        for old, new in self.mapping:
            out[new] = _need(out, old, "Rename", "to be renamed")
            del out[old]
        return out

    def invert(self, data):
        return Rename(tuple((n, o) for o, n in self.mapping))(data)

    def reads(self):
        return tuple(o for o, _ in self.mapping)

    def writes(self):
        return tuple(n for _, n in self.mapping)


@dataclass(frozen=True)
class Split(Transform):
    """Split the last axis of ``key`` into named parts ``(name, start, stop)``."""

    key: str
    parts: tuple[tuple[str, int, int], ...]

    @property
    def size(self) -> int:
        return max(stop for _, _, stop in self.parts)

    def __call__(self, data):
        out = dict(data)
        x = _need(out, self.key, "Split", f"(..., {self.size})")
        _last_dim(x, self.size, self.key, "Split", f"(..., {self.size})")
        for name, a, b in self.parts:
            out[name] = x[..., a:b]
        del out[self.key]
        return out

    def invert(self, data):
        out = dict(data)
        out[self.key] = _cat([_need(out, n, "Split.invert", "a part") for n, _, _ in self.parts])
        for n, _, _ in self.parts:
            del out[n]
        return out

    def reads(self):
        return (self.key,)

    def writes(self):
        return tuple(n for n, _, _ in self.parts)


QUAT_NORM_TOL = 0.01
"""How far from 1 a quaternion's norm may be (float32 round trips, 4-decimal logs) before it
is refused: a zero or far-off quaternion is a broken message, not a rotation."""


@dataclass(frozen=True)
class PoseFromPosRotation(Transform):
    """Build a ``(..., 4, 4)`` pose ``out`` from a position ``(..., 3)`` and a rotation.

    Attributes:
        rotation: ``"quat_wxyz"``, ``"quat_xyzw"``, ``"axis_angle"``, ``"matrix"`` or
            ``"euler:<seq>"`` (scipy sequence, e.g. ``"euler:xyz"`` for DROID roll-pitch-yaw).
    """

    pos: str
    rot: str
    out: str
    rotation: str

    def _to_matrix(self, r: Any) -> Any:
        kind = self.rotation
        if kind in ("quat_wxyz", "quat_xyzw"):
            _last_dim(r, 4, self.rot, "PoseFromPosRotation", "(..., 4) quaternion")
            norm = np.linalg.norm(np.asarray(r, dtype=np.float64), axis=-1)
            bad = ~(np.abs(norm - 1.0) <= QUAT_NORM_TOL)
            if bad.any():
                i = tuple(int(j) for j in np.argwhere(bad)[0])
                raise ValueError(f"{self.rot}: quaternion at index {i} has norm {float(norm[i]):.4g}; expected a "
                                 f"unit quaternion ({kind[5:]}, |q| = 1 within {QUAT_NORM_TOL:g})")
            return geo.quat_to_matrix(r, order=kind[5:])
        if kind == "axis_angle":
            _last_dim(r, 3, self.rot, "PoseFromPosRotation", "(..., 3) axis-angle")
            return geo.axis_angle_to_matrix(r)
        if kind == "matrix":
            return r
        if kind.startswith("euler:"):
            _last_dim(r, 3, self.rot, "PoseFromPosRotation", "(..., 3) Euler angles")
            return geo.euler_to_matrix(r, kind[6:])
        raise ValueError(f"PoseFromPosRotation: unknown rotation kind {kind!r}")

    def _from_matrix(self, R: Any) -> Any:
        kind = self.rotation
        if kind in ("quat_wxyz", "quat_xyzw"):
            return geo.matrix_to_quat(R, order=kind[5:])
        if kind == "axis_angle":
            return geo.matrix_to_axis_angle(R)
        if kind == "matrix":
            return R
        return geo.matrix_to_euler(R, kind[6:])

    def __call__(self, data):
        out = dict(data)
        pos = _need(out, self.pos, "PoseFromPosRotation", "(..., 3) position")
        _last_dim(pos, 3, self.pos, "PoseFromPosRotation", "(..., 3) position in metres")
        rot = _need(out, self.rot, "PoseFromPosRotation", f"{self.rotation} rotation")
        out[self.out] = geo.make_pose(self._to_matrix(rot), pos)
        for k in {self.pos, self.rot} - {self.out}:
            del out[k]
        return out

    def invert(self, data):
        out = dict(data)
        T = _need(out, self.out, "PoseFromPosRotation.invert", "(..., 4, 4) pose")
        del out[self.out]
        out[self.pos] = T[..., :3, 3]
        out[self.rot] = self._from_matrix(T[..., :3, :3])
        return out

    def reads(self):
        return (self.pos, self.rot)

    def writes(self):
        return (self.out,)


@dataclass(frozen=True)
class PoseFromPosition(Transform):
    """A ``(..., 4, 4)`` pose ``out`` with the identity rotation from a position ``(..., 3)``
    (metres): for position-only arms (SO-100 style Cartesian control, xArm position mode,
    many simulators). The inverse returns the position and drops the rotation, so a decoded
    chunk comes back as positions only."""

    pos: str
    out: str

    def __call__(self, data):
        out = dict(data)
        pos = _need(out, self.pos, "PoseFromPosition", "(..., 3) position")
        _last_dim(pos, 3, self.pos, "PoseFromPosition", "(..., 3) position in metres")
        if isinstance(pos, torch.Tensor):
            R = torch.eye(3, dtype=pos.dtype, device=pos.device).expand(pos.shape[:-1] + (3, 3))
        else:
            pos = np.asarray(pos)
            pos = pos if pos.dtype.kind == "f" else pos.astype(np.float64)
            R = np.broadcast_to(np.eye(3, dtype=pos.dtype), pos.shape[:-1] + (3, 3)).copy()
        if self.pos != self.out:
            del out[self.pos]
        out[self.out] = geo.make_pose(R, pos)
        return out

    def invert(self, data):
        out = dict(data)
        T = _need(out, self.out, "PoseFromPosition.invert", "(..., 4, 4) pose")
        del out[self.out]
        out[self.pos] = T[..., :3, 3]
        return out

    def reads(self):
        return (self.pos,)

    def writes(self):
        return (self.out,)


@dataclass(frozen=True)
class PoseFromPlanar(Transform):
    """Ground-plane ego poses from 2D waypoints ``(..., T, 2)`` and headings ``(..., T)`` (rad)."""

    xy: str
    heading: str
    out: str

    def __call__(self, data):
        out = dict(data)
        xy = _need(out, self.xy, "PoseFromPlanar", "(..., T, 2) waypoints")
        _last_dim(xy, 2, self.xy, "PoseFromPlanar", "(..., T, 2) waypoints in metres")
        h = _need(out, self.heading, "PoseFromPlanar", "(..., T) headings")
        if tuple(h.shape) != tuple(xy.shape[:-1]):
            raise ValueError(
                f"PoseFromPlanar: {self.heading!r} expected shape {tuple(xy.shape[:-1])} to match "
                f"the waypoints, got {tuple(h.shape)}"
            )
        out[self.out] = geo.pose_from_planar(xy, h)
        del out[self.xy], out[self.heading]
        return out

    def invert(self, data):
        out = dict(data)
        T = _need(out, self.out, "PoseFromPlanar.invert", "(..., 4, 4) pose")
        del out[self.out]
        out[self.xy] = T[..., :2, 3]
        lib = torch if isinstance(T, torch.Tensor) else np
        out[self.heading] = lib.arctan2(T[..., 1, 0], T[..., 0, 0])
        return out

    def reads(self):
        return (self.xy, self.heading)

    def writes(self):
        return (self.out,)


@dataclass(frozen=True)
class RightMultiplyRotation(_OnKey, Transform):
    """Re-express a pose's body frame: ``R <- R @ M`` (e.g. DROID's ``Rz(-90 deg)`` to OpenCV)."""

    key: str
    matrix: tuple[tuple[float, float, float], ...]

    def _apply(self, data: Mapping[str, Any], M: np.ndarray) -> Data:
        out = dict(data)
        T = _need(out, self.key, "RightMultiplyRotation", "(..., 4, 4) pose")
        H = np.eye(4)
        H[:3, :3] = M
        if isinstance(T, torch.Tensor):
            out[self.key] = T @ torch.as_tensor(H, dtype=T.dtype, device=T.device)
        else:
            out[self.key] = T @ H.astype(T.dtype)
        return out

    def __call__(self, data):
        return self._apply(data, np.asarray(self.matrix, dtype=np.float64))

    def invert(self, data):
        return self._apply(data, np.asarray(self.matrix, dtype=np.float64).T)


@dataclass(frozen=True)
class FlipRange(_OnKey, Transform):
    """``x <- low + high - x`` (self-inverse), e.g. DROID's ``1 - g`` gripper release."""

    key: str
    low: float = 0.0
    high: float = 1.0

    def __call__(self, data):
        out = dict(data)
        out[self.key] = self.low + self.high - _need(out, self.key, "FlipRange", "values")
        return out

    def invert(self, data):
        return self(data)


@dataclass(frozen=True)
class Squeeze(_OnKey, Transform):
    """Drop a trailing size-1 axis of ``key`` (e.g. gripper ``(T, 1)`` -> ``(T,)``)."""

    key: str

    def __call__(self, data):
        out = dict(data)
        x = _need(out, self.key, "Squeeze", "(..., 1)")
        _last_dim(x, 1, self.key, "Squeeze", "(..., 1)")
        out[self.key] = x[..., 0]
        return out

    def invert(self, data):
        out = dict(data)
        out[self.key] = out[self.key][..., None]
        return out


@dataclass(frozen=True)
class DefaultIdentityPose(Transform):
    """Fill ``key`` with identity poses shaped like pose ``like`` when the data lacks it.

    For fixed-camera setups the ego/camera block of the 19D layout is the identity at every
    step; this step says so explicitly in the embodiment's adapter. Given data is kept.
    """

    key: str
    like: str

    def __call__(self, data):
        out = dict(data)
        if self.key in out:
            return out
        ref = _need(out, self.like, "DefaultIdentityPose", "(..., T, 4, 4) poses to copy the shape of")
        if isinstance(ref, torch.Tensor):
            out[self.key] = torch.eye(4, dtype=ref.dtype, device=ref.device).expand(ref.shape).clone()
        else:
            out[self.key] = np.broadcast_to(np.eye(4, dtype=ref.dtype), ref.shape).copy()
        return out

    def invert(self, data):
        return dict(data)

    def reads(self):
        return (self.like,)

    def writes(self):
        return (self.key,)


def apply(transforms: Sequence[Transform], data: Mapping[str, Any]) -> Data:
    """Run ``transforms`` in order (raw -> episode)."""
    out = dict(data)
    for t in transforms:
        out = t(out)
    return out


def needed_steps(transforms: Sequence[Transform], keys: Sequence[str]) -> tuple[tuple[bool, ...], frozenset[str] | None]:
    """Which of ``transforms`` produce (directly or through later steps) the episode keys
    ``keys``, and the raw keys they start from: ``(run flags in order, raw keys)``. A step
    that does not declare ``reads``/``writes`` always runs, and then the raw keys are not
    known (``None``). Worked out once per adapter and keys (a control loop asks every tick)."""
    try:
        return _needed_steps(tuple(transforms), tuple(keys))
    except TypeError:  # a plugin's transform that cannot be hashed: no cache
        return _needed_steps.__wrapped__(tuple(transforms), tuple(keys))


@functools.lru_cache(maxsize=256)
def _needed_steps(transforms: tuple[Transform, ...], keys: tuple[str, ...]):
    need: set[str] | None = set(keys)
    flags = [False] * len(transforms)
    for i in range(len(transforms) - 1, -1, -1):
        r, w = transforms[i].reads(), transforms[i].writes()
        if r is None or w is None:
            flags[i], need = True, None
        elif need is not None and need & set(w):
            flags[i], need = True, (need - set(w)) | set(r)
        elif need is None:
            flags[i] = True  # below an undeclared step every earlier step may be needed
    return tuple(flags), None if need is None else frozenset(need)


def apply_for(transforms: Sequence[Transform], data: Mapping[str, Any], keys: Sequence[str]) -> Data:
    """Run only the steps of ``transforms`` that lead to the episode keys ``keys`` (e.g. a
    codec's state blocks from a robot's current state, which carries no command keys)."""
    flags, _ = needed_steps(transforms, keys)
    out = dict(data)
    for t, run in zip(transforms, flags):
        if run:
            out = t(out)
    return out


def invert_all(transforms: Sequence[Transform], data: Mapping[str, Any]) -> Data:
    """Run the inverses in reverse order (episode -> raw)."""
    out = dict(data)
    for t in reversed(transforms):
        out = t.invert(out)
    return out
