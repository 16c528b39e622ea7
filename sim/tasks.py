"""Built-in table-top tasks as gymnasium environments.

Observation (``dict``):
  ``front``, ``wrist``: ``(S, S, 3)`` uint8 images (S = ``image_size``, 64..256), as listed
  in ``cameras``; ``state``: ``(8,)`` float32 = tcp position (3, m, world frame), tcp
  orientation quaternion (4, w x y z), gripper command in effect (1, 0 open .. 1 closed).
Action: ``(8,)`` float32 in the same layout: the absolute tcp target pose and gripper
  closure. Targets are clipped to :data:`WORKSPACE_LOW`/``HIGH`` and to
  :data:`MAX_STEP_M` per control step; a non-finite action raises ``ValueError`` (never
  sent to the simulator).
Reward 1 on the step the task's success predicate first holds; that step terminates the
episode (``info["success"]``). ``info["instruction"]`` holds the language instruction.

The ``state`` layout is also the raw layout of the ``sim_arm`` embodiment's adapters
(position + quaternion -> ``ee`` pose, gripper), so recorded episodes train directly.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from cosmos3_robot.sim import render as _render  # noqa: F401  (sets MUJOCO_GL before mujoco loads)

import gymnasium as gym  # noqa: E402
import mujoco  # noqa: E402

from cosmos3_robot.sim.scene import (  # noqa: E402
    CONTROL_HZ, CUBE_HALF, FINGER_OPEN, PAD_HALF, PHYSICS_DT, TABLE_Z, TCP_OFFSET, SceneSpec, scene_xml,
)

STATE_DIM = 8
_RENDER_OWNER: weakref.ReferenceType | None = None  # the env holding this process's renderer
WORKSPACE_LOW = np.array([0.25, -0.32, TABLE_Z + 0.005])
WORKSPACE_HIGH = np.array([0.75, 0.32, TABLE_Z + 0.35])
MAX_STEP_M = 0.06  # largest tcp target move per control step (m)
DOWN = np.array([1.0, 0.0, 0.0, 0.0])  # identity tcp orientation: fingers pointing down

COLORS: dict[str, tuple[float, float, float]] = {
    "red": (0.85, 0.12, 0.10),
    "green": (0.15, 0.65, 0.20),
    "blue": (0.12, 0.25, 0.90),
    "yellow": (0.95, 0.82, 0.10),
}


@dataclass(frozen=True)
class Layout:
    """One episode's randomised scene: object positions (x, y) and colour names."""

    cubes: tuple[tuple[float, float], ...] = ()
    cube_yaw: tuple[float, ...] = ()
    pads: tuple[tuple[float, float], ...] = ()
    targets: tuple[tuple[float, float], ...] = ()
    colors: dict[str, str] | None = None  # object name -> colour name
    goal: dict[str, str] | None = None  # role in the instruction -> object name ("cube": "cube1")
    hand: tuple[float, float, float] = (0.45, 0.0, TABLE_Z + 0.2)


def _spread(rng: np.random.Generator, n: int, low: tuple[float, float], high: tuple[float, float],
            min_dist: float, avoid: list[np.ndarray] | None = None) -> list[np.ndarray]:
    """``n`` points uniform in the box, pairwise (and from ``avoid``) at least ``min_dist`` apart."""
    pts: list[np.ndarray] = []
    others = list(avoid or [])
    for _ in range(1000):
        p = rng.uniform(low, high)
        if all(np.linalg.norm(p - q) >= min_dist for q in pts + others):
            pts.append(p)
            if len(pts) == n:
                return pts
    raise RuntimeError(f"could not place {n} objects {min_dist} m apart in {low}..{high}")


