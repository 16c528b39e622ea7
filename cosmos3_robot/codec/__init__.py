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
ordered list of them: state blocks in :mod:`.blocks`, native command blocks in
:mod:`.commands`, the layout in :mod:`.layout`, shared input checks in :mod:`.checks`. Pose math lives in :mod:`cosmos3_robot.geometry` only.
"""

from cosmos3_robot.codec.blocks import Block, BoundedScalarBlock, GripperBlock, PointsBlock, PoseBlock
from cosmos3_robot.codec.checks import Episode
from cosmos3_robot.codec.commands import DeltaPoseCommandBlock, DeltaPositionCommandBlock, ScalarCommandBlock
from cosmos3_robot.codec.layout import ActionCodec

__all__ = ["ActionCodec", "Block", "BoundedScalarBlock", "DeltaPoseCommandBlock", "DeltaPositionCommandBlock",
           "Episode", "GripperBlock", "PointsBlock", "PoseBlock", "ScalarCommandBlock"]
