"""``my_arm``: an example embodiment plugin for cosmos3-robot.

The robot is a position-controlled hand with a gripper. Its state is the commanded hand
position ``hand`` (3, metres, base frame) and the gripper ``grip`` (1, 0 open .. 1 closed);
its native action is ``action`` (4) = a hand displacement (3, metres per step) + the
gripper command (1). Two ways to learn it:

- ``my_arm``: absolute targets. A position-only pose (no rotation sensor or command) plus
  the gripper, both state blocks; a chunk comes back as ``{"hand": (n, 3), "grip": (n, 1)}``
  positions to go to.
- ``my_arm_delta``: the native commands. The hand pose (a state block, so the model reads
  where the hand is) plus a translation-only command block and a scalar gripper command; a
  chunk comes back as ``{"hand": (n, 3), "action": (n, 4)}``: the positions and the
  commands that reach them.
"""

from __future__ import annotations

from cosmos3_robot.codec import (ActionCodec, DeltaPositionCommandBlock, GripperBlock, PoseBlock,
                                 ScalarCommandBlock)
from cosmos3_robot.embodiment import Embodiment
from cosmos3_robot.transforms import PoseFromPosition, Split, Squeeze

FPS = 10.0
MAX_STEP = 0.05
"""The controller clips each displacement component to +-5 cm per step."""


def my_arm() -> Embodiment:
    return Embodiment(
        name="my_arm",
        codec=ActionCodec((
            PoseBlock("hand_pose", relative="absolute", description="hand target position (identity rotation)"),
            GripperBlock("grip", description="gripper closure, 0 open .. 1 closed"),
        )),
        fps=FPS,
        chunk=8,
        description="Example plugin: a position-controlled hand + gripper, absolute position targets (10D).",
        adapters=(PoseFromPosition(pos="hand", out="hand_pose"), Squeeze("grip")),
    )


def my_arm_delta() -> Embodiment:
    return Embodiment(
        name="my_arm_delta",
        codec=ActionCodec((
            PoseBlock("hand_pose", relative="absolute", description="hand target position (identity rotation)"),
            DeltaPositionCommandBlock("move", limit=MAX_STEP, description="hand displacement per step (m)"),
            ScalarCommandBlock("close", low=0.0, high=1.0, description="gripper command, 0 open .. 1 closed"),
        )),
        fps=FPS,
        chunk=8,
        description="Example plugin: the same hand with its native 4D commands (dx, dy, dz, gripper).",
        adapters=(PoseFromPosition(pos="hand", out="hand_pose"),
                  Split("action", (("move", 0, 3), ("close", 3, 4))), Squeeze("close")),
    )
