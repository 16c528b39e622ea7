"""Camera trajectory: 9D relative camera pose per step (camera-controlled video).

Raw key ``camera`` ``(T, 4, 4)``: camera-to-world pose, OpenCV axes (x right, y down,
z forward). Poses in OpenGL axes (y up, z backward) convert with
``RightMultiplyRotation("camera", OPENGL_TO_OPENCV)``.
"""

from __future__ import annotations

from cosmos3_robot.codec import ActionCodec, PoseBlock
from cosmos3_robot.embodiment import Embodiment

OPENGL_TO_OPENCV = ((1.0, 0.0, 0.0), (0.0, -1.0, 0.0), (0.0, 0.0, -1.0))


def camera() -> Embodiment:
    return Embodiment(
        name="camera",
        codec=ActionCodec((PoseBlock("camera", description="camera-to-world pose, OpenCV axes"),)),
        fps=24.0,
        chunk=16,
        description="Camera pose trajectory: frame-wise relative camera-to-world pose (9) per frame.",
    )
