"""Autonomous-vehicle ego trajectory: 9D relative pose per step (60 steps at 10 Hz).

Raw key ``ego`` ``(T, 4, 4)``: vehicle pose in the world, x forward, y left, z up (metres).
Planar logs (2D waypoints + heading) become poses with :func:`from_waypoints`.
"""

from __future__ import annotations

from typing import Any

from cosmos3_robot.codec import ActionCodec, PoseBlock
from cosmos3_robot.embodiment import Embodiment
from cosmos3_robot.transforms import PoseFromPlanar

WAYPOINTS = PoseFromPlanar(xy="xy", heading="heading", out="ego")
"""Adapter step: ``xy`` ``(..., T, 2)`` metres + ``heading`` ``(..., T)`` radians -> ``ego`` poses."""


def av() -> Embodiment:
    return Embodiment(
        name="av",
        codec=ActionCodec((PoseBlock("ego", description="vehicle pose in the world (x fwd, y left, z up)"),)),
        fps=10.0,
        chunk=60,
        description="Autonomous vehicle: frame-wise relative ego pose (9) per step; 60 steps at 10 Hz.",
    )


def from_waypoints(xy: Any, heading: Any) -> dict[str, Any]:
    """A codec episode ``{"ego": (..., T, 4, 4)}`` from ground-plane waypoints and headings."""
    return WAYPOINTS({"xy": xy, "heading": heading})