class TableTopEnv(gym.Env):
    """Base class: the scene, the end-effector controller, rendering and the step loop."""

    # an integer: video writers (LeRobot's eval, PyAV) take a frame rate, not a float
    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["rgb_array"], "render_fps": int(CONTROL_HZ)}
    task: ClassVar[str] = ""
    scene: ClassVar[SceneSpec] = SceneSpec()
    max_steps: ClassVar[int] = 100

    def __init__(self, render_mode: str | None = "rgb_array", image_size: int = 96,
                 cameras: tuple[str, ...] = ("front", "wrist"), max_episode_steps: int | None = None):
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode: expected 'rgb_array' or None, got {render_mode!r}")
        if not 32 <= int(image_size) <= 512:
            raise ValueError(f"image_size: expected 32..512 px, got {image_size}")
        unknown = set(cameras) - {"front", "wrist"}
        if unknown:
            raise ValueError(f"cameras: unknown {sorted(unknown)}; available: ['front', 'wrist']")
        self.render_mode = render_mode
        self.image_size = int(image_size)
        self.cameras = tuple(cameras)
        self.horizon = int(max_episode_steps or self.max_steps)
        spec = SceneSpec(self.scene.n_cubes, self.scene.n_pads, self.scene.n_targets, self.image_size)
        self.model = mujoco.MjModel.from_xml_string(scene_xml(spec))
        self.data = mujoco.MjData(self.model)
        self._substeps = int(round(1.0 / (CONTROL_HZ * PHYSICS_DT)))
        self._renderer: mujoco.Renderer | None = None
        self._tcp = self.model.site("tcp").id
        self._fingers = [self.model.joint("finger_left").qposadr[0], self.model.joint("finger_right").qposadr[0]]
        self._hand_qpos = self.model.joint("hand").qposadr[0]
        self._hand_dof = self.model.joint("hand").dofadr[0]
        self._mocap = self.model.body("mocap").mocapid[0]
        self.observation_space = gym.spaces.Dict({
            **{c: gym.spaces.Box(0, 255, (self.image_size, self.image_size, 3), np.uint8) for c in self.cameras},
            "state": gym.spaces.Box(-np.inf, np.inf, (STATE_DIM,), np.float32),
        })
        self.action_space = gym.spaces.Box(
            np.r_[WORKSPACE_LOW, -np.ones(4), 0.0].astype(np.float32),
            np.r_[WORKSPACE_HIGH, np.ones(4), 1.0].astype(np.float32), dtype=np.float32)
        self.layout = Layout()
        self.instruction = ""
        self.steps = 0
        self.gripper = 0.0
        self._target_pos = np.zeros(3)

    # ---- task hooks ------------------------------------------------------------------
    def sample_layout(self, rng: np.random.Generator) -> tuple[Layout, str]:
        raise NotImplementedError

    def is_success(self) -> bool:
        raise NotImplementedError

    # ---- privileged state (experts, success checks, tests) ---------------------------
    def tcp_pos(self) -> np.ndarray:
        return self.data.site_xpos[self._tcp].copy()

    def tcp_quat(self) -> np.ndarray:
        q = np.empty(4)
        mujoco.mju_mat2Quat(q, self.data.site_xmat[self._tcp])
        return q if q[0] >= 0 else -q

    def body_pos(self, name: str) -> np.ndarray:
        return self.data.body(name).xpos.copy()

    def finger_opening(self) -> float:
        """Mean finger travel from the centre (m); 0 closed .. ``FINGER_OPEN`` open."""
        return float(np.mean(self.data.qpos[self._fingers]))

    def released(self) -> bool:
        """Fingers (nearly) fully open: nothing is held, whatever a cube's yaw."""
        return self.finger_opening() > FINGER_OPEN - 0.005

    # ---- gymnasium API ---------------------------------------------------------------
    def _apply_layout(self, lay: Layout, rng: np.random.Generator) -> None:
        m, d = self.model, self.data
        mujoco.mj_resetData(m, d)
        for i, (xy, yaw) in enumerate(zip(lay.cubes, lay.cube_yaw)):
            adr = m.joint(f"cube{i}").qposadr[0]
            d.qpos[adr: adr + 3] = [xy[0], xy[1], TABLE_Z + CUBE_HALF]
            d.qpos[adr + 3: adr + 7] = [np.cos(yaw / 2), 0, 0, np.sin(yaw / 2)]
        for i, xy in enumerate(lay.pads):
            m.body(f"pad{i}").pos[:2] = xy
        for i, xy in enumerate(lay.targets):
            m.body(f"target{i}").pos[:] = [xy[0], xy[1], TABLE_Z + 0.05]
        for name, color in (lay.colors or {}).items():
            rgb = np.clip(np.array(COLORS[color]) + rng.uniform(-0.06, 0.06, 3), 0, 1)
            m.geom(name).rgba[:] = [*rgb, 1.0]
        hand = np.array(lay.hand)
        d.qpos[self._hand_qpos: self._hand_qpos + 3] = hand + [0, 0, TCP_OFFSET]
        d.qpos[self._hand_qpos + 3: self._hand_qpos + 7] = DOWN
        d.qpos[self._fingers] = FINGER_OPEN
        d.mocap_pos[self._mocap] = hand
        d.mocap_quat[self._mocap] = DOWN
        d.ctrl[:] = FINGER_OPEN
        mujoco.mj_forward(m, d)
        self._target_pos = hand.copy()
        for _ in range(20):  # let objects settle
            mujoco.mj_step(m, d)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        lay, text = self.sample_layout(self.np_random)
        self.layout, self.instruction = lay, text
        self.steps, self.gripper = 0, 0.0
        self._apply_layout(lay, self.np_random)
        return self._obs(), self._info(False)

    def step(self, action):
        a = np.asarray(action, dtype=np.float64)
        if a.shape != (STATE_DIM,):
            raise ValueError(f"action: expected shape (8,) = tcp position (3, m), quaternion w x y z (4), "
                             f"gripper 0..1 (1); got {a.shape}")
        if not np.all(np.isfinite(a)):
            raise ValueError(f"action: non-finite values at indices {np.flatnonzero(~np.isfinite(a)).tolist()}")
        q = a[3:7]
        n = np.linalg.norm(q)
        if n < 1e-6:
            raise ValueError("action: quaternion (indices 3..6) has zero norm")
        pos = np.clip(a[:3], WORKSPACE_LOW, WORKSPACE_HIGH)
        move = pos - self._target_pos
        dist = np.linalg.norm(move)
        if dist > MAX_STEP_M:
            pos = self._target_pos + move * (MAX_STEP_M / dist)
        self._target_pos = pos
        self.gripper = float(np.clip(a[7], 0.0, 1.0))
        self.data.mocap_pos[self._mocap] = pos
        self.data.mocap_quat[self._mocap] = q / n
        self.data.ctrl[:] = FINGER_OPEN * (1.0 - self.gripper)
        mujoco.mj_step(self.model, self.data, nstep=self._substeps)
        if not np.all(np.isfinite(self.data.qpos)):
            raise FloatingPointError(f"{self.task}: simulation diverged at step {self.steps}")
        self.steps += 1
        success = self.is_success()
        truncated = self.steps >= self.horizon and not success
        return self._obs(), float(success), success, truncated, self._info(success)

    def settings(self, seed: int) -> dict[str, Any]:
        """What an episode runs under, for the evaluation report."""
        return {"image_size": self.image_size, "max_steps": self.horizon, "cameras": list(self.cameras)}

    def state(self) -> np.ndarray:
        return np.r_[self.tcp_pos(), self.tcp_quat(), self.gripper].astype(np.float32)

    def _info(self, success: bool) -> dict[str, Any]:
        return {"instruction": self.instruction, "success": bool(success), "task": self.task}

    def _obs(self) -> dict[str, np.ndarray]:
        obs = {c: self.render_camera(c) for c in self.cameras} if self.render_mode else {}
        obs["state"] = self.state()
        return obs

    def render_camera(self, camera: str) -> np.ndarray:
        """``(S, S, 3)`` uint8 image from ``camera``.

        One live renderer per process: several OSMesa contexts alive at once were seen to
        return another camera's image, so creating one closes any other env's (re-created
        lazily if that env renders again)."""
        global _RENDER_OWNER
        if self._renderer is None:
            other = _RENDER_OWNER() if _RENDER_OWNER is not None else None
            if other is not None and other is not self:
                other.close()
            _RENDER_OWNER = weakref.ref(self)
            try:
                self._renderer = mujoco.Renderer(self.model, self.image_size, self.image_size)
            except Exception as exc:  # a GL context failure; say how to fix it
                raise _render.renderer_error(exc) from exc
        self._renderer.update_scene(self.data, camera=camera)
        return self._renderer.render().copy()

    def render(self):
        return self.render_camera("front") if self.render_mode == "rgb_array" else None

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None


