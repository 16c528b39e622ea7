"""LIBERO (robosuite OSC_POSE): native 7D delta commands, and their 10D rot6d form.

Raw key ``actions`` ``(T-1, 7)``: delta position (3) and delta axis-angle (3), each in the
controller's normalised range [-1, 1], then gripper (-1 open, +1 close) (REFERENCE.md s. 3).

``libero_10d`` rewrites the deltas in physical units with the OSC_POSE controller's default
output scaling (robosuite ``osc_pose`` config: ``output_max`` 0.05 m and 0.5 rad for an
input of 1): ``[dpos (3, m), rot6d of the delta rotation (6), gripper (1)]``. This puts
LIBERO on the same footing as the pose-derived 10D layouts of other datasets.
"""

from __future__ import annotations

from cosmos3_robot.codec import ActionCodec, DeltaPoseCommandBlock, ScalarCommandBlock
from cosmos3_robot.embodiment import Embodiment
from cosmos3_robot.transforms import Split, Squeeze

OSC_POSE_POS_SCALE = 0.05
"""Metres per unit of normalised OSC_POSE position input (robosuite default output_max)."""
OSC_POSE_ROT_SCALE = 0.5
"""Radians per unit of normalised OSC_POSE rotation input (robosuite default output_max)."""

CONTROL_HZ = 20.0
CHUNK = 16

_ADAPTERS = (
    Split("actions", (("delta_ee", 0, 6), ("gripper", 6, 7))),
    Squeeze("gripper"),
)


def _gripper() -> ScalarCommandBlock:
    return ScalarCommandBlock("gripper", low=-1.0, high=1.0, unit="-1 open .. +1 close",
                              description="gripper command")


def _libero(name: str, delta_ee: DeltaPoseCommandBlock, description: str, normalize_rotation: bool) -> Embodiment:
    return Embodiment(
        name=name,
        codec=ActionCodec((delta_ee, _gripper())),
        fps=CONTROL_HZ,
        chunk=CHUNK,
        description=description,
        adapters=_ADAPTERS,
        normalize_rotation=normalize_rotation,
    )


def libero() -> Embodiment:
    """Native 7D: the commands as stored, validated to [-1, 1]."""
    return _libero(
        "libero",
        DeltaPoseCommandBlock("delta_ee", rotation="axis_angle", limit=1.0,
                              description="OSC_POSE delta position + axis-angle, normalised"),
        "LIBERO native 7D: OSC_POSE delta position (3) + delta axis-angle (3) + gripper (1).",
        normalize_rotation=True,
    )


def libero_10d() -> Embodiment:
    """10D rot6d form: delta position in metres + 6D delta rotation + gripper."""
    return _libero(
        "libero_10d",
        DeltaPoseCommandBlock("delta_ee", rotation="rot6d", limit=1.0,
                              translation_scale=OSC_POSE_POS_SCALE, rotation_scale=OSC_POSE_ROT_SCALE,
                              description="OSC_POSE delta in metres + 6D delta rotation"),
        "LIBERO 10D: delta position (3, m) + 6D delta rotation (6) + gripper command (1).",
        normalize_rotation=False,
    )
