"""Command blocks: native per-step actions (delta poses, delta positions, scalar commands)
carried through the codec as they are, within their limits."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch

from cosmos3_robot import geometry as geo
from cosmos3_robot.codec.blocks import Block, BoundedScalarBlock
from cosmos3_robot.codec.checks import check_finite, check_tail, first_index


def _check_native(value: torch.Tensor, width: int, limit: float, what: str, expected: str) -> None:
    """A native command array ``(..., T-1, width)``: right shape, finite, within ``[-limit, limit]``."""
    check_tail(value, (None, width), what, expected)
    check_finite(value, what)
    over = value.abs() > limit + 1e-6
    if bool(over.any()):
        idx = first_index(over)
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