# ---- the tasks ---------------------------------------------------------------------
REGION_LOW, REGION_HIGH = (0.36, -0.2), (0.64, 0.2)


def _two_colors(rng: np.random.Generator) -> tuple[str, str]:
    a, b = rng.choice(list(COLORS), size=2, replace=False)
    return str(a), str(b)


def _hand_start(rng: np.random.Generator) -> tuple[float, float, float]:
    x, y = rng.uniform((0.38, -0.08), (0.46, 0.08))
    return (float(x), float(y), TABLE_Z + rng.uniform(0.17, 0.22))


class ReachEnv(TableTopEnv):
    """Move the gripper to the named one of two coloured targets (within 3 cm)."""

    task = "reach"
    scene = SceneSpec(n_targets=2)
    max_steps = 40
    tolerance = 0.03

    def sample_layout(self, rng):
        pts = _spread(rng, 2, REGION_LOW, REGION_HIGH, 0.12)
        c = _two_colors(rng)
        g = int(rng.random() >= 0.5)
        lay = Layout(targets=tuple(map(tuple, pts)), colors={"target0": c[0], "target1": c[1]},
                     goal={"target": f"target{g}"}, hand=_hand_start(rng))
        return lay, f"reach the {c[g]} target"

    def goal_pos(self) -> np.ndarray:
        return self.body_pos(self.layout.goal["target"])

    def is_success(self):
        return bool(np.linalg.norm(self.tcp_pos() - self.goal_pos()) < self.tolerance)


