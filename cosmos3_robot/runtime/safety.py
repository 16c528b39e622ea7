"""The safety layer between a policy and a robot.

Every action chunk on its way to hardware passes :meth:`SafetyFilter.filter`. Its contract,
for any input (any shape, dtype or value, NaN, inf or 1e300 included): every command it
returns is inside the per-dimension limits, the workspace box and the gripper range, and
changes by at most ``max_step`` from the command before it, with a change that differs by at
most ``max_accel_step`` from the change before it; or the filter holds (repeats the last
command sent, a stop) or returns ``None`` (nothing may be sent). When the bounds conflict
(the robot was reset outside the box), the limits win over the step and acceleration
bounds. It never raises. Every intervention is counted under a reason in
:attr:`SafetyFilter.counts`, and the last one is in :attr:`SafetyFilter.last_reason`.

Actions are ``(T, D)`` arrays in the robot's own units (the policy runtime's output), with
``D`` named by :class:`SafetyConfig`'s per-dimension limits.
"""

from __future__ import annotations

import math
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
        for name in ("low", "high", "max_step", "max_accel_step", "workspace_low", "workspace_high"):
            v = getattr(self, name)
            if v is None:
                continue
            arr = np.asarray(v, dtype=float)
            if arr.ndim != 1 or not np.all(np.isfinite(arr)):
                raise ValueError(f"safety.{name}: expected a list of finite numbers, got {v!r}")
        for lo_name, hi_name in (("low", "high"), ("workspace_low", "workspace_high")):
            lo, hi = getattr(self, lo_name), getattr(self, hi_name)
            if lo is not None and hi is not None:
                if len(lo) != len(hi):
                    raise ValueError(f"safety.{lo_name}/{hi_name}: lengths {len(lo)} and {len(hi)} differ")
                if np.any(np.asarray(lo, float) > np.asarray(hi, float)):
                    raise ValueError(f"safety.{lo_name} {list(lo)} exceeds safety.{hi_name} {list(hi)}")
        for name in ("max_step", "max_accel_step"):
            v = getattr(self, name)
            if v is not None and np.any(np.asarray(v, dtype=float) <= 0):
                raise ValueError(f"safety.{name}: expected positive limits, got {list(v)}")
        for name in ("workspace_low", "workspace_high"):
            v = getattr(self, name)
            if v is not None and len(v) != 3:
                raise ValueError(f"safety.{name}: expected 3 values (x, y, z), got {len(v)}")
        if (self.workspace_low is None) != (self.workspace_high is None):
            raise ValueError("safety.workspace_low/workspace_high: give both or neither")
        dims = tuple(self.position_dims)
        if len(dims) != 3 or len(set(dims)) != 3 or any(not isinstance(i, (int, np.integer)) or i < 0 for i in dims):
            raise ValueError(f"safety.position_dims: expected 3 distinct dimension indices >= 0, got {dims}")
        if self.gripper_dim is not None and (not isinstance(self.gripper_dim, (int, np.integer)) or self.gripper_dim < 0):
            raise ValueError(f"safety.gripper_dim: expected a dimension index >= 0, got {self.gripper_dim!r}")
        g = np.asarray(self.gripper_range, dtype=float)
        if g.shape != (2,) or not np.all(np.isfinite(g)) or g[0] > g[1]:
            raise ValueError(f"safety.gripper_range: expected (low, high) finite with low <= high, got {self.gripper_range!r}")
        if self.max_obs_age_s is not None and not self.max_obs_age_s > 0:
            raise ValueError(f"safety.max_obs_age_s: expected > 0 seconds or null, got {self.max_obs_age_s}")

    def problem(self, dim: int) -> str:
        """Why this configuration does not fit ``dim``-wide commands ("" when it does)."""
        for name in ("low", "high", "max_step", "max_accel_step"):
            v = getattr(self, name)
            if v is not None and len(v) != dim:
                return f"safety.{name}: {len(v)} values for {dim}-wide commands"
        if self.workspace_low is not None and max(self.position_dims) >= dim:
            return f"safety.position_dims {tuple(self.position_dims)}: outside {dim}-wide commands"
        if self.gripper_dim is not None and self.gripper_dim >= dim:
            return f"safety.gripper_dim {self.gripper_dim}: outside {dim}-wide commands (indices 0..{dim - 1})"
        lo, hi = self.bounds(dim, checked=False)
        if np.any(lo > hi):
            j = int(np.argmax(lo > hi))
            return (f"safety: limits, workspace and gripper range leave nothing for dimension {j} "
                    f"(low {lo[j]:g} > high {hi[j]:g})")
        return ""

    def validate(self, dim: int) -> None:
        """Raise ``ValueError`` naming the parameter if the configuration does not fit ``dim``."""
        problem = self.problem(dim)
        if problem:
            raise ValueError(problem)

    def bounds(self, dim: int, checked: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Per-dimension ``(low, high)`` ``(dim,)``: the limits, the workspace box on the position
        dimensions and the gripper range, intersected (+-inf where nothing bounds)."""
        if checked:
            self.validate(dim)
        lo, hi = np.full(dim, -np.inf), np.full(dim, np.inf)
        if self.low is not None:
            lo = np.maximum(lo, np.asarray(self.low, dtype=np.float64))
        if self.high is not None:
            hi = np.minimum(hi, np.asarray(self.high, dtype=np.float64))
        if self.workspace_low is not None and self.workspace_high is not None:
            p = list(self.position_dims)
            lo[p] = np.maximum(lo[p], np.asarray(self.workspace_low, dtype=np.float64))
            hi[p] = np.minimum(hi[p], np.asarray(self.workspace_high, dtype=np.float64))
        if self.gripper_dim is not None:
            lo[self.gripper_dim] = max(lo[self.gripper_dim], float(self.gripper_range[0]))
            hi[self.gripper_dim] = min(hi[self.gripper_dim], float(self.gripper_range[1]))
        return lo, hi

    def limit_dims(self, dim: int) -> list[int]:
        return list(range(dim)) if self.low is not None or self.high is not None else []

    def workspace_dims(self) -> list[int]:
        return list(self.position_dims) if self.workspace_low is not None else []

    def gripper_dims(self) -> list[int]:
        return [] if self.gripper_dim is None else [self.gripper_dim]


@dataclass
class SafetyFilter:
    """Stateful filter: remembers the last command sent (for rate limits and holding)."""

    config: SafetyConfig = field(default_factory=SafetyConfig)
    counts: Counter = field(default_factory=Counter)
    last_reason: str = ""
    last_command: np.ndarray | None = None
    _last_delta: np.ndarray | None = None
    _estop: bool = False
    _bounds: dict = field(default_factory=dict)  # width -> (low, high), or why the config does not fit

    def _bounds_for(self, d: int) -> tuple[np.ndarray, np.ndarray] | str:
        """The (frozen) config's bounds for ``d``-wide commands, worked out once per width."""
        if d not in self._bounds:
            problem = self.config.problem(d)
            self._bounds[d] = problem or self.config.bounds(d, checked=False)
        return self._bounds[d]

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
        """Forget rate-limit history; ``current`` ``(D,)`` is the robot's present command/state,
        the start of the step and acceleration bounds (at rest). Without one the first command
        is bounded only by the limits. An unusable ``current`` (not a finite float32 ``(D,)``)
        is counted as ``bad_reset`` and treated as none."""
        self._last_delta = None
        self.last_command = None
        if current is None:
            return
        try:
            cur = np.asarray(current, dtype=np.float64).copy()
        except (TypeError, ValueError):
            cur = np.full(1, np.nan)
        if cur.ndim != 1 or cur.size == 0 or not _sendable(cur):
            self.counts["bad_reset"] += 1
            return
        self.last_command = cur

    # ---- the filter --------------------------------------------------------------------
    def hold(self, reason: str = "hold", n: int = 1) -> np.ndarray | None:
        """``n`` repeats of the last command sent (``None`` if none was), counted under ``reason``.

        A hold stops the motion at once: it is the one output exempt from the acceleration
        bound (the rate limiter restarts from rest)."""
        return self._hold(reason, n)

    def _hold(self, reason: str, n: int) -> np.ndarray | None:
        self.counts[reason] += 1
        self.last_reason = reason
        if self.last_command is None:
            return None  # nothing safe to repeat: the caller sends nothing (or a stop)
        self._last_delta = None
        return np.repeat(self.last_command[None], max(int(n), 1), 0)

    def filter(self, actions: np.ndarray, obs_time: float | None = None, now: float | None = None
               ) -> np.ndarray | None:
        """Safe version of ``actions`` ``(T, D)``, or ``None`` when nothing may be sent
        (a hold is needed but no command was ever sent). Never raises: input it cannot use
        (wrong shape or width, non-numbers, non-finite values or values float32 cannot hold,
        a configuration that does not fit ``D``, a stale, future or invalid ``obs_time``)
        gives a hold, counted under its reason."""
        try:
            a = np.asarray(actions, dtype=np.float64)
        except (TypeError, ValueError):
            return self._hold("bad_type", 1)
        if a.ndim != 2 or a.shape[0] == 0 or a.shape[1] == 0:
            return self._hold("bad_shape", 1)
        n, d = a.shape
        if self.last_command is not None and len(self.last_command) != d:
            return self._hold("width_changed", n)
        c = self.config
        if self._estop:
            return self._hold("estop", n)
        if obs_time is not None and c.max_obs_age_s is not None:
            try:
                age = float((time.monotonic() if now is None else now) - obs_time)
            except (TypeError, ValueError):
                age = math.nan
            if not math.isfinite(age):
                return self._hold("bad_timestamp", n)
            if age > c.max_obs_age_s:
                return self._hold("stale_observation", n)
            if age < -c.max_obs_age_s:  # from the future: a clock the filter cannot trust
                return self._hold("future_observation", n)
        if not _sendable(a):
            return self._hold("non_finite", n)
        bounds = self._bounds_for(d)
        if isinstance(bounds, str):
            return self._hold("config_mismatch", n)
        lo, hi = bounds
        out = np.clip(a, lo, hi)
        for reason, dims in (("clipped_limits", c.limit_dims(d)), ("clipped_workspace", c.workspace_dims()),
                             ("clipped_gripper", c.gripper_dims())):
            if dims and not np.array_equal(out[:, dims], a[:, dims]):
                self.counts[reason] += 1
        if c.max_step is not None or c.max_accel_step is not None:
            out = self._rate_limit(out, lo, hi)
        self.last_command = out[-1].copy()
        self.counts["chunks_ok"] += 1
        return out

    def _rate_limit(self, target: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        """Follow ``target`` (already inside ``[lo, hi]``) under the step and acceleration bounds.

        Per dimension and step, the change ``v`` from the last command is the value nearest
        the wanted change inside ``[-max_step, max_step]``, within ``max_accel_step`` of the
        previous change, keeping the command inside ``[lo, hi]`` and slow enough to brake
        (at ``max_accel_step`` per step) before either bound: ``v**2 / (2 a) <= room - v``.
        From rest inside the bounds that set is never empty (braking by ``a`` keeps the
        condition), so the bounds hold every step. The constraints are met in priority order
        (bounds, step, braking, acceleration); one that cannot be met with those before it
        (the robot was reset outside the bounds) is replaced by its nearest point: the
        limits win, counted as ``limits_over_rate``, and the motion restarts from rest there."""
        c = self.config
        d = target.shape[1]
        s = np.full(d, np.inf) if c.max_step is None else np.asarray(c.max_step, dtype=np.float64)
        acc = None if c.max_accel_step is None else np.asarray(c.max_accel_step, dtype=np.float64)
        prev = self.last_command
        v_prev = np.zeros(d) if self._last_delta is None else self._last_delta
        out = target.copy()
        limited = overridden = False
        for t in range(len(out)):
            if prev is None:  # nothing known of the robot: only the bounds apply (see reset)
                prev = out[t]
                continue
            want = out[t] - prev
            box = (lo - prev, hi - prev)
            step = (-s, s)
            sets = [box, step]
            if acc is not None:
                brake_hi = _brake_speed(hi - prev, acc)
                brake_lo = -_brake_speed(prev - lo, acc)
                sets += [(brake_lo, brake_hi), (v_prev - acc, v_prev + acc)]
            low, high = sets[0]
            jumped = np.zeros(d, dtype=bool)
            for cl, ch in sets[1:]:  # each constraint in priority order, as far as it is compatible
                nl, nh = np.maximum(low, cl), np.minimum(high, ch)
                ok = nl <= nh
                if not ok.all():
                    gap = np.where(ch < low, low - ch, cl - high)
                    jumped |= ~ok & (gap > 1e-12)  # ulp-level misses are not overrides
                    nearest = np.where(ch < low, low, high)  # the point of the current set nearest it
                    nl, nh = np.where(ok, nl, nearest), np.where(ok, nh, nearest)
                low, high = nl, nh
            v = np.clip(want, low, high)
            limited |= not np.array_equal(v, want)
            out[t] = np.clip(prev + v, lo, hi)
            v_prev = np.where(jumped, 0.0, out[t] - prev)  # after a forced jump: from rest
            overridden |= bool(jumped.any())
            prev = out[t]
        self._last_delta = v_prev
        if limited:
            self.counts["rate_limited"] += 1
        if overridden:
            self.counts["limits_over_rate"] += 1
        return out

    def report(self) -> dict[str, int]:
        return dict(self.counts)


_F32_MAX = float(np.finfo(np.float32).max)
"""Largest magnitude a command may have: transports send float32, where more is inf."""


def _sendable(a: np.ndarray) -> bool:
    """Finite, and still finite once a transport casts it to float32."""
    return bool(np.all(np.isfinite(a)) and not np.any(np.abs(a) > _F32_MAX))


def _brake_speed(room: np.ndarray, acc: np.ndarray) -> np.ndarray:
    """Largest change toward a bound ``room`` away (>= 0) from which braking by ``acc`` per
    step stops inside it: the root of ``v**2 / (2 acc) + v = room`` (conservative: braking
    from ``v`` covers at most ``v**2 / (2 acc) - v / 2`` after the step itself)."""
    r = np.maximum(room, 0.0)
    return acc * (np.sqrt(1.0 + 2.0 * r / acc) - 1.0)
