"""Single-arm embodiments: 19D (ego + end-effector + gripper), 10D and dual-arm 20D.

Raw keys (after the adapters): ``ee`` ``(T, 4, 4)`` end-effector pose in the world/base
frame (metres), ``gripper`` ``(T,)`` in [0 open, 1 closed], and for 19D optionally ``ego``
``(T, 4, 4)``, the camera/ego pose; a fixed camera leaves it out and gets the identity.
"""

from __future__ import annotations

from cosmos3_robot.codec import ActionCodec, GripperBlock, PoseBlock
from cosmos3_robot.embodiment import Embodiment
from cosmos3_robot.transforms import DefaultIdentityPose, PoseFromPosRotation, Split, Squeeze


def single_arm() -> Embodiment:
    """19D = ego/camera 9 + end-effector 9 (in the ego frame) + gripper 1 (the design card)."""
    return Embodiment(
        name="single_arm",
        codec=ActionCodec((
            PoseBlock("ego", description="camera/ego pose in the world; identity for a fixed camera"),
            PoseBlock("ee", parent="ego", description="end-effector pose, expressed in the ego frame"),
            GripperBlock("gripper", description="gripper closure, 0 open .. 1 closed"),
        )),
        fps=15.0,
        chunk=16,
        description=(
            "Single arm, 19D pseudo-actions: frame-wise relative ego pose (9), end-effector "
            "pose in the ego frame (9), absolute gripper (1). A fixed camera has an identity ego."
        ),
        adapters=(DefaultIdentityPose("ego", like="ee"),),
    )


def single_arm_10d() -> Embodiment:
    """10D = end-effector 9 + gripper 1 (fixed base; the released Cosmos layout)."""
    return Embodiment(
        name="single_arm_10d",
        codec=ActionCodec((
            PoseBlock("ee", description="end-effector pose in the robot base frame"),
            GripperBlock("gripper", description="gripper closure, 0 open .. 1 closed"),
        )),
        fps=15.0,
        chunk=16,
        description=(
            "Fixed-base single arm, 10D: frame-wise relative end-effector pose (9) + absolute "
            "gripper (1), as in the released Cosmos code (DROID, UMI, Bridge, Fractal)."
        ),
    )


def dual_arm() -> Embodiment:
    """20D = (end-effector 9 + gripper 1) x 2, left arm first."""
    return Embodiment(
        name="dual_arm",
        codec=ActionCodec((
            PoseBlock("left_ee", description="left end-effector pose in the base frame"),
            GripperBlock("left_gripper", description="left gripper closure, 0 open .. 1 closed"),
            PoseBlock("right_ee", description="right end-effector pose in the base frame"),
            GripperBlock("right_gripper", description="right gripper closure, 0 open .. 1 closed"),
        )),
        fps=15.0,
        chunk=16,
        description="Dual arm, 20D = 2 x (relative end-effector pose 9 + gripper 1), left then right.",
    )


_SIM_ARM_ADAPTERS = (
    Split("state", (("ee_pos", 0, 3), ("ee_quat", 3, 7), ("gripper", 7, 8))),
    PoseFromPosRotation(pos="ee_pos", rot="ee_quat", out="ee", rotation="quat_wxyz"),
    Squeeze("gripper"),
)
"""The 8D simulator state/action vector -> ``ee`` pose and ``gripper`` (both sim_arm layouts)."""


def sim_arm() -> Embodiment:
    """The built-in MuJoCo tasks' arm: the 10D layout over the simulator's state vector.

    Raw key ``state`` ``(T, 8)`` = tcp position (3, m), quaternion w x y z (4), gripper
    (1, 0 open .. 1 closed): the layout of the tasks' observations *and* actions, so
    ``to_raw`` of a decoded chunk is directly a sequence of env actions.
    """
    return Embodiment(
        name="sim_arm",
        codec=single_arm_10d().codec,
        fps=10.0,
        chunk=16,
        description=(
            "Built-in MuJoCo table-top arm (cosmos3_robot.sim): 10D = frame-wise relative tcp "
            "pose (9) + absolute gripper (1), from the 8D state position + quaternion (wxyz) + gripper."
        ),
        adapters=_SIM_ARM_ADAPTERS,
    )


def sim_arm_absolute() -> Embodiment:
    """The built-in arm with absolute targets: the same raw layout as :func:`sim_arm`, but
    each chunk step is the tcp target pose in the base frame (9) + gripper (1), the action
    space ACT and Diffusion Policy learn on these tasks (``window.embodiment=sim_arm_absolute``)."""
    return Embodiment(
        name="sim_arm_absolute",
        codec=ActionCodec((
            PoseBlock("ee", relative="absolute", description="tcp target pose in the robot base frame"),
            GripperBlock("gripper", description="gripper closure, 0 open .. 1 closed"),
        )),
        fps=10.0,
        chunk=16,
        description=(
            "Built-in MuJoCo table-top arm with absolute targets: tcp target pose in the base "
            "frame (9) + gripper (1), from the same 8D state as sim_arm."
        ),
        adapters=_SIM_ARM_ADAPTERS,
    )

