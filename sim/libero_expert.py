"""A scripted pick-and-place expert for LIBERO tasks, and a recorder that writes its episodes in
the layout of LIBERO's released HDF5 files (issue #24 item 4).

The expert reads the simulator's object poses (privileged state: the expert's only, never a
policy's input) and returns LIBERO's own 7D actions: OSC_POSE deltas in ``[-1, 1]`` (position
scaled by the controller's 0.05 m, axis-angle by its 0.5 rad, world frame) and a gripper
command (-1 open, +1 close). It picks the task's first object of interest and puts it where
the goal predicate says: ``In <object> <fixture>_contain_region`` (libero_object: the basket)
or ``On <object> <other>`` (libero_spatial: the plate). Its phases: above the object, down
to a grasp height, close, lift, carry above the place, lower, open, back up. An object wider
than the open fingers (libero_spatial's bowls) is pinched by its wall, one finger inside.

:func:`record_libero` runs it under :class:`~cosmos3_robot.sim.libero.LiberoEnv` (the shipped
initial states, the protocol's wait steps) and writes ``<task>_demo.hdf5`` per task with
``data/demo_N/{actions, obs/{agentview_rgb, eye_in_hand_rgb, ee_pos, ee_ori, gripper_states,
joint_states}, states, rewards, dones}`` and the instruction in ``data.attrs["problem_info"]``,
the images upside down as LIBERO renders them: what
:data:`cosmos3_robot.data.sources.hdf5.LIBERO` reads.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy.spatial.transform import Rotation

POS_SCALE = 0.05
"""Metres per unit of a position action (robosuite OSC_POSE ``output_max``)."""
ROT_SCALE = 0.5
"""Radians per unit of a rotation action."""
OPEN, CLOSE = -1.0, 1.0
RIM_INSET = 0.007
"""Metres from an object's outer edge to the middle of its wall, for a rim grasp (the
LIBERO bowls' wall boxes are about 14 mm thick)."""
RIM_DEPTH = 0.018
"""Metres below the rim top the end effector goes for a rim grasp: the pads (5 mm below to
12 mm above it) on the wall, the fingers' ends (13 mm below) above the bowl's floor."""


def body_geoms(sim: Any, body_id: int) -> np.ndarray:
    """Indices of the collision geoms of body ``body_id`` and its descendants."""
    m = sim.model._model
    inside = {body_id}
    for b in range(body_id + 1, m.nbody):  # bodies are numbered parents first
        if int(m.body_parentid[b]) in inside:
            inside.add(b)
    geoms = [g for g in range(m.ngeom) if int(m.geom_bodyid[g]) in inside
             and not (m.geom_contype[g] == 0 and m.geom_conaffinity[g] == 0)]
    if not geoms:
        raise ValueError(f"body {body_id}: no collision geoms to bound")
    return np.asarray(geoms)