class PushEnv(TableTopEnv):
    """Push the cube into the named one of two coloured zones (one in front of it, one behind)."""

    task = "push"
    scene = SceneSpec(n_cubes=1, n_pads=2)
    max_steps = 80

    def sample_layout(self, rng):
        cube = rng.uniform((0.46, -0.12), (0.54, 0.12))
        off = rng.uniform(0.13, 0.15)
        zones = [cube + [off, rng.uniform(-0.02, 0.02)], cube - [off, rng.uniform(-0.02, 0.02)]]
        order = rng.permutation(2)
        c = _two_colors(rng)
        g = int(rng.random() >= 0.5)
        cube_color = "red" if "red" not in c else ("blue" if "blue" not in c else "green")
        lay = Layout(cubes=(tuple(cube),), cube_yaw=(float(rng.uniform(-0.2, 0.2)),),
                     pads=(tuple(zones[order[0]]), tuple(zones[order[1]])),
                     colors={"cube0": cube_color, "pad0": c[0], "pad1": c[1]}, goal={"zone": f"pad{g}"},
                     hand=_hand_start(rng))
        return lay, f"push the cube to the {c[g]} zone"

    def goal_pos(self) -> np.ndarray:
        return self.body_pos(self.layout.goal["zone"])

    def is_success(self):
        d = np.abs(self.body_pos("cube0")[:2] - self.goal_pos()[:2])
        return bool(np.all(d < PAD_HALF))


class PickPlaceEnv(TableTopEnv):
    """Pick the named one of two cubes and put it on the named one of two pads."""

    task = "pick_place"
    scene = SceneSpec(n_cubes=2, n_pads=2)
    max_steps = 100

    def sample_layout(self, rng):
        pads = _spread(rng, 2, REGION_LOW, REGION_HIGH, 0.16)
        cubes = _spread(rng, 2, REGION_LOW, REGION_HIGH, 0.1, avoid=pads)
        cc = _two_colors(rng)
        pc = _two_colors(rng)
        i, j = int(rng.integers(2)), int(rng.integers(2))
        lay = Layout(cubes=tuple(map(tuple, cubes)), cube_yaw=tuple(rng.uniform(-0.3, 0.3, 2)),
                     pads=tuple(map(tuple, pads)),
                     colors={"cube0": cc[0], "cube1": cc[1], "pad0": pc[0], "pad1": pc[1]},
                     goal={"cube": f"cube{i}", "pad": f"pad{j}"}, hand=_hand_start(rng))
        return lay, f"put the {cc[i]} cube on the {pc[j]} pad"

    def objects(self) -> tuple[str, str]:
        """(the named cube, the named pad) body names."""
        return self.layout.goal["cube"], self.layout.goal["pad"]

    def is_success(self):
        cube, pad = self.objects()
        p = self.body_pos(cube)
        inside = np.all(np.abs(p[:2] - self.body_pos(pad)[:2]) < PAD_HALF)
        return bool(inside and p[2] < TABLE_Z + CUBE_HALF + 0.01 and self.released())


class StackEnv(TableTopEnv):
    """Stack the named cube on the other one."""

    task = "stack"
    scene = SceneSpec(n_cubes=2)
    max_steps = 100

    def sample_layout(self, rng):
        cubes = _spread(rng, 2, REGION_LOW, REGION_HIGH, 0.12)
        top, bottom = _two_colors(rng)
        lay = Layout(cubes=tuple(map(tuple, cubes)), cube_yaw=tuple(rng.uniform(-0.3, 0.3, 2)),
                     colors={"cube0": top, "cube1": bottom}, hand=_hand_start(rng))
        return lay, f"stack the {top} cube on the {bottom} cube"

    def is_success(self):
        top, bottom = self.body_pos("cube0"), self.body_pos("cube1")
        aligned = np.linalg.norm(top[:2] - bottom[:2]) < 0.02
        on = abs(top[2] - bottom[2] - 2 * CUBE_HALF) < 0.006
        return bool(aligned and on and self.released())


TASKS: dict[str, type[TableTopEnv]] = {c.task: c for c in (ReachEnv, PushEnv, PickPlaceEnv, StackEnv)}
