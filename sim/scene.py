"""The table-top MJCF scene: a mocap-driven parallel gripper, cubes, pads and targets.

World frame: x away from the front camera's side of the table (towards the "robot base"
at x = 0), y to the left, z up, metres. The table top is at ``TABLE_Z``. The gripper is a
free-floating hand welded to a mocap body (the "end-effector space controller": each
control step moves the mocap target, the weld pulls the hand there through contacts), with
two position-controlled slide fingers. The end-effector frame is the ``tcp`` site between
the fingertips; its identity orientation points the fingers down.

Objects are created by name (``cube0``, ``pad0``, ``target0`` ...) so a task asks for as
many as it needs; colours and poses are set per episode by the task.
"""

from __future__ import annotations

from dataclasses import dataclass

TABLE_Z = 0.42  # table-top height (m)
TABLE_CENTER = (0.5, 0.0)  # (x, y) of the table centre (m)
TABLE_HALF = (0.3, 0.4)  # half extents of the table top (m)
CUBE_HALF = 0.02  # cube half size (m)
PAD_HALF = 0.05  # pad half size (m)
TARGET_RADIUS = 0.02  # reach-target sphere radius (m)
FINGER_OPEN = 0.045  # finger travel from the centre when fully open (m)
TCP_OFFSET = 0.055  # tcp (between the lower finger pads) below the hand body origin (m)

CONTROL_HZ = 10.0  # control steps per second
PHYSICS_DT = 0.002  # MuJoCo timestep (s)


@dataclass(frozen=True)
class SceneSpec:
    """How many of each object a task needs, and the camera image size."""

    n_cubes: int = 0
    n_pads: int = 0
    n_targets: int = 0
    image_size: int = 96


def _cube(i: int) -> str:
    h = CUBE_HALF
    return (f'<body name="cube{i}" pos="0.5 {0.1 * i} {TABLE_Z + h}"><freejoint name="cube{i}"/>'
            f'<geom name="cube{i}" type="box" size="{h} {h} {h}" mass="0.05" friction="1.2 0.01 0.001" '
            f'condim="4" solref="0.005 1" rgba="1 0 0 1"/></body>')


def _pad(i: int) -> str:
    return (f'<body name="pad{i}" pos="0.5 {0.1 * i} {TABLE_Z + 0.001}">'
            f'<geom name="pad{i}" type="box" size="{PAD_HALF} {PAD_HALF} 0.001" contype="0" conaffinity="0" '
            f'rgba="0 1 0 1"/></body>')


def _target(i: int) -> str:
    return (f'<body name="target{i}" pos="0.5 {0.1 * i} {TABLE_Z + TARGET_RADIUS}">'
            f'<geom name="target{i}" type="sphere" size="{TARGET_RADIUS}" contype="0" conaffinity="0" '
            f'rgba="0 0 1 1"/></body>')


def scene_xml(spec: SceneSpec) -> str:
    """The MJCF text of a scene with ``spec``'s objects."""
    cx, cy = TABLE_CENTER
    hx, hy = TABLE_HALF
    n = spec.image_size
    # the shadow map at 4x the image size: 1024 for 64 px images cost 3.5 of a frame's 10 ms of
    # OSMesa rendering (two cameras) for a mean change of about 1 grey level at the shadow edges
    finger = ('<geom type="box" size="0.012 0.006 0.025" pos="0 0 -0.045" mass="0.02" '
              'friction="1.5 0.02 0.002" condim="4" solref="0.005 1" rgba="0.25 0.25 0.28 1"/>')
    objects = "".join([_cube(i) for i in range(spec.n_cubes)] + [_pad(i) for i in range(spec.n_pads)]
                      + [_target(i) for i in range(spec.n_targets)])
    return f"""
<mujoco model="cosmos3_tabletop">
  <compiler angle="radian" autolimits="true"/>
  <option timestep="{PHYSICS_DT}" cone="elliptic" impratio="10" integrator="implicitfast"/>
  <visual><global offwidth="{max(n, 64)}" offheight="{max(n, 64)}"/><quality shadowsize="{4 * max(n, 64)}"/>
    <headlight ambient="0.35 0.35 0.35" diffuse="0.5 0.5 0.5"/></visual>
  <asset>
    <texture name="grid" type="2d" builtin="checker" rgb1="0.82 0.78 0.72" rgb2="0.78 0.74 0.68" width="64" height="64"/>
    <material name="table" texture="grid" texrepeat="6 8"/>
  </asset>
  <worldbody>
    <light pos="0.4 0 1.6" dir="0 0 -1" directional="true" diffuse="0.5 0.5 0.5" castshadow="true"/>
    <geom name="floor" type="plane" size="2 2 0.1" rgba="0.25 0.26 0.3 1" contype="0" conaffinity="0"/>
    <geom name="table" type="box" pos="{cx} {cy} {TABLE_Z - 0.02}" size="{hx} {hy} 0.02" material="table"
          friction="0.6 0.005 0.0001"/>
    <geom name="base" type="cylinder" pos="0.12 0 {TABLE_Z + 0.05}" size="0.06 0.05" rgba="0.3 0.3 0.35 1"
          contype="0" conaffinity="0"/>
    <camera name="front" pos="0.95 0 0.80" xyaxes="0 1 0 -0.645 0 0.764" fovy="42"/>
    <body name="mocap" mocap="true" pos="0.45 0 {TABLE_Z + 0.25}"/>
    <body name="hand" pos="0.45 0 {TABLE_Z + 0.25 + TCP_OFFSET}" gravcomp="1">
      <freejoint name="hand"/>
      <inertial pos="0 0 0" mass="0.6" diaginertia="0.002 0.002 0.002"/>
      <geom name="palm" type="box" size="0.015 0.06 0.012" pos="0 0 -0.008" rgba="0.85 0.85 0.88 1" contype="0"
            conaffinity="0"/>
      <geom name="wrist" type="cylinder" size="0.025 0.04" pos="0 0 0.04" rgba="0.85 0.85 0.88 1" contype="0"
            conaffinity="0"/>
      <camera name="wrist" pos="-0.07 0 0.02" xyaxes="0 -1 0 0.87 0 0.5" fovy="75"/>
      <site name="tcp" pos="0 0 -{TCP_OFFSET}" size="0.004" rgba="1 1 1 0"/>
      <body name="finger_left" pos="0 0.0 0" gravcomp="1">
        <joint name="finger_left" type="slide" axis="0 1 0" range="0 {FINGER_OPEN}" damping="2" armature="0.01"/>
        {finger}
      </body>
      <body name="finger_right" pos="0 0.0 0" gravcomp="1">
        <joint name="finger_right" type="slide" axis="0 -1 0" range="0 {FINGER_OPEN}" damping="2" armature="0.01"/>
        {finger}
      </body>
    </body>
    {objects}
  </worldbody>
  <contact><exclude body1="finger_left" body2="finger_right"/></contact>
  <equality><weld body1="mocap" body2="hand" relpose="0 0 {TCP_OFFSET} 1 0 0 0" solref="0.01 1"/></equality>
  <actuator>
    <position name="finger_left" joint="finger_left" kp="400" ctrlrange="0 {FINGER_OPEN}" forcerange="-15 15"/>
    <position name="finger_right" joint="finger_right" kp="400" ctrlrange="0 {FINGER_OPEN}" forcerange="-15 15"/>
  </actuator>
</mujoco>
"""