def body_box(sim: Any, geoms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """World-frame axis-aligned bounds ``(lo (3,), hi (3,))`` in metres of ``geoms``
    (:func:`body_geoms`; MuJoCo's per-geom ``geom_aabb``, rotated into the world)."""
    m, d = sim.model._model, sim.data._data
    R = d.geom_xmat[geoms].reshape(-1, 3, 3)
    centre = d.geom_xpos[geoms] + np.einsum("gij,gj->gi", R, m.geom_aabb[geoms, :3])
    ext = np.einsum("gij,gj->gi", np.abs(R), m.geom_aabb[geoms, 3:])
    return (centre - ext).min(0), (centre + ext).max(0)


@dataclass
class PickPlacePlan:
    """What the expert moves (``obj``) and where to (``place``): scene object names, and
    whether the goal puts it ``"in"`` the place's contain region or ``"on"`` it."""

    obj: str
    place: str
    kind: str  # "in" or "on"


def plan_of(domain: Any) -> PickPlacePlan:
    """The object to move and where to, from the task's goal (``In a b_contain_region`` or
    ``On a b``); other goals are an error naming them."""
    goal = domain.parsed_problem["goal_state"]
    if len(goal) != 1 or len(goal[0]) != 3 or goal[0][0].lower() not in ("in", "on"):
        raise ValueError(f"LIBERO expert: goal {goal!r} is not one 'In' or 'On' of two objects")
    kind, obj, place = goal[0][0].lower(), goal[0][1], goal[0][2]
    if kind == "in":
        place = place.removesuffix("_contain_region")
    for name in (obj, place):
        if name not in domain.obj_body_id:
            raise ValueError(f"LIBERO expert: {name!r} of goal {goal!r} is not a body of the scene")
    return PickPlacePlan(obj, place, kind)


@dataclass
class LiberoPickPlaceExpert:
    """Closed-loop phase machine on the simulator's state; :meth:`act` -> ``(7,)`` float32.

    Attributes:
        gain: position action per metre of error, in units of :data:`POS_SCALE`.
        max_move: cap on a position action's norm (1: the controller's 0.05 m a step).
        travel_move: the cap on the way to the object and while lifting it, where nothing is
            near the arm's reach (None: ``max_move``).
        noise: std (m) of per-episode jitter added to the grasp and place points, for varied
            demonstrations (0: none).
        clearance: the gap (m) the hand keeps from other objects on the way down; where the
            object's centre leaves less, the grasp moves within the object (see
            :meth:`_grasp_offset`).
    """

    gain: float = 1.0
    max_move: float = 0.6
    travel_move: float | None = None
    noise: float = 0.0
    clearance: float = 0.01
    seed: int | None = None
    rng: np.random.Generator = field(init=False)

    def __post_init__(self) -> None:
        self.rng = np.random.default_rng(self.seed)
        if self.travel_move is None:
            self.travel_move = self.max_move

    def reset(self, env: Any) -> None:
        """Plan from ``env`` (a :class:`LiberoEnv` just reset)."""
        self.env = env
        self.domain = env.env.env
        self.plan = plan_of(self.domain)
        self.geoms = {n: body_geoms(self.domain.sim, self.domain.obj_body_id[n])
                      for n in (self.plan.obj, self.plan.place)}  # found once; bounded every step
        self.phase, self.count = "above", 0
        self.R0 = Rotation.from_quat(env.raw["robot0_eef_quat"])  # hold the start orientation
        self.jitter = self.rng.normal(0.0, self.noise, 3) * np.array([1, 1, 0.3]) if self.noise else np.zeros(3)
        self.place_jitter = self.rng.normal(0.0, self.noise, 2) if self.noise else np.zeros(2)
        self.obj_top = float(self._box(self.plan.obj)[1][2])  # before it moves with the gripper
        self.rim = False
        self.grasp_offset, self.grasp_yaw = self._grasp_offset()
        # the jitter moves the grasp only as far as the fingers still close on the object
        # (a rim grasp's reach is about its point on the wall, a centre grasp's about the centre)
        about = self.grasp_offset if self.rim else np.zeros(2)
        self.jitter[:2] = np.clip(self.grasp_offset + self.jitter[:2] - about, -self.grasp_reach,
                                  self.grasp_reach) + about - self.grasp_offset
        self.R_hold = Rotation.from_euler("z", self.grasp_yaw) * self.R0

    def _box(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        return body_box(self.domain.sim, self.geoms[name])

    def _grasp_z(self, lo: np.ndarray, hi: np.ndarray) -> float:
        if self.rim:  # pads on the wall, the fingers' ends above the floor
            return float(hi[2] - RIM_DEPTH)
        return float(hi[2] - min(0.04, 0.5 * (hi[2] - lo[2])))

    def _grasp_offset(self) -> tuple[np.ndarray, float]:
        """Where and how the hand goes down: ``(offset (2,) metres from the object's centre,
        yaw (rad) about the world's vertical from the start orientation)``.

        The open hand's footprint (its collision boxes relative to the end effector at reset:
        fingers, pads and palm) is turned by each candidate yaw (0, 90 degrees; the fingers must
        close across the object with 4 mm to spare) and placed over candidate points spread over
        the object (along the fingers only as far as the pads still close on it). A pose's
        clearance is its smallest horizontal gap to any other object whose top reaches the
        footprint part's height (not counting a body whose box holds the object's centre, such
        as the cabinet round its open drawer). An object too wide for the fingers either way is taken by its
        wall (:data:`RIM_INSET` in from its edge, on the side and yaw that clear best; sets
        :attr:`rim`). Otherwise the centre at yaw 0 is kept when its clearance is at least
        :attr:`clearance` (most scenes); else the pose with the largest clearance (up to
        :attr:`clearance`), yaw 0 and the centre preferred among ties. Measured need: in
        libero_object task 1 the palm met the tomato sauce beside the cream cheese 40 mm above
        the grasp, in task 3 the salad dressing beside the bbq sauce."""
        sim, m = self.domain.sim, self.domain.sim.model._model
        eef = self.env.raw["robot0_eef_pos"]
        hand = body_geoms(sim, m.body("gripper0_right_gripper").id)
        names = [m.geom(int(g)).name or "" for g in hand]
        parts = [tuple(b - eef for b in body_box(sim, np.asarray([g]))) for g in hand]
        # the fingers close along the axis where the hand is widest
        axis0 = int(np.argmax([max(hi[i] for _, hi in parts) - min(lo[i] for lo, _ in parts) for i in (0, 1)]))
        pads = [pt for n, pt in zip(names, parts) if "pad" in n] or parts
        inner = min(min(abs(lo[axis0]), abs(hi[axis0])) for lo, hi in pads)  # pads' nearer faces
        lo, hi = self._box(self.plan.obj)
        centre, half = (lo[:2] + hi[:2]) / 2, (hi[:2] - lo[:2]) / 2
        z = self._grasp_z(lo, hi)
        # a body whose box holds the object's centre (the cabinet round a bowl in its drawer)
        # says nothing about where its walls are: its box meets every pose (measured: every wall
        # of task 4's bowl at -0.14..-0.17 m, so a few mm chose the -y wall, where the elbow
        # straightened 4 cm above the grasp and 4 of 4 seeds failed)
        mid, others = (lo + hi) / 2, []
        for n, b in self.domain.obj_body_id.items():
            if n != self.plan.obj:
                olo, ohi = body_box(sim, body_geoms(sim, b))
                if not np.all((olo <= mid) & (mid <= ohi)):
                    others.append((olo, ohi))

        def turned(yaw: float) -> list[tuple[np.ndarray, np.ndarray, float]]:
            c, s_ = np.cos(yaw), np.sin(yaw)
            out = []
            for plo, phi in parts:
                xy = np.array([[x, y] for x in (plo[0], phi[0]) for y in (plo[1], phi[1])]) @ np.array([[c, s_], [-s_, c]])
                out.append((xy.min(0), xy.max(0), float(plo[2])))
            return out

        def clear(off: np.ndarray, foot: list[tuple[np.ndarray, np.ndarray, float]]) -> float:
            c = centre + off
            gap = np.inf
            for flo, fhi, fz in foot:
                for olo, ohi in others:
                    if ohi[2] > z + fz:  # the neighbour reaches this part of the hand
                        gap = min(gap, float(np.maximum(olo[:2] - (c + fhi), (c + flo) - ohi[:2]).max()))
            return gap

        def reach_of(yaw: float) -> np.ndarray:
            axis = axis0 if yaw == 0.0 else 1 - axis0
            reach = np.maximum(half - 0.012, 0.0)
            reach[axis] = max(0.0, inner - half[axis] - 0.004)
            return reach

        def closes(yaw: float) -> bool:  # the fingers close across it this way, 4 mm to spare
            return bool(half[axis0 if yaw == 0.0 else 1 - axis0] + 0.004 <= inner)

        self.grasp_reach = reach_of(0.0)
        self.grasp_clearance = clear(np.zeros(2), turned(0.0))
        if self.grasp_clearance >= self.clearance and closes(0.0):
            return np.zeros(2), 0.0
        poses = []
        for yaw in (0.0, np.pi / 2):
            if not closes(yaw):
                continue
            reach, foot = reach_of(yaw), turned(yaw)
            for u in np.linspace(-reach[0], reach[0], 9):
                for v in np.linspace(-reach[1], reach[1], 9):
                    off = np.array([u, v])
                    poses.append(((round(min(clear(off, foot), self.clearance), 3), -yaw, -float(np.linalg.norm(off))), off, yaw, foot))
        if not poses:  # wider than the open fingers (a bowl): pinch its wall, one finger inside
            self.rim = True
            # the hand sets the bowl down at the place's centre plus the offset: among walls that
            # clear equally, the one that leaves the hand nearest the robot's base (libero_spatial
            # task 9's plate lies at the arm's reach: from the far wall the elbow straightened
            # 2 cm above the release height, joint 4 at its limit, and the bowl slid off the rim)
            plo, phi = self._box(self.plan.place)
            base = sim.data._data.xpos[m.body("robot0_base").id][:2]
            for yaw in (0.0, np.pi / 2):
                axis, foot = (axis0 if yaw == 0.0 else 1 - axis0), turned(yaw)
                for sign in (-1.0, 1.0):
                    off = np.zeros(2)
                    off[axis] = sign * (half[axis] - RIM_INSET)
                    reach = float(np.linalg.norm((plo[:2] + phi[:2]) / 2 + off - base))
                    poses.append(((round(min(clear(off, foot), self.clearance), 3), -round(reach, 3), -yaw), off, yaw, foot))
            _, off, yaw, foot = max(poses, key=lambda q: q[0])
            axis = axis0 if yaw == 0.0 else 1 - axis0
            self.grasp_clearance = clear(off, foot)
            self.grasp_reach = np.full(2, 0.01)
            self.grasp_reach[axis] = 0.003  # the wall's half thickness, less a margin
            return off, float(yaw)
        _, off, yaw, foot = max(poses, key=lambda q: q[0])
        self.grasp_clearance, self.grasp_reach = clear(off, foot), reach_of(yaw)
        return off, float(yaw)

    def _move(self, target: np.ndarray, gripper: float) -> np.ndarray:
        raw = self.env.raw
        err = np.asarray(target) - raw["robot0_eef_pos"]
        a = err / POS_SCALE * self.gain
        n = np.linalg.norm(a)
        cap = self.travel_move if self.phase in ("above", "lift") else self.max_move
        if n > cap:
            a = a * (cap / n)
        rot = (self.R_hold * Rotation.from_quat(raw["robot0_eef_quat"]).inv()).as_rotvec() / ROT_SCALE
        return np.r_[a, np.clip(rot, -1, 1), gripper].astype(np.float32)

    def _stalled(self, eef: np.ndarray, steps: int = 8, tol: float = 0.001) -> bool:
        """The hand moved less than ``tol`` metres over the last ``steps`` steps of this phase.
        A place at the arm's reach (libero_spatial task 8's plate, from the bowl's far wall)
        straightens the elbow (joint 4 at its limit) 1-2 cm short of the target, where the
        controller holds still: the phase's step cap then spent 80 of the 220 steps."""
        if self.count == 1:
            self.trail = []
        self.trail.append(np.array(eef))
        return self.count > steps and float(np.linalg.norm(self.trail[-1] - self.trail[-1 - steps])) < tol

    def _near(self, target: np.ndarray, tol: float) -> bool:
        return bool(np.linalg.norm(np.asarray(target) - self.env.raw["robot0_eef_pos"]) < tol)

    def act(self, obs: Any = None) -> np.ndarray:
        lo, hi = self._box(self.plan.obj)
        plo, phi = self._box(self.plan.place)
        eef = self.env.raw["robot0_eef_pos"]
        self.count += 1
        p = self.phase
        if p in ("above", "down", "close"):
            grasp = np.r_[(lo[:2] + hi[:2]) / 2 + self.grasp_offset, self._grasp_z(lo, hi)] + self.jitter
            if p == "above":
                target = np.r_[grasp[:2], grasp[2] + 0.10]
                if self._near(target, 0.015) or self.count > 80:
                    self.phase, self.count = "down", 0
                return self._move(target, OPEN)
            if p == "down":
                if self._near(grasp, 0.008) or self.count > 40:
                    self.phase, self.count = "close", 0
                    self.grasp = grasp
                return self._move(grasp, OPEN)
            if self.count >= 12:
                self.phase, self.count = "lift", 0
                self.lift_from = eef.copy()
            return self._move(self.grasp, CLOSE)
        # carried: the object hangs below the fingers by how far they hold it from its bottom;
        # carry it with its bottom above the place's top, and let go a little above that
        hang = eef[2] - lo[2]
        release_z = phi[2] + (0.03 if self.plan.kind == "in" else 0.015) + hang
        carry_z = max(self.obj_top + 0.08, release_z + 0.03)
        place_xy = (plo[:2] + phi[:2]) / 2 + self.place_jitter
        if self.rim:  # held by its wall, 5 cm off its centre: the bowl's centre goes over the place
            place_xy = place_xy + self.grasp_offset
        if p == "lift":
            target = np.r_[self.lift_from[:2], carry_z]
            if self._near(target, 0.02) or self.count > 60:
                self.phase, self.count = "carry", 0
            return self._move(target, CLOSE)
        if p == "carry":
            target = np.r_[place_xy, carry_z]
            if self._near(target, 0.015) or self.count > 100 or self._stalled(eef):
                self.phase, self.count = "lower", 0
            return self._move(target, CLOSE)
        if p == "lower":
            target = np.r_[place_xy, release_z]
            if self._near(target, 0.01) or self.count > 40 or self._stalled(eef):
                self.phase, self.count = "open", 0
            return self._move(target, CLOSE)
        if p == "open":
            if self.count >= 10:
                self.phase, self.count = "retreat", 0
                self.retreat = np.r_[eef[:2], eef[2] + 0.1]
            return self._move(eef, OPEN)
        return self._move(self.retreat, OPEN)


@dataclass
class ExpertTaskStats:
    """One task's recording: attempts, successes (written demos) and steps."""

    suite: str
    task_index: int
    name: str
    attempts: int = 0
    successes: int = 0
    steps: list[int] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.successes / self.attempts if self.attempts else 0.0


def _raw_record(raw: dict[str, Any]) -> dict[str, np.ndarray]:
    """One step's observations in the release's keys (images as rendered: upside down)."""
    return {"agentview_rgb": np.asarray(raw["agentview_image"], np.uint8),
            "eye_in_hand_rgb": np.asarray(raw["robot0_eye_in_hand_image"], np.uint8),
            "ee_pos": np.asarray(raw["robot0_eef_pos"], np.float64),
            "ee_ori": Rotation.from_quat(raw["robot0_eef_quat"]).as_rotvec(),
            "gripper_states": np.asarray(raw["robot0_gripper_qpos"], np.float64),
            "joint_states": np.asarray(raw["robot0_joint_pos"], np.float64)}


def run_expert_episode(env: Any, expert: LiberoPickPlaceExpert, seed: int, record: bool = True,
                       ) -> tuple[bool, dict[str, np.ndarray]]:
    """One episode of ``expert`` in ``env`` from init state ``seed % n``: ``(success, arrays)``
    with ``actions (T, 7)``, ``obs/<key> (T, ...)`` (the observation each action was taken
    from), ``states (T, S)``, ``rewards``, ``dones`` (empty when not ``record``)."""
    env.reset(seed=seed)
    expert.reset(env)
    rows: list[dict[str, np.ndarray]] = []
    actions, states = [], []
    success = False
    while True:
        a = expert.act()
        if record:
            rows.append(_raw_record(env.raw))
            states.append(np.asarray(env.env.get_sim_state(), np.float64))
        actions.append(a)
        _, _, success, truncated, _ = env.step(a)
        if success or truncated:
            break
    if not record:
        return success, {}
    T = len(actions)
    out = {"actions": np.stack(actions).astype(np.float64), "states": np.stack(states),
           "rewards": np.r_[np.zeros(T - 1), float(success)], "dones": np.r_[np.zeros(T - 1), 1.0].astype(np.uint8)}
    for k in rows[0]:
        out[f"obs/{k}"] = np.stack([r[k] for r in rows])
    return success, out


SUITE_TRAVEL_MOVE = {"libero_spatial": 1.0}
"""The expert's :attr:`~LiberoPickPlaceExpert.travel_move` per suite (others: its default).
libero_spatial allows 220 steps, and its task 9 carries a bowl 47 cm from the cabinet's top
down to the plate: at 0.6 the lowering began at step 164-181 and ran out of steps (measured:
seeds 0-2 1/3 at 0.6 from the far wall, traced; seeds 0-7 8/8 at 1.0 from the near wall)."""


def record_task(suite: str, task: int, demos: int, out: str | Path, assets: str | None = None,
                image_size: int = 128, max_attempts: int | None = None, seed: int = 0,
                noise: float = 0.0) -> ExpertTaskStats:
    """Record ``demos`` successful expert episodes of one task into ``out/<task name>_demo.hdf5``
    (LIBERO's release layout, images at ``image_size``; written whole or not at all). A file
    already there with ``demos`` demonstrations is kept and its stats read back (a long
    recording that was stopped goes on from the tasks it had not finished).

    Attempt ``k`` starts from the task's shipped init state ``seed + k`` (mod their number)
    with the expert's jitter seeded ``seed + k``; failures are counted, not written; the task
    stops after ``max_attempts`` (default ``2 * demos``)."""
    import h5py

    from cosmos3_robot.sim.libero import LiberoEnv

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    limit = max_attempts or 2 * demos
    env = LiberoEnv(suite, task, assets=assets, image_size=image_size)
    st = ExpertTaskStats(suite, task, env.task.name)
    path = out / f"{env.task.name}_demo.hdf5"
    if path.exists():
        with h5py.File(path, "r") as f:
            data = f["data"]
            if len(data) >= demos and "expert_attempts" in data.attrs:
                env.close()
                st.successes, st.attempts = len(data), int(data.attrs["expert_attempts"])
                st.steps = [int(data[k].attrs["num_samples"]) for k in data]
                return st
    tmp = path.with_name(path.name + ".tmp")
    try:
        with h5py.File(tmp, "w") as f:
            data = f.create_group("data")
            data.attrs["problem_info"] = json.dumps({"language_instruction": env.instruction,
                                                     "problem_name": env.task.name, "suite": suite})
            data.attrs["env_args"] = json.dumps({"controller": "OSC_POSE", "control_freq": 20,
                                                 "image_size": image_size, "recorded_by": "cosmos3_robot"})
            while st.successes < demos and st.attempts < limit:
                k = seed + st.attempts
                expert = LiberoPickPlaceExpert(noise=noise, seed=k, travel_move=SUITE_TRAVEL_MOVE.get(suite))
                ok, arrays = run_expert_episode(env, expert, k)
                st.attempts += 1
                if ok:
                    g = data.create_group(f"demo_{st.successes}")
                    for key, value in arrays.items():
                        g.create_dataset(key, data=value, compression="gzip" if value.dtype == np.uint8 else None)
                    g.attrs["num_samples"] = len(arrays["actions"])
                    g.attrs["init_state"] = int(k % len(env.states))
                    st.successes += 1
                    st.steps.append(len(arrays["actions"]))
            data.attrs["total"] = int(sum(st.steps))
            data.attrs["expert_attempts"] = st.attempts
        tmp.replace(path)
    finally:
        env.close()
        tmp.unlink(missing_ok=True)
    return st


def _exit_on_signal(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


def record_libero(suite: str, tasks: list[int], demos: int, out: str | Path, workers: int = 1,
                  **kw: Any) -> list[ExpertTaskStats]:
    """:func:`record_task` for each of ``tasks``, ``workers`` tasks at a time in their own
    processes (a task's simulation is single-threaded); the stats in task order. Stopped (an
    exception, Ctrl-C, or a SIGTERM from ``kill`` or a job scheduler), it ends its workers:
    left running unparented they took the cores from the rerun that resumes the recording."""
    if workers <= 1 or len(tasks) <= 1:
        return [record_task(suite, t, demos, out, **kw) for t in tasks]
    import multiprocessing as mp
    import signal
    import threading

    pool = mp.get_context("spawn").Pool(workers)  # not concurrent.futures: it cannot end its workers
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _exit_on_signal) if main_thread else None
    try:
        jobs = [pool.apply_async(record_task, (suite, t, demos, out), kw) for t in tasks]
        stats = [j.get() for j in jobs]
        pool.close()
        return stats
    except BaseException:
        pool.terminate()
        raise
    finally:
        pool.join()
        if main_thread:
            signal.signal(signal.SIGTERM, previous)
