"""Pseudo-action codecs: a layout of named blocks between episodes and ``(T-1, D)`` arrays.

An *episode* is a mapping from block name to absolute quantities over time:

- pose blocks: ``(..., T, 4, 4)`` homogeneous poses ``T_world_body`` (metres);
- gripper blocks: ``(..., T)`` gripper state in the block's range;
- points blocks: ``(..., T, N, 3)`` world positions (metres);
- command blocks (native per-step actions, e.g. LIBERO's OSC deltas): ``(..., T-1, k)``.

:meth:`ActionCodec.encode` turns it into pseudo-actions ``(..., T-1, D)``: row ``i``
describes the transition from step ``i`` to ``i + 1``. :meth:`ActionCodec.decode` integrates
them back from a start state (the absolute quantities at step 0), so a policy's chunk can
be turned into robot targets from the robot's current state.

Blocks are small frozen dataclasses (one named step each, openpi-style); a codec is the
ordered list of them. Pose math lives in :mod:`cosmos3_robot.geometry` only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Mapping, Sequence, get_args

import numpy as np
import torch

from cosmos3_robot import geometry as geo

Episode = Mapping[str, Any]
"""Block name -> absolute values over time (numpy arrays or torch tensors)."""

_ROT_TOL = {torch.float64: 1e-6, torch.float32: 1e-4}


def _rot_tol(dtype: torch.dtype) -> float:
    return _ROT_TOL.get(dtype, 1e-2)


def _as_tensor(x: Any, what: str) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        t = x
    else:
        try:
            arr = np.asarray(x)
        except Exception as exc:  # pragma: no cover - exotic inputs
            raise ValueError(f"{what}: could not be read as an array ({exc})") from exc
        if arr.dtype == object or not (
            np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)
            or arr.dtype == np.bool_
        ):
            raise ValueError(f"{what}: expected a numeric array, got dtype {arr.dtype}")
        if not np.issubdtype(arr.dtype, np.floating):
            arr = arr.astype(np.float64)
        t = torch.from_numpy(arr if arr.flags.c_contiguous else arr.copy())
    if not torch.is_floating_point(t):
        t = t.to(torch.float64)
    return t


def _first_index(mask: torch.Tensor) -> tuple[int, ...]:
    """Index of the first True entry of a boolean tensor."""
    return tuple(int(i) for i in mask.nonzero()[0].tolist())


def _check_finite(t: torch.Tensor, what: str) -> None:
    bad = ~torch.isfinite(t)
    if bool(bad.any()):
        raise ValueError(f"{what}: non-finite value (NaN or Inf) at index {_first_index(bad)}")


def _shape_str(shape: Sequence[int | str]) -> str:
    return "(" + ", ".join(str(s) for s in shape) + ")"


def _check_tail(t: torch.Tensor, tail: Sequence[int | None], what: str, expected: str) -> None:
    ok = t.dim() >= len(tail) and all(
        s is None or t.shape[t.dim() - len(tail) + k] == s for k, s in enumerate(tail)
    )
    if not ok:
        raise ValueError(f"{what}: expected shape {expected}, got {tuple(t.shape)}")


@dataclass(frozen=True)
class Block:
    """One named piece of the pseudo-action vector.

    Attributes:
        name: key of the block in episodes and start states.
        description: what the quantity is, for humans and docs.
    """

    name: str
    description: str = ""

    kind: ClassVar[Literal["state", "command"]] = "state"
    """"state": length-T absolute input, decoded from a start state; "command": length T-1."""
    step_ndim: ClassVar[int] = 0
    """Dimensions of one step's input after the time axis (a pose is 4 x 4: 2)."""

    @property
    def time_axis(self) -> int:
        """Axis of the time steps in this block's input arrays (counted from the end)."""
        return -(self.step_ndim + 1)

    @property
    def width(self) -> int:
        raise NotImplementedError

    def dim_names(self) -> list[str]:
        raise NotImplementedError

    def units(self) -> list[str]:
        raise NotImplementedError

    def rotation_dims(self) -> list[int]:
        """Offsets (within the block) of 6D rotation entries, for ``quantile_rot`` normalising."""
        return []

    def depends_on(self) -> tuple[str, ...]:
        """Blocks that must be decoded before this one."""
        return ()

    def label(self) -> str:
        return f"block {self.name!r} ({type(self).__name__})"

    def rest(self) -> torch.Tensor:
        """One valid step of this block's input, at rest (for layout probes): a state block's
        absolute value, a command block's command."""
        raise NotImplementedError

    def proprio(self, value: torch.Tensor) -> torch.Tensor:
        """One step's absolute value (a start state's entry) -> a flat vector, the model's
        proprioceptive input (scalars and points as they are)."""
        return value.reshape(-1)

    def check(self, value: torch.Tensor) -> None:
        """Raise ``ValueError`` naming the block if ``value`` is not a valid absolute input."""
        raise NotImplementedError

    def encode(self, ep: Mapping[str, torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    def check_encoded(self, x: torch.Tensor) -> None:
        """Raise ``ValueError`` if a pseudo-action slice ``(..., T-1, width)`` cannot be decoded:
        non-finite values, or a 6D rotation with no rotation (zero or parallel columns)."""
        _check_finite(x, f"{self.label()} pseudo-actions")
        rot = self.rotation_dims()
        if rot:
            deg = geo.rot6d_degeneracy(x[..., rot[0]:rot[0] + 6])
            if bool((deg < 1e-6).any()):
                raise ValueError(
                    f"{self.label()} pseudo-actions: 6D rotation at index {_first_index(deg < 1e-6)} is "
                    "degenerate (zero or parallel columns); expected two non-parallel 3-vectors"
                )

    def decode(
        self,
        x: torch.Tensor,
        start: Mapping[str, torch.Tensor],
        decoded: Mapping[str, torch.Tensor],
    ) -> torch.Tensor:
        raise NotImplementedError

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """Nearest valid pseudo-action slice for an approximate one (a model's output):
        identity here; range-bounded blocks clip. 6D rotations need nothing, decoding
        orthonormalises them."""
        return x


PoseMode = Literal["framewise", "anchored", "absolute"]
"""How a :class:`PoseBlock` lays out a pose sequence (see its ``relative``)."""


@dataclass(frozen=True)
class PoseBlock(Block):
    """9D SE(3) pose per step: translation (3, metres) + 6D rotation (6, columns convention).

    Attributes:
        parent: optional pose block this one is expressed in first (``inv(T_parent) @ T``),
            e.g. the end-effector in the ego/camera frame. ``None`` means the world frame.
        relative: ``"framewise"`` deltas ``inv(T_i) @ T_{i+1}`` (default, the "backward
            frame-wise" form of the reference), ``"anchored"`` ``inv(T_0) @ T_{i+1}``, or
            ``"absolute"``: the poses ``T_{i+1}`` themselves (in the parent/world frame), the
            absolute targets ACT and Diffusion Policy regress. Absolute targets tie a chunk
            to one workspace (no transfer across bases or cameras), but a policy that has not
            yet learnt where it is falls back to the mean target rather than to the mean
            motion, which relative deltas keep applying from wherever the arm is.
    """

    parent: str | None = None
    relative: PoseMode = "framewise"

    step_ndim: ClassVar[int] = 2

    def rest(self) -> torch.Tensor:
        return torch.eye(4, dtype=torch.float64)

    def proprio(self, value: torch.Tensor) -> torch.Tensor:
        """A ``(4, 4)`` pose -> translation (3, metres) + 6D rotation (6), in the world frame."""
        return geo.pose_to_9d(value).reshape(-1)

    def __post_init__(self) -> None:
        modes = get_args(PoseMode)
        if self.relative not in modes:
            raise ValueError(f"{self.label()}: relative must be {', '.join(map(repr, modes[:-1]))} "
                             f"or {modes[-1]!r}, got {self.relative!r}")

    @property
    def width(self) -> int:
        return 9

    def dim_names(self) -> list[str]:
        return [f"{self.name}.{c}" for c in ("x", "y", "z", "r00", "r10", "r20", "r01", "r11", "r21")]

    def units(self) -> list[str]:
        return ["m"] * 3 + ["rot6d"] * 6

    def rotation_dims(self) -> list[int]:
        return list(range(3, 9))

    def depends_on(self) -> tuple[str, ...]:
        return (self.parent,) if self.parent else ()

    def check(self, value: torch.Tensor) -> None:
        what = self.label()
        _check_tail(value, (None, 4, 4), what, "(..., T, 4, 4) homogeneous poses")
        _check_finite(value, what)
        bottom = value[..., 3, :]
        ref = torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=value.dtype)
        if bool(((bottom - ref).abs() > 1e-6).any()):
            raise ValueError(f"{what}: last row of each pose must be [0, 0, 0, 1]")
        err = geo.rotation_error(value[..., :3, :3])
        tol = _rot_tol(value.dtype)
        if bool((err > tol).any()):
            idx = _first_index(err > tol)
            raise ValueError(
                f"{what}: rotation at index {idx} is not a proper rotation "
                f"(max |R^T R - I|, |det R - 1| = {float(err.max()):.3g} > tolerance {tol:g})"
            )

    def _local(self, poses: torch.Tensor, parents: Mapping[str, torch.Tensor]) -> torch.Tensor:
        if self.parent is None:
            return poses
        return geo.pose_inverse(parents[self.parent]) @ poses

    def encode(self, ep: Mapping[str, torch.Tensor]) -> torch.Tensor:
        local = self._local(ep[self.name], ep)
        if self.relative == "absolute":
            if local.dim() < 3 or local.shape[-3] < 2:
                raise ValueError(f"{self.label()}: expected (..., T>=2, 4, 4) poses, got {tuple(local.shape)}")
            return geo.pose_to_9d(local[..., 1:, :, :])
        return geo.pose_to_9d(geo.relative_poses(local, self.relative))

    def decode(self, x, start, decoded):
        start_local = self._local(start[self.name], start)
        if self.relative == "absolute":
            poses = geo.pose_from_9d(x)
            first = start_local.expand(poses.shape[:-3] + (4, 4))[..., None, :, :]
            local = torch.cat([first, poses], -3)
        else:
            local = geo.integrate_relative(start_local, geo.pose_from_9d(x), self.relative)
        if self.parent is None:
            return local
        return decoded[self.parent] @ local


@dataclass(frozen=True)
class BoundedScalarBlock(Block):
    """A 1D value with a valid range ``[low, high]`` (``tol`` of slack) and a unit label."""

    low: float = 0.0
    high: float = 1.0
    unit: str = ""
    tol: float = 1e-6

    @property
    def width(self) -> int:
        return 1

    def rest(self) -> torch.Tensor:
        return torch.tensor(float(self.low), dtype=torch.float64)

    def dim_names(self) -> list[str]:
        return [self.name]

    def units(self) -> list[str]:
        return [self.unit]

    def _check_range(self, value: torch.Tensor, what: str) -> None:
        out = (value < self.low - self.tol) | (value > self.high + self.tol)
        if bool(out.any()):
            idx = _first_index(out)
            raise ValueError(
                f"{what}: value {float(value[idx]):.4g} at index {idx} is outside the "
                f"range [{self.low:g}, {self.high:g}]"
            )

    def _check_values(self, value: torch.Tensor, expected: str) -> None:
        what = self.label()
        _check_tail(value, (None,), what, expected)
        _check_finite(value, what)
        self._check_range(value, what)

    def check_encoded(self, x: torch.Tensor) -> None:
        super().check_encoded(x)
        self._check_range(x[..., 0], f"{self.label()} pseudo-actions")

    def project(self, x: torch.Tensor) -> torch.Tensor:
        return x.clamp(self.low, self.high)


@dataclass(frozen=True)
class GripperBlock(BoundedScalarBlock):
    """1D absolute gripper state at the end of each transition (default 0 open .. 1 closed)."""

    unit: str = "fraction closed"

    def check(self, value: torch.Tensor) -> None:
        self._check_values(value, "(..., T) gripper states")

    def encode(self, ep):
        return ep[self.name][..., 1:, None]

    def decode(self, x, start, decoded):
        s = start[self.name]
        s = s.expand(x.shape[:-2])
        return torch.cat([s[..., None], x[..., 0]], -1)


@dataclass(frozen=True)
class PointsBlock(Block):
    """``n_points`` 3D points expressed in the frame of pose block ``frame`` (3N values).

    The episode holds world positions ``(..., T, N, 3)``; the pseudo-action holds them in
    that step's ``frame`` coordinates (e.g. fingertips in the wrist frame), flattened point
    by point ``[p0.x, p0.y, p0.z, p1.x, ...]``.
    """

    frame: str = ""
    n_points: int = 5
    point_names: tuple[str, ...] = ()

    step_ndim: ClassVar[int] = 2

    def __post_init__(self) -> None:
        if not self.frame:
            raise ValueError(f"{self.label()}: 'frame' must name a pose block")
        if self.point_names and len(self.point_names) != self.n_points:
            raise ValueError(f"{self.label()}: {len(self.point_names)} point names for {self.n_points} points")

    @property
    def width(self) -> int:
        return 3 * self.n_points

    def rest(self) -> torch.Tensor:
        return torch.zeros(self.n_points, 3, dtype=torch.float64)

    def dim_names(self) -> list[str]:
        names = self.point_names or tuple(f"p{i}" for i in range(self.n_points))
        return [f"{self.name}.{p}.{c}" for p in names for c in "xyz"]

    def units(self) -> list[str]:
        return ["m"] * self.width

    def depends_on(self) -> tuple[str, ...]:
        return (self.frame,)

    def check(self, value: torch.Tensor) -> None:
        what = self.label()
        _check_tail(value, (None, self.n_points, 3), what, f"(..., T, {self.n_points}, 3) world points")
        _check_finite(value, what)

    def encode(self, ep):
        frame = ep[self.frame][..., 1:, :, :]
        local = geo.transform_points(geo.pose_inverse(frame), ep[self.name][..., 1:, :, :])
        return local.flatten(-2)

    def decode(self, x, start, decoded):
        local = x.unflatten(-1, (self.n_points, 3))
        world = geo.transform_points(decoded[self.frame][..., 1:, :, :], local)
        s = start[self.name].expand(world.shape[:-3] + (self.n_points, 3))
        return torch.cat([s[..., None, :, :], world], -3)


def _check_native(value: torch.Tensor, width: int, limit: float, what: str, expected: str) -> None:
    """A native command array ``(..., T-1, width)``: right shape, finite, within ``[-limit, limit]``."""
    _check_tail(value, (None, width), what, expected)
    _check_finite(value, what)
    over = value.abs() > limit + 1e-6
    if bool(over.any()):
        idx = _first_index(over)
        raise ValueError(
            f"{what}: value {float(value[idx]):.4g} at index {idx} is outside "
            f"[-{limit:g}, {limit:g}]"
        )


@dataclass(frozen=True)
class DeltaPoseCommandBlock(Block):
    """A native delta end-effector command ``[dpos (3), drot axis-angle (3)]`` per step.

    Used for action spaces such as robosuite/LIBERO OSC_POSE, where the dataset stores the
    commands themselves. ``rotation="axis_angle"`` keeps the 6 native numbers;
    ``"rot6d"`` writes ``[dpos * translation_scale (3, m), rot6d(R(drot * rotation_scale)) (6)]``
    (9 numbers), the 10D "rot6d" layout of the released Cosmos code. The scales turn the
    controller's normalised input (e.g. [-1, 1]) into metres and radians.

    Attributes:
        limit: native values must lie in ``[-limit, limit]`` (controllers clip beyond it).
    """

    rotation: Literal["axis_angle", "rot6d"] = "axis_angle"
    translation_scale: float = 1.0
    rotation_scale: float = 1.0
    limit: float = math.inf

    kind: ClassVar[Literal["state", "command"]] = "command"
    step_ndim: ClassVar[int] = 1

    def __post_init__(self) -> None:
        if self.rotation not in ("axis_angle", "rot6d"):
            raise ValueError(f"{self.label()}: rotation must be 'axis_angle' or 'rot6d'")
        if self.rotation == "rot6d" and self.rotation_scale * self.limit * math.sqrt(3) >= math.pi:
            raise ValueError(
                f"{self.label()}: rotation_scale * limit * sqrt(3) must stay below pi so the "
                "rot6d form is invertible"
            )

    @property
    def width(self) -> int:
        return 6 if self.rotation == "axis_angle" else 9

    def rest(self) -> torch.Tensor:
        return torch.zeros(6, dtype=torch.float64)

    def dim_names(self) -> list[str]:
        if self.rotation == "axis_angle":
            return [f"{self.name}.{c}" for c in ("dx", "dy", "dz", "drx", "dry", "drz")]
        return [f"{self.name}.{c}" for c in ("dx", "dy", "dz", "r00", "r10", "r20", "r01", "r11", "r21")]

    def units(self) -> list[str]:
        if self.rotation == "axis_angle":
            return ["native"] * 6
        return ["m"] * 3 + ["rot6d"] * 6

    def rotation_dims(self) -> list[int]:
        return list(range(3, 9)) if self.rotation == "rot6d" else []

    def check(self, value: torch.Tensor) -> None:
        _check_native(value, 6, self.limit, self.label(), "(..., T-1, 6) native [dpos, drot] commands")

    def encode(self, ep):
        v = ep[self.name]
        if self.rotation == "axis_angle":
            return v
        R = geo.axis_angle_to_matrix(v[..., 3:6] * self.rotation_scale)
        return torch.cat([v[..., :3] * self.translation_scale, geo.matrix_to_rot6d(R)], -1)

    def decode(self, x, start, decoded):
        if self.rotation == "axis_angle":
            out = x
        else:
            aa = geo.matrix_to_axis_angle(geo.rot6d_to_matrix(x[..., 3:9])) / self.rotation_scale
            out = torch.cat([x[..., :3] / self.translation_scale, aa], -1)
        return out

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """Clip to the controller's ``limit``: all six native numbers (``axis_angle``), or the
        translation (``rot6d``; decoding orthonormalises the rotation)."""
        if not math.isfinite(self.limit):
            return x
        if self.rotation == "axis_angle":
            return x.clamp(-self.limit, self.limit)
        bound = self.limit * self.translation_scale
        return torch.cat([x[..., :3].clamp(-bound, bound), x[..., 3:]], -1)


@dataclass(frozen=True)
class DeltaPositionCommandBlock(Block):
    """A native translation-only command ``[dx, dy, dz]`` per step ``(..., T-1, 3)``: the
    interface of position-controlled arms and Cartesian grippers that take a displacement
    per control step (SO-100 style Cartesian teleop, xArm position mode, many simulators).
    The pseudo-action is ``dpos * scale`` (metres when ``scale`` turns the controller's
    units, e.g. a normalised [-1, 1], into metres); decoding divides it back.

    Attributes:
        scale: native units -> metres.
        limit: native values must lie in ``[-limit, limit]`` (controllers clip beyond it).
    """

    scale: float = 1.0
    limit: float = math.inf

    kind: ClassVar[Literal["state", "command"]] = "command"
    step_ndim: ClassVar[int] = 1

    def __post_init__(self) -> None:
        if not (self.scale > 0 and math.isfinite(self.scale)):
            raise ValueError(f"{self.label()}: scale must be a finite number > 0, got {self.scale}")

    @property
    def width(self) -> int:
        return 3

    def rest(self) -> torch.Tensor:
        return torch.zeros(3, dtype=torch.float64)

    def dim_names(self) -> list[str]:
        return [f"{self.name}.{c}" for c in ("dx", "dy", "dz")]

    def units(self) -> list[str]:
        return ["m"] * 3

    def check(self, value: torch.Tensor) -> None:
        _check_native(value, 3, self.limit, self.label(), "(..., T-1, 3) native [dx, dy, dz] commands")

    def encode(self, ep):
        return ep[self.name] * self.scale

    def decode(self, x, start, decoded):
        return x / self.scale

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """Clip to the controller's limit (in pseudo-action units)."""
        return x.clamp(-self.limit * self.scale, self.limit * self.scale) if math.isfinite(self.limit) else x


@dataclass(frozen=True)
class ScalarCommandBlock(BoundedScalarBlock):
    """A native scalar command per step ``(..., T-1)``, e.g. LIBERO's gripper (-1 open, +1 close)."""

    low: float = -1.0
    high: float = 1.0
    unit: str = "command"

    kind: ClassVar[Literal["state", "command"]] = "command"

    def check(self, value: torch.Tensor) -> None:
        self._check_values(value, "(..., T-1) commands")

    def encode(self, ep):
        return ep[self.name][..., None]

    def decode(self, x, start, decoded):
        return x[..., 0]


@dataclass(frozen=True)
class ActionCodec:
    """An ordered layout of blocks; ``width`` is the pseudo-action dimension D.

    Blocks that depend on others (a pose with a ``parent``, points in a ``frame``) must come
    after them, so decoding runs in layout order.
    """

    blocks: tuple[Block, ...]
    slices: dict[str, slice] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.blocks:
            raise ValueError("codec: at least one block is required")
        object.__setattr__(self, "blocks", tuple(self.blocks))
        seen: dict[str, Block] = {}
        slices: dict[str, slice] = {}
        offset = 0
        for b in self.blocks:
            if b.name in seen:
                raise ValueError(f"codec: block name {b.name!r} used twice")
            for dep in b.depends_on():
                if dep not in seen or not isinstance(seen[dep], PoseBlock):
                    raise ValueError(
                        f"codec: {b.label()} refers to pose block {dep!r}, which must come "
                        "earlier in the layout"
                    )
            seen[b.name] = b
            slices[b.name] = slice(offset, offset + b.width)
            offset += b.width
        object.__setattr__(self, "slices", slices)

    # ---- layout metadata -------------------------------------------------------------
    @property
    def width(self) -> int:
        return sum(b.width for b in self.blocks)

    @property
    def state_blocks(self) -> tuple[Block, ...]:
        return tuple(b for b in self.blocks if b.kind == "state")

    @property
    def command_blocks(self) -> tuple[Block, ...]:
        return tuple(b for b in self.blocks if b.kind == "command")

    def block(self, name: str) -> Block:
        for b in self.blocks:
            if b.name == name:
                return b
        raise KeyError(f"codec has no block {name!r}; blocks: {[b.name for b in self.blocks]}")

    def dim_names(self) -> list[str]:
        return [n for b in self.blocks for n in b.dim_names()]

    def units(self) -> list[str]:
        return [u for b in self.blocks for u in b.units()]

    @staticmethod
    def _rotation_entries(blocks: Sequence[Block]) -> np.ndarray:
        """Bool over ``blocks`` laid out one after another, True at their 6D rotation entries."""
        return np.concatenate([np.isin(np.arange(b.width), b.rotation_dims()) for b in blocks]
                              or [np.zeros(0, bool)])

    def rotation_mask(self) -> np.ndarray:
        """``(D,)`` bool, True at 6D rotation entries (left unnormalised by ``quantile_rot``)."""
        return self._rotation_entries(self.blocks)

    def proprio_rotation_mask(self) -> np.ndarray:
        """``(P,)`` bool, True at the 6D rotation entries of :meth:`proprio` (each state
        block reads as wide as it encodes, poses as translation + 6D rotation)."""
        return self._rotation_entries(self.state_blocks)

    # ---- validation ------------------------------------------------------------------
    def _read(self, ep: Episode, blocks: Sequence[Block], what: str) -> dict[str, torch.Tensor]:
        if not isinstance(ep, Mapping):
            raise ValueError(f"{what}: expected a mapping of block name -> array, got {type(ep).__name__}")
        missing = [b.name for b in blocks if b.name not in ep]
        if missing:
            raise ValueError(f"{what}: missing block(s) {missing}; present keys: {sorted(ep)}")
        return {b.name: _as_tensor(ep[b.name], f"{what} {b.label()}") for b in blocks}

    def _common_dtype(self, tensors: Mapping[str, torch.Tensor]) -> torch.dtype:
        dtypes = {t.dtype for t in tensors.values()}
        return torch.float64 if torch.float64 in dtypes else next(iter(dtypes))

    def check_episode(self, ep: Episode) -> dict[str, torch.Tensor]:
        """Validate an episode; return its blocks as tensors of a common dtype."""
        t = self._read(ep, self.blocks, "episode")
        dtype = self._common_dtype(t)
        t = {k: v.to(dtype) for k, v in t.items()}
        lengths: dict[str, int] = {}
        for b in self.blocks:
            b.check(t[b.name])
            n = t[b.name].shape[b.time_axis] + (1 if b.kind == "command" else 0)
            lengths[b.name] = n
        if len(set(lengths.values())) != 1:
            raise ValueError(
                "episode: blocks disagree on the number of steps T (command blocks hold T-1 "
                f"transitions): {lengths}"
            )
        T = next(iter(lengths.values()))
        if T < 2:
            raise ValueError(f"episode: at least 2 steps are needed for one transition, got T={T}")
        return t

    # ---- encode / decode -------------------------------------------------------------
    def encode(self, ep: Episode) -> Any:
        """Episode -> pseudo-actions ``(..., T-1, D)``; numpy in, numpy out (torch likewise).

        Raises ``ValueError`` naming the block on wrong shapes, non-finite values, improper
        rotations or out-of-range grippers/commands.
        """
        is_torch = any(isinstance(v, torch.Tensor) for v in ep.values()) if isinstance(ep, Mapping) else False
        t = self.check_episode(ep)
        parts = [b.encode(t) for b in self.blocks]
        batch = torch.broadcast_shapes(*[p.shape[:-1] for p in parts])
        out = torch.cat([p.expand(batch + (p.shape[-1],)) for p in parts], -1)
        return out if is_torch else out.numpy()

    def start_state(self, ep: Episode, t: int = 0) -> dict[str, Any]:
        """The absolute state blocks at step ``t`` of an episode: the ``start`` for decoding."""
        out = {}
        for b in self.state_blocks:
            v = ep[b.name]
            idx = [slice(None)] * v.ndim
            idx[v.ndim + b.time_axis] = t
            out[b.name] = v[tuple(idx)]
        return out

    def check_start(self, start: Episode, dtype: torch.dtype) -> dict[str, torch.Tensor]:
        s = {k: v.to(dtype) for k, v in self._read(start, self.state_blocks, "start state").items()}
        for b in self.state_blocks:
            v = s[b.name]
            # Reuse the per-block checks by viewing the single step as a length-1 sequence.
            try:
                b.check(v.unsqueeze(b.time_axis))
            except ValueError as exc:
                raise ValueError(f"start state: {exc}") from None
        return s

    def proprio(self, start: Episode) -> np.ndarray:
        """The state blocks at one step (a start state) -> ``(P,)`` float64, the robot's
        proprioception as the model reads it: poses as translation + 6D rotation, grippers
        and points as they are, in layout order. Empty for command-only layouts."""
        if not self.state_blocks:
            return np.zeros(0)
        s = self.check_start(start, torch.float64)
        return torch.cat([b.proprio(s[b.name]) for b in self.state_blocks]).numpy()

    def decode(self, x: Any, start: Episode | None = None) -> dict[str, Any]:
        """Pseudo-actions ``(..., T-1, D)`` -> absolute episode, integrating from ``start``.

        ``start`` holds each state block's absolute value at step 0 (poses ``(..., 4, 4)``,
        gripper ``(...)``, points ``(..., N, 3)``); it may be omitted only when the codec
        has no state blocks. Returns state blocks over ``T`` steps and command blocks over
        ``T-1``, as numpy when ``x`` is numpy.
        """
        is_torch = isinstance(x, torch.Tensor)
        xt = _as_tensor(x, "pseudo-actions")
        _check_tail(xt, (None, self.width), "pseudo-actions", f"(..., T-1, {self.width})")
        if self.state_blocks and start is None:
            raise ValueError(
                f"start state: required to decode state blocks {[b.name for b in self.state_blocks]}"
            )
        s = self.check_start(start or {}, xt.dtype)
        decoded: dict[str, torch.Tensor] = {}
        for b in self.blocks:
            part = xt[..., self.slices[b.name]]
            b.check_encoded(part)
            decoded[b.name] = b.decode(part, s, decoded)
        if is_torch:
            return decoded
        return {k: v.numpy() for k, v in decoded.items()}

    def project(self, x: Any) -> Any:
        """Model output ``(..., D)`` -> the nearest decodable pseudo-actions (bounded values
        clipped to their range; everything else unchanged). Non-finite values stay and are
        rejected by :meth:`decode`."""
        is_torch = isinstance(x, torch.Tensor)
        xt = _as_tensor(x, "pseudo-actions")
        _check_tail(xt, (None, self.width), "pseudo-actions", f"(..., T-1, {self.width})")
        out = torch.cat([b.project(xt[..., self.slices[b.name]]) for b in self.blocks], -1)
        return out if is_torch else out.numpy()

    def describe(self) -> list[tuple[int, str, str, str]]:
        """Rows ``(index, dim name, unit, block)`` for tables and docs."""
        rows = []
        for b in self.blocks:
            sl = self.slices[b.name]
            for k, (n, u) in enumerate(zip(b.dim_names(), b.units())):
                rows.append((sl.start + k, n, u, type(b).__name__))
        return rows
