"""Humanoid 57D (ego + two wrists + fingertips) and AgiBot 29D (head + two arms).

Raw keys: ``ego`` ``(T, 4, 4)`` (pelvis/head frame in the world), ``right_wrist`` and
``left_wrist`` ``(T, 4, 4)`` world poses, ``right_fingertips`` and ``left_fingertips``
``(T, 5, 3)`` world positions in metres, ordered thumb, index, middle, ring, little.
"""

from __future__ import annotations

from cosmos3_robot.codec import ActionCodec, GripperBlock, PointsBlock, PoseBlock
from cosmos3_robot.embodiment import Embodiment

FINGERS = ("thumb", "index", "middle", "ring", "little")


def humanoid() -> Embodiment:
    """57D = ego 9 + right wrist 9 + right fingertips 15 + left wrist 9 + left fingertips 15."""
    blocks = [PoseBlock("ego", description="ego (head/pelvis) pose in the world")]
    for side in ("right", "left"):
        blocks.append(PoseBlock(f"{side}_wrist", parent="ego", description=f"{side} wrist pose in the ego frame"))
        blocks.append(PointsBlock(
            f"{side}_fingertips", frame=f"{side}_wrist", n_points=5, point_names=FINGERS,
            description=f"{side} fingertip positions in that step's {side} wrist frame",
        ))
    return Embodiment(
        name="humanoid",
        codec=ActionCodec(tuple(blocks)),
        fps=30.0,
        chunk=16,
        description=(
            "Humanoid, 57D: relative ego pose (9); per hand (right, then left) the wrist pose in "
            "the ego frame (9) and the 5 fingertip positions in that wrist's frame (15)."
        ),
    )


def agibot() -> Embodiment:
    """29D = head 9 + (end-effector 9 + gripper 1) x 2, left arm first (released Cosmos layout)."""
    return Embodiment(
        name="agibot",
        codec=ActionCodec((
            PoseBlock("head", description="head pose in the base frame"),
            PoseBlock("left_ee", description="left end-effector pose in the base frame"),
            GripperBlock("left_gripper", description="left gripper closure, 0 open .. 1 closed"),
            PoseBlock("right_ee", description="right end-effector pose in the base frame"),
            GripperBlock("right_gripper", description="right gripper closure, 0 open .. 1 closed"),
        )),
        fps=30.0,
        chunk=16,
        description="AgiBot, 29D: relative head pose (9) + 2 x (end-effector 9 + gripper 1).",
    )
