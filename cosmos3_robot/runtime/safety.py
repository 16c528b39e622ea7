"""The safety layer between a policy and a robot.

Every action chunk on its way to hardware passes :meth:`SafetyFilter.filter`, which never
returns an unsafe command: it rejects non-finite values, clips each dimension to its
limits and a workspace box, limits per-step velocity and acceleration, clamps the gripper
and, when the observations feeding the policy are stale or the emergency stop is pressed,
replaces the chunk by holding the last safe command. Every intervention is counted under a
reason in :attr:`SafetyFilter.counts`, and the last one is in :attr:`SafetyFilter.last_reason`.

Actions are ``(T, D)`` arrays in the robot's own units (the policy runtime's output), with
``D`` named by :class:`SafetyConfig`'s per-dimension limits.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np


@dataclass(frozen=True)
class SafetyConfig:
    """Limits, all optional (``None`` disables a check).

    Attributes:
        low, high: per-dimension bounds ``(D,)``; commands are clipped into them.
        max_step: per-dimension largest change between consecutive commands ``(D,)``
            (velocity x control period), applied from the last command sent.
        max_accel_step: per-dimension largest change of that change ``(D,)``.
        workspace_low, workspace_high: ``(3,)`` box for the dimensions ``position_dims``.
        position_dims: which three dimensions are a Cartesian position (for the box).
        gripper_dim, gripper_range: a gripper dimension and its (low, high).
        max_obs_age_s: observations older than this make the filter hold (watchdog).
    """

    low: Sequence[float] | None = None
    high: Sequence[float] | None = None
    max_step: Sequence[float] | None = None
    max_accel_step: Sequence[float] | None = None
    workspace_low: Sequence[float] | None = None
    workspace_high: Sequence[float] | None = None
    position_dims: tuple[int, int, int] = (0, 1, 2)
    gripper_dim: int | None = None
    gripper_range: tuple[float, float] = (0.0, 1.0)
    max_obs_age_s: float | None = 0.5

    def __post_init__(self) -> None:
        for name in ("low", "high", "max_step", "max_accel_step"):
            v = getattr(self, name)
            if v is not None and not np.all(np.isfinite(np.asarray(v, dtype=float))):
                raise ValueError(f"safety.{name}: expected finite numbers, got {v}")
        if self.low is not None and self.high is not None and np.any(np.asarray(self.low) > np.asarray(self.high)):
            raise ValueError(f"safety: low {self.low} exceeds high {self.high}")
        for name in ("max_step", "max_accel_step"):
            v = getattr(self, name)
            if v is not None and np.any(np.asarray(v, dtype=float) <= 0):
                raise ValueError(f"safety.{name}: expected positive limits, got {v}")


@dataclass
class SafetyFilter:
    """Stateful filter: remembers the last command sent (for rate limits and holding)."""

    config: SafetyConfig = field(default_factory=SafetyConfig)
    counts: Counter = field(default_factory=Counter)
    last_reason: str = ""
    last_command: np.ndarray | None = None
    _last_delta: np.ndarray | None = None
    _estop: bool = False

    # ---- inputs ------------------------------------------------------------------------
    def estop(self, pressed: bool = True) -> None:
        """Emergency stop: while pressed every chunk becomes a hold."""
        self._estop = bool(pressed)
        if pressed:
            self.counts["estop"] += 1

    @property
    def estopped(self) -> bool:
        return self._estop

    def reset(self, current: np.ndarray | None = None) -> None:
        """Forget rate-limit history; ``current`` is the robot's present command/state."""
        self.last_command = None if current is None else np.asarray(current, dtype=np.float64).copy()
        self._last_delta = None

    # ---- the filter --------------------------------------------------------------------
    def hold(self, reason: str = "hold", n: int = 1) -> np.ndarray | None:
        """``n`` repeats of the last command sent (``None`` if none was), counted under ``reason``."""
        return self._hold(reason, n, 0 if self.last_command is None else len(self.last_command))

    def _hold(self, reason: str, n: int, dim: int) -> np.ndarray | None:
        self.counts[reason] += 1
        self.last_reason = reason
        if self.last_command is None:
            return None  # nothing safe to repeat: the caller sends nothing (or a stop)
        self._last_delta = np.zeros(dim)
        return np.repeat(self.last_command[None], n, 0)

    def filter(self, actions: np.ndarray, obs_time: float | None = None, now: float | None = None
               ) -> np.ndarray | None:
        """Safe version of ``actions`` ``(T, D)``, or ``None`` when nothing may be sent
        (a hold is needed but no command was ever sent)."""
        a = np.asarray(actions, dtype=np.float64)
        if a.ndim != 2 or a.shape[0] == 0:
            return self._hold("bad_shape", 1, a.shape[-1] if a.ndim else 1)
        n, d = a.shape
        c = self.config
        if self._estop:
            return self._hold("estop", n, d)
        if obs_time is not None and c.max_obs_age_s is not None:
            age = (time.monotonic() if now is None else now) - obs_time
            if age > c.max_obs_age_s:
                return self._hold("stale_observation", n, d)
        if not np.all(np.isfinite(a)):
            return self._hold("non_finite", n, d)
        out = a.copy()
        if c.low is not None or c.high is not None:
            lo = np.asarray(c.low if c.low is not None else np.full(d, -np.inf), dtype=np.float64)
            hi = np.asarray(c.high if c.high is not None else np.full(d, np.inf), dtype=np.float64)
            if lo.shape != (d,) or hi.shape != (d,):
                return self._hold("limits_shape", n, d)
            clipped = np.clip(out, lo, hi)
            if not np.array_equal(clipped, out):
                self.counts["clipped_limits"] += 1
            out = clipped
        if c.workspace_low is not None and c.workspace_high is not None:
            p = list(c.position_dims)
            box = np.clip(out[:, p], c.workspace_low, c.workspace_high)
            if not np.array_equal(box, out[:, p]):
                self.counts["clipped_workspace"] += 1
            out[:, p] = box
        if c.gripper_dim is not None:
            g = np.clip(out[:, c.gripper_dim], *c.gripper_range)
            if not np.array_equal(g, out[:, c.gripper_dim]):
                self.counts["clipped_gripper"] += 1
            out[:, c.gripper_dim] = g
        if c.max_step is not None:
            out = self._rate_limit(out, np.asarray(c.max_step, dtype=np.float64),
                                   None if c.max_accel_step is None else np.asarray(c.max_accel_step, float))
        self.last_command = out[-1].copy()
        self.counts["chunks_ok"] += 1
        return out

    def _rate_limit(self, out: np.ndarray, max_step: np.ndarray, max_acc: np.ndarray | None) -> np.ndarray:
        prev = self.last_command
        delta_prev = self._last_delta
        limited = False
        for t in range(len(out)):
            if prev is None:
                prev = out[t]
                continue
            delta = out[t] - prev
            if max_acc is not None and delta_prev is not None:
                dd = np.clip(delta - delta_prev, -max_acc, max_acc)
                limited |= not np.array_equal(delta, delta_prev + dd)
                delta = delta_prev + dd
            step = np.clip(delta, -max_step, max_step)
            limited |= not np.array_equal(step, delta)
            out[t] = prev + step
            prev, delta_prev = out[t], step
        self._last_delta = delta_prev
        if limited:
            self.counts["rate_limited"] += 1
        return out

    def report(self) -> dict[str, int]:
        return dict(self.counts)
