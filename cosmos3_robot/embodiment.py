"""The :class:`Embodiment`: a codec plus the metadata every entry point needs.

Training, evaluation, the websocket server and the ROS 2 node all go through this object:
``from_raw`` turns a robot's own data into a codec episode, ``encode`` gives normalisable
pseudo-actions ``(T-1, D)``, ``decode`` integrates a chunk from the current state and
``to_raw`` puts it back into the robot's units.

Embodiments are registered by name through the entry-point group
``cosmos3_robot.embodiments`` (see :mod:`cosmos3_robot.embodiments`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from cosmos3_robot.codec import ActionCodec, Episode
from cosmos3_robot.normalize import QuantileNormalizer
from cosmos3_robot.transforms import Transform, apply, apply_for, invert_all, needed_steps


@dataclass(frozen=True)
class Embodiment:
    """One robot family's action layout and defaults.

    Attributes:
        name: registry name (``"single_arm"``, ``"droid"``, ...).
        codec: the pseudo-action layout; ``codec.width`` is the action dimension D.
        fps: control rate in Hz: one pseudo-action per control step (sets the action
            token rate of the mRoPE, ``TPS = fps``).
        chunk: default action-chunk length (control steps per prediction).
        description: one paragraph for ``cosmos3-robot embodiments NAME``.
        adapters: raw robot/dataset dict -> codec episode, applied in order; inverted (in
            reverse) by :meth:`to_raw`.
        normalize_rotation: False leaves 6D rotation entries unnormalised (``quantile_rot``).
    """

    name: str
    codec: ActionCodec
    fps: float
    chunk: int
    description: str = ""
    adapters: tuple[Transform, ...] = ()
    normalize_rotation: bool = False

    def __post_init__(self) -> None:
        if not self.name or not self.name.replace("_", "").isalnum():
            raise ValueError(f"embodiment name: expected letters, digits and '_', got {self.name!r}")
        if not (self.fps > 0):
            raise ValueError(f"embodiment {self.name!r}: fps must be > 0 Hz, got {self.fps}")
        if self.chunk < 1:
            raise ValueError(f"embodiment {self.name!r}: chunk must be >= 1, got {self.chunk}")

    @property
    def width(self) -> int:
        """Pseudo-action dimension D."""
        return self.codec.width

    def dim_names(self) -> list[str]:
        return self.codec.dim_names()

    def units(self) -> list[str]:
        return self.codec.units()

    # ---- raw <-> episode -------------------------------------------------------------
    def from_raw(self, raw: Mapping[str, Any]) -> dict[str, Any]:
        """Robot/dataset dict -> codec episode (runs ``adapters``)."""
        return apply(self.adapters, raw)

    def to_raw(self, episode: Mapping[str, Any]) -> dict[str, Any]:
        """Codec episode (e.g. a decoded chunk) -> the robot's own keys and units."""
        return invert_all(self.adapters, episode)

    def state_keys(self) -> tuple[str, ...] | None:
        """The raw keys a robot's current state must carry: those the state blocks are made
        from (``None`` when an adapter does not declare its keys: then every raw key)."""
        _, raw = needed_steps(self.adapters, [b.name for b in self.codec.state_blocks])
        return None if raw is None else tuple(sorted(raw))

    def start_from_raw(self, state: Mapping[str, Any]) -> dict[str, Any]:
        """A robot's current raw state (one step, e.g. ``{"state": (1, 8)}``) -> the codec's
        start state. Only the adapters that make state blocks run, so the state need not
        carry command keys."""
        ep = apply_for(self.adapters, state, [b.name for b in self.codec.state_blocks])
        return self.start_state(ep, 0)

    def chunk_to_raw(self, actions: Any, start: Episode | None) -> dict[str, Any]:
        """Pseudo-actions ``(n, D)`` (un-normalised) -> the robot's own keys, every one
        ``(n, ...)``: the ``n`` targets after ``start``. State blocks decode to ``n + 1``
        steps from the start; their first row (the start itself) is dropped before the
        adapters run in reverse, so state and command keys line up step for step."""
        decoded = self.codec.decode(actions, start)
        if start is not None:
            decoded = {k: v[1:] if self.codec.block(k).kind == "state" else v for k, v in decoded.items()}
        return self.to_raw(decoded)

    # ---- codec -----------------------------------------------------------------------
    def encode(self, episode: Episode) -> Any:
        """Codec episode -> pseudo-actions ``(..., T-1, D)``."""
        return self.codec.encode(episode)

    def encode_raw(self, raw: Mapping[str, Any]) -> Any:
        """Raw robot/dataset dict -> pseudo-actions ``(..., T-1, D)``."""
        return self.codec.encode(self.from_raw(raw))

    def decode(self, actions: Any, start: Episode | None = None) -> dict[str, Any]:
        """Pseudo-actions ``(..., T-1, D)`` -> codec episode integrated from ``start``."""
        return self.codec.decode(actions, start)

    def start_state(self, episode: Episode, t: int = 0) -> dict[str, Any]:
        return self.codec.start_state(episode, t)

    def raw_action_layout(self) -> dict[str, tuple[int, ...]]:
        """What a decoded chunk holds in the robot's own keys: raw key -> per-step shape
        (e.g. ``{"state": (8,)}`` for ``sim_arm``), found by decoding one step at rest."""
        import torch

        ep = {b.name: torch.stack([b.rest()] * (2 if b.kind == "state" else 1)) for b in self.codec.blocks}
        x = self.codec.encode(ep)
        start = self.codec.start_state(ep, 0) if self.codec.state_blocks else None
        return {k: tuple(np.asarray(v).shape[1:]) for k, v in self.chunk_to_raw(x, start).items()}

    def normalizer(self, actions: Any, clamp: bool = False) -> QuantileNormalizer:
        """Quantile statistics of pseudo-actions ``(..., D)`` for this layout."""
        skip = None if self.normalize_rotation else self.codec.rotation_mask()
        return QuantileNormalizer.from_data(
            actions, skip=skip, clamp=clamp, names=self.codec.dim_names()
        )

    def summary(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "width": self.width,
            "fps": self.fps,
            "chunk": self.chunk,
            "blocks": [(b.name, type(b).__name__, b.width) for b in self.codec.blocks],
            "description": self.description,
        }

