"""Executing action chunks on a clock: when to ask for the next chunk and what to send now.

Control steps are integers (step ``s`` at time ``s / hz``). A chunk computed from the
observation of step ``s_obs`` holds the commands for steps ``s_obs, s_obs + 1, ...``; when it
arrives later (inference latency), its already-past commands are dropped. The scheduler
requests the next chunk early enough that it arrives before the current one runs out,
using the measured latency (an exponential average, in steps, rounded up).

Blending of overlapping chunks:

- ``latest``: the newest chunk that covers a step wins;
- ``ensemble``: ACT's temporal ensembling: every chunk covering the step contributes,
  weighted ``exp(-decay * i)`` with ``i = 0`` for the oldest;
- ``inpaint``: like ``latest``, and :meth:`ChunkScheduler.pending` hands the current chunk's
  not-yet-executed commands to the policy (``Cosmos3Policy.infer(prefix=...)``), so the new
  chunk starts with exactly them and continues smoothly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

Blend = Literal["latest", "ensemble", "inpaint"]


@dataclass
class ChunkScheduler:
    """Attributes:
        hz: control rate (Hz).
        blend: how overlapping chunks combine (see the module docstring).
        min_execute: commands of a chunk executed at least before replanning (unless it
            runs out first).
        max_execute: replan once this many of the newest chunk's commands have run, whatever
            the latency (closed-loop evaluation's ``replan``); ``None``: only when the chunk
            would run out before the next one arrives.
        ensemble_decay: ACT's ``m`` for ``ensemble``.
        latency_s: current latency estimate (s); updated by :meth:`record_latency`. At 0 (a
            synchronous caller: the world waits for the policy) every command of a chunk is
            used before the next is asked for.
    """

    hz: float
    blend: Blend = "latest"
    min_execute: int = 1
    max_execute: int | None = None
    ensemble_decay: float = 0.01
    latency_s: float = 0.0
    chunks: list[tuple[int, np.ndarray]] = field(default_factory=list)  # (s_obs, (T, D)) oldest first
    in_flight: int | None = None  # s_obs of the requested, not yet received chunk

    def __post_init__(self) -> None:
        if self.blend not in ("latest", "ensemble", "inpaint"):
            raise ValueError(f"blend: expected 'latest', 'ensemble' or 'inpaint', got {self.blend!r}")
        if not self.hz > 0:
            raise ValueError(f"hz: expected > 0, got {self.hz}")
        if self.min_execute < 1 or (self.max_execute is not None and self.max_execute < self.min_execute):
            raise ValueError(f"min_execute >= 1 and max_execute >= min_execute (or None); got {self.min_execute}, "
                             f"{self.max_execute}")

    @property
    def latency_steps(self) -> int:
        return int(math.ceil(self.latency_s * self.hz - 1e-9))

    def record_latency(self, seconds: float, alpha: float = 0.3) -> None:
        """Fold one measured inference latency into the estimate."""
        self.latency_s = seconds if self.latency_s == 0 else (1 - alpha) * self.latency_s + alpha * seconds

    def _last_covered(self) -> int:
        """The last step the newest chunk has a command for (-1 with none)."""
        if not self.chunks:
            return -1
        s, c = self.chunks[-1]
        return s + len(c) - 1

    def should_request(self, step: int) -> bool:
        """Ask for a new chunk at ``step`` (one request in flight at a time)?"""
        if self.in_flight is not None:
            return False
        if not self.chunks:
            return True
        s_obs, _ = self.chunks[-1]
        executed = step - s_obs
        remaining = self._last_covered() - step + 1
        if remaining <= 0:  # ran out (a chunk shorter than min_execute): ask, or hold for ever
            return True
        if self.max_execute is not None and executed >= self.max_execute:
            return True
        lookahead = self.latency_steps + 1 if self.latency_s > 0 else 0  # ask early by the latency
        return executed >= self.min_execute and remaining <= lookahead

    def requested(self, step: int) -> None:
        self.in_flight = step

    def add_chunk(self, s_obs: int, chunk: np.ndarray) -> None:
        """A chunk computed from step ``s_obs``'s observation arrived."""
        c = np.asarray(chunk, dtype=np.float64)
        if c.ndim != 2 or len(c) == 0:
            raise ValueError(f"chunk: expected (T, D) commands, got shape {c.shape}")
        if self.chunks and c.shape[1] != self.chunks[-1][1].shape[1]:
            raise ValueError(f"chunk: width {c.shape[1]} differs from earlier chunks' {self.chunks[-1][1].shape[1]}")
        self.chunks.append((int(s_obs), c))
        if self.in_flight == s_obs:
            self.in_flight = None

    def action(self, step: int) -> np.ndarray | None:
        """The command for ``step`` (None when no chunk covers it: the caller holds)."""
        covering = [(s, c) for s, c in self.chunks if s <= step < s + len(c)]
        self.chunks = [(s, c) for s, c in self.chunks if s + len(c) > step]  # forget finished chunks
        if not covering:
            return None
        if self.blend != "ensemble":
            s, c = covering[-1]
            return c[step - s]
        w = np.exp(-self.ensemble_decay * np.arange(len(covering)))
        vals = np.stack([c[step - s] for s, c in covering])
        return (w[:, None] * vals).sum(0) / w.sum()

    def pending(self, step: int) -> np.ndarray | None:
        """The newest chunk's commands from ``step`` on (the inpainting prefix), or None."""
        if not self.chunks:
            return None
        s, c = self.chunks[-1]
        rest = c[max(step - s, 0):]
        return rest if len(rest) else None
