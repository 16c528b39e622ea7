"""DROID (Franka, 15 Hz): 10D from the Cartesian end-effector state, Cosmos frame convention.

Raw keys: ``cartesian_position`` ``(T, 6)`` = position (3, metres, robot base frame) and
extrinsic roll-pitch-yaw (3, radians; scipy ``"xyz"``), ``gripper_position`` ``(T, 1)`` in
[0 open, 1 closed]. Before encoding, each end-effector rotation is right-multiplied by
``Rz(-90 deg)`` into the OpenCV-style frame the released Cosmos code uses. One DROID
release stores the gripper flipped (``1 - g``): :func:`make_droid` takes ``flip_gripper``.
"""

from __future__ import annotations

from cosmos3_robot.codec import ActionCodec, GripperBlock, PoseBlock
from cosmos3_robot.embodiment import Embodiment
from cosmos3_robot.transforms import (
    FlipRange,
    PoseFromPosRotation,
    Rename,
    RightMultiplyRotation,
    Split,
    Squeeze,
    Transform,
)

RZ_MINUS_90 = ((0.0, 1.0, 0.0), (-1.0, 0.0, 0.0), (0.0, 0.0, 1.0))
"""``Rz(-90 deg)``: columns are the images of x, y, z."""

CONTROL_HZ = 15.0
CHUNK = 16


def make_droid(flip_gripper: bool = False, name: str = "droid") -> Embodiment:
    adapters: list[Transform] = [
        Split("cartesian_position", (("ee_pos", 0, 3), ("ee_rpy", 3, 6))),
        PoseFromPosRotation("ee_pos", "ee_rpy", "ee", rotation="euler:xyz"),
        RightMultiplyRotation("ee", RZ_MINUS_90),
        Rename((("gripper_position", "gripper"),)),
        Squeeze("gripper"),
    ]
    if flip_gripper:
        adapters.append(FlipRange("gripper", 0.0, 1.0))
    return Embodiment(
        name=name,
        codec=ActionCodec((
            PoseBlock("ee", description="end-effector pose in the base frame, OpenCV-style axes"),
            GripperBlock("gripper", description="gripper closure, 0 open .. 1 closed"),
        )),
        fps=CONTROL_HZ,
        chunk=CHUNK,
        description=(
            "DROID, 10D: relative end-effector pose (9, rotation right-multiplied by Rz(-90 deg)) "
            "+ gripper (1); chunk 16 at 15 Hz."
        ),
        adapters=tuple(adapters),
    )


def droid() -> Embodiment:
    return make_droid()
