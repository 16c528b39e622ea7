"""Scripted experts for the built-in tasks: closed-loop phase machines on privileged state.

Each expert reads object and gripper poses from the simulator (not from images) and returns
the same ``(8,)`` actions a learned policy sends: an absolute tcp target (position +
``DOWN`` orientation) and a gripper closure. ``noise`` (m) adds Gaussian jitter to each
position target and a per-episode speed factor in [0.8, 1.2], for varied demonstrations.
"""

from __future__ import annotations

import numpy as np

from cosmos3_robot.sim.scene import CUBE_HALF, TABLE_Z
from cosmos3_robot.sim.tasks import DOWN, PickPlaceEnv, PushEnv, ReachEnv, StackEnv, TableTopEnv

OPEN, CLOSED = 0.0, 1.0


class Expert:
    """Base: phase bookkeeping and the move-towards-target helper."""

    speed = 0.035  # m per control step at full speed

    def __init__(self, noise: float = 0.0, seed: int | None = None):
        if noise < 0:
            raise ValueError(f"noise: expected >= 0 m, got {noise}")
        self.noise = float(noise)
        self.rng = np.random.default_rng(seed)
        self.env: TableTopEnv | None = None
        self.phase, self.wait = 0, 0
        self.scale = 1.0

    def reset(self, env) -> None:
        self.env = env.unwrapped
        self.phase, self.wait = 0, 0
        self.scale = float(self.rng.uniform(0.8, 1.2)) if self.noise > 0 else 1.0

    def _action(self, target: np.ndarray, gripper: float) -> np.ndarray:
        assert self.env is not None
        cmd = self.env._target_pos
        move = np.asarray(target, dtype=np.float64) - cmd
        dist = np.linalg.norm(move)
        step = self.speed * self.scale
        nxt = cmd + (move if dist <= step else move * (step / dist))
        if self.noise > 0:
            nxt = nxt + self.rng.normal(0.0, self.noise, 3)
        return np.r_[nxt, DOWN, gripper].astype(np.float32)

    def _near(self, target: np.ndarray, tol: float) -> bool:
        assert self.env is not None
        return bool(np.linalg.norm(self.env.tcp_pos() - target) < tol)

    def act(self, obs=None) -> np.ndarray:
        raise NotImplementedError


class ReachExpert(Expert):
    def act(self, obs=None):
        env = self.env
        assert isinstance(env, ReachEnv)
        return self._action(env.goal_pos(), OPEN)


class _CarryExpert(Expert):
    """Pick a cube and put it down at a place (pick-and-place and stacking)."""

    lift_z = TABLE_Z + 0.13

    def pick_and_place(self) -> tuple[np.ndarray, np.ndarray]:
        """(cube position, place position of the cube centre)."""
        raise NotImplementedError

    def act(self, obs=None):
        cube, place = self.pick_and_place()
        above_cube = np.r_[cube[:2], cube[2] + 0.08]
        grasp = np.r_[cube[:2], cube[2] - 0.004]
        above_place = np.r_[place[:2], self.lift_z]
        p = self.phase
        if p == 0:  # over the cube, open
            a = self._action(above_cube, OPEN)
            self.phase += self._near(above_cube, 0.012)
        elif p == 1:  # down around it
            a = self._action(grasp, OPEN)
            self.phase += self._near(grasp, 0.008)
        elif p == 2:  # close
            a = self._action(grasp, CLOSED)
            self.wait += 1
            if self.wait >= 4:
                self.phase, self.wait = 3, 0
        elif p == 3:  # lift
            target = np.r_[self.env.tcp_pos()[:2], self.lift_z]
            a = self._action(target, CLOSED)
            self.phase += self._near(target, 0.02)
            if self.env.released():  # missed the grasp: start over
                self.phase = 0
        elif p == 4:  # carry
            a = self._action(above_place, CLOSED)
            self.phase += self._near(above_place, 0.012)
        elif p == 5:  # lower onto the place
            a = self._action(place + [0, 0, 0.006], CLOSED)
            self.phase += self._near(place + [0, 0, 0.006], 0.008)
        elif p == 6:  # release
            a = self._action(place + [0, 0, 0.006], OPEN)
            self.wait += 1
            if self.wait >= 3:
                self.phase, self.wait = 7, 0
        else:  # retreat upwards
            a = self._action(np.r_[place[:2], self.lift_z], OPEN)
        return a


class PickPlaceExpert(_CarryExpert):
    def pick_and_place(self):
        env = self.env
        assert isinstance(env, PickPlaceEnv)
        cube, pad = env.objects()
        place = np.r_[env.body_pos(pad)[:2], TABLE_Z + CUBE_HALF]
        return env.body_pos(cube), place


class StackExpert(_CarryExpert):
    def pick_and_place(self):
        env = self.env
        assert isinstance(env, StackEnv)
        bottom = env.body_pos("cube1")
        return env.body_pos("cube0"), bottom + [0, 0, 2 * CUBE_HALF]


class PushExpert(Expert):
    """Half-closed fingers behind the cube on the cube-goal line, then push, re-aligning as it goes."""

    push_z = TABLE_Z + 0.022
    pusher = 0.6  # half-closed fingers: two contacts 4.8 cm apart, a gap the cube cannot pass
    safe_z = TABLE_Z + 0.09

    def act(self, obs=None):
        env = self.env
        assert isinstance(env, PushEnv)
        cube = env.body_pos("cube0")[:2]
        goal = env.goal_pos()[:2]
        d = goal - cube
        dirn = d / max(np.linalg.norm(d), 1e-6)
        pre = cube - dirn * (CUBE_HALF + 0.025)
        tcp = env.tcp_pos()
        rel = tcp[:2] - cube
        along = rel @ dirn
        lateral = rel - along * dirn
        if self.phase == 0:  # above the pre-push point
            target = np.r_[pre, self.safe_z]
            self.phase += self._near(target, 0.015)
        elif self.phase == 1:  # down behind the cube
            target = np.r_[pre, self.push_z]
            self.phase += self._near(target, 0.01)
        else:  # push along the line, correcting sideways drift
            if np.linalg.norm(lateral) > 0.025 or along > -CUBE_HALF:
                self.phase = 0  # lost the cube: lift and re-approach
                return self._action(np.r_[tcp[:2], self.safe_z], self.pusher)
            target = np.r_[tcp[:2] + dirn * 0.03 - 0.6 * lateral, self.push_z]
        return self._action(target, self.pusher)


EXPERTS: dict[str, type[Expert]] = {"reach": ReachExpert, "push": PushExpert, "pick_place": PickPlaceExpert,
                                    "stack": StackExpert}


def expert_for(task: str, noise: float = 0.0, seed: int | None = None) -> Expert:
    if task not in EXPERTS:
        raise ValueError(f"task: no scripted expert for {task!r}; tasks: {sorted(EXPERTS)}")
    return EXPERTS[task](noise=noise, seed=seed)
