"""State blocks: absolute quantities over time (poses, bounded scalars and grippers, points)
and the pseudo-actions between steps; :class:`Block` is the base every block shares."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal, Mapping, get_args

import torch

from cosmos3_robot import geometry as geo
from cosmos3_robot.codec.checks import check_finite, check_tail, first_index, rot_tol


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
        check_finite(x, f"{self.label()} pseudo-actions")
        rot = self.rotation_dims()
        if rot:
            deg = geo.rot6d_degeneracy(x[..., rot[0]:rot[0] + 6])
            if bool((deg < 1e-6).any()):
                raise ValueError(
                    f"{self.label()} pseudo-actions: 6D rotation at index {first_index(deg < 1e-6)} is "
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
        check_tail(value, (None, 4, 4), what, "(..., T, 4, 4) homogeneous poses")
        check_finite(value, what)
        bottom = value[..., 3, :]
        ref = torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=value.dtype)
        if bool(((bottom - ref).abs() > 1e-6).any()):
            raise ValueError(f"{what}: last row of each pose must be [0, 0, 0, 1]")
        err = geo.rotation_error(value[..., :3, :3])
        tol = rot_tol(value.dtype)
        if bool((err > tol).any()):
            idx = first_index(err > tol)
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
            idx = first_index(out)
            raise ValueError(
                f"{what}: value {float(value[idx]):.4g} at index {idx} is outside the "
                f"range [{self.low:g}, {self.high:g}]"
            )

    def _check_values(self, value: torch.Tensor, expected: str) -> None:
        what = self.label()
        check_tail(value, (None,), what, expected)
        check_finite(value, what)
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
        check_tail(value, (None, self.n_points, 3), what, f"(..., T, {self.n_points}, 3) world points")
        check_finite(value, what)

    def encode(self, ep):
        frame = ep[self.frame][..., 1:, :, :]
        local = geo.transform_points(geo.pose_inverse(frame), ep[self.name][..., 1:, :, :])
        return local.flatten(-2)

    def decode(self, x, start, decoded):
        local = x.unflatten(-1, (self.n_points, 3))
        world = geo.transform_points(decoded[self.frame][..., 1:, :, :], local)
        s = start[self.name].expand(world.shape[:-3] + (self.n_points, 3))
        return torch.cat([s[..., None, :, :], world], -3)
