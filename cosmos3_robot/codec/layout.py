"""The codec: an ordered layout of blocks between episodes and ``(T-1, D)`` pseudo-actions."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from cosmos3_robot.codec.blocks import Block, PoseBlock
from cosmos3_robot.codec.checks import Episode, as_tensor, check_tail


@dataclass(frozen=True)
class ActionCodec:
    """An ordered layout of blocks; ``width`` is the pseudo-action dimension D.

    Blocks that depend on others (a pose with a ``parent``, points in a ``frame``) must come
    after them, so decoding runs in layout order.
    """

    blocks: tuple[Block, ...]
    slices: dict[str, slice] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.blocks:
            raise ValueError("codec: at least one block is required")
        object.__setattr__(self, "blocks", tuple(self.blocks))
        seen: dict[str, Block] = {}
        slices: dict[str, slice] = {}
        offset = 0
        for b in self.blocks:
            if b.name in seen:
                raise ValueError(f"codec: block name {b.name!r} used twice")
            for dep in b.depends_on():
                if dep not in seen or not isinstance(seen[dep], PoseBlock):
                    raise ValueError(
                        f"codec: {b.label()} refers to pose block {dep!r}, which must come "
                        "earlier in the layout"
                    )
            seen[b.name] = b
            slices[b.name] = slice(offset, offset + b.width)
            offset += b.width
        object.__setattr__(self, "slices", slices)

    # ---- layout metadata -------------------------------------------------------------
    @property
    def width(self) -> int:
        return sum(b.width for b in self.blocks)

    @property
    def state_blocks(self) -> tuple[Block, ...]:
        return tuple(b for b in self.blocks if b.kind == "state")

    @property
    def command_blocks(self) -> tuple[Block, ...]:
        return tuple(b for b in self.blocks if b.kind == "command")

    def block(self, name: str) -> Block:
        for b in self.blocks:
            if b.name == name:
                return b
        raise KeyError(f"codec has no block {name!r}; blocks: {[b.name for b in self.blocks]}")

    def dim_names(self) -> list[str]:
        return [n for b in self.blocks for n in b.dim_names()]

    def units(self) -> list[str]:
        return [u for b in self.blocks for u in b.units()]

    @staticmethod
    def _rotation_entries(blocks: Sequence[Block]) -> np.ndarray:
        """Bool over ``blocks`` laid out one after another, True at their 6D rotation entries."""
        return np.concatenate([np.isin(np.arange(b.width), b.rotation_dims()) for b in blocks]
                              or [np.zeros(0, bool)])

    def rotation_mask(self) -> np.ndarray:
        """``(D,)`` bool, True at 6D rotation entries (left unnormalised by ``quantile_rot``)."""
        return self._rotation_entries(self.blocks)

    def proprio_rotation_mask(self) -> np.ndarray:
        """``(P,)`` bool, True at the 6D rotation entries of :meth:`proprio` (each state
        block reads as wide as it encodes, poses as translation + 6D rotation)."""
        return self._rotation_entries(self.state_blocks)

    # ---- validation ------------------------------------------------------------------
    def _read(self, ep: Episode, blocks: Sequence[Block], what: str) -> dict[str, torch.Tensor]:
        if not isinstance(ep, Mapping):
            raise ValueError(f"{what}: expected a mapping of block name -> array, got {type(ep).__name__}")
        missing = [b.name for b in blocks if b.name not in ep]
        if missing:
            raise ValueError(f"{what}: missing block(s) {missing}; present keys: {sorted(ep)}")
        return {b.name: as_tensor(ep[b.name], f"{what} {b.label()}") for b in blocks}

    def _common_dtype(self, tensors: Mapping[str, torch.Tensor]) -> torch.dtype:
        dtypes = {t.dtype for t in tensors.values()}
        return torch.float64 if torch.float64 in dtypes else next(iter(dtypes))

    def check_episode(self, ep: Episode) -> dict[str, torch.Tensor]:
        """Validate an episode; return its blocks as tensors of a common dtype."""
        t = self._read(ep, self.blocks, "episode")
        dtype = self._common_dtype(t)
        t = {k: v.to(dtype) for k, v in t.items()}
        lengths: dict[str, int] = {}
        for b in self.blocks:
            b.check(t[b.name])
            n = t[b.name].shape[b.time_axis] + (1 if b.kind == "command" else 0)
            lengths[b.name] = n
        if len(set(lengths.values())) != 1:
            raise ValueError(
                "episode: blocks disagree on the number of steps T (command blocks hold T-1 "
                f"transitions): {lengths}"
            )
        T = next(iter(lengths.values()))
        if T < 2:
            raise ValueError(f"episode: at least 2 steps are needed for one transition, got T={T}")
        return t

    # ---- encode / decode -------------------------------------------------------------
    def encode(self, ep: Episode) -> Any:
        """Episode -> pseudo-actions ``(..., T-1, D)``; numpy in, numpy out (torch likewise).

        Raises ``ValueError`` naming the block on wrong shapes, non-finite values, improper
        rotations or out-of-range grippers/commands.
        """
        is_torch = any(isinstance(v, torch.Tensor) for v in ep.values()) if isinstance(ep, Mapping) else False
        t = self.check_episode(ep)
        parts = [b.encode(t) for b in self.blocks]
        batch = torch.broadcast_shapes(*[p.shape[:-1] for p in parts])
        out = torch.cat([p.expand(batch + (p.shape[-1],)) for p in parts], -1)
        return out if is_torch else out.numpy()

    def start_state(self, ep: Episode, t: int = 0) -> dict[str, Any]:
        """The absolute state blocks at step ``t`` of an episode: the ``start`` for decoding."""
        out = {}
        for b in self.state_blocks:
            v = ep[b.name]
            idx = [slice(None)] * v.ndim
            idx[v.ndim + b.time_axis] = t
            out[b.name] = v[tuple(idx)]
        return out

    def check_start(self, start: Episode, dtype: torch.dtype) -> dict[str, torch.Tensor]:
        s = {k: v.to(dtype) for k, v in self._read(start, self.state_blocks, "start state").items()}
        for b in self.state_blocks:
            v = s[b.name]
            # Reuse the per-block checks by viewing the single step as a length-1 sequence.
            try:
                b.check(v.unsqueeze(b.time_axis))
            except ValueError as exc:
                raise ValueError(f"start state: {exc}") from None
        return s

    def proprio(self, start: Episode) -> np.ndarray:
        """The state blocks at one step (a start state) -> ``(P,)`` float64, the robot's
        proprioception as the model reads it: poses as translation + 6D rotation, grippers
        and points as they are, in layout order. Empty for command-only layouts."""
        if not self.state_blocks:
            return np.zeros(0)
        s = self.check_start(start, torch.float64)
        return torch.cat([b.proprio(s[b.name]) for b in self.state_blocks]).numpy()

    def decode(self, x: Any, start: Episode | None = None) -> dict[str, Any]:
        """Pseudo-actions ``(..., T-1, D)`` -> absolute episode, integrating from ``start``.

        ``start`` holds each state block's absolute value at step 0 (poses ``(..., 4, 4)``,
        gripper ``(...)``, points ``(..., N, 3)``); it may be omitted only when the codec
        has no state blocks. Returns state blocks over ``T`` steps and command blocks over
        ``T-1``, as numpy when ``x`` is numpy.
        """
        is_torch = isinstance(x, torch.Tensor)
        xt = as_tensor(x, "pseudo-actions")
        check_tail(xt, (None, self.width), "pseudo-actions", f"(..., T-1, {self.width})")
        if self.state_blocks and start is None:
            raise ValueError(
                f"start state: required to decode state blocks {[b.name for b in self.state_blocks]}"
            )
        s = self.check_start(start or {}, xt.dtype)
        decoded: dict[str, torch.Tensor] = {}
        for b in self.blocks:
            part = xt[..., self.slices[b.name]]
            b.check_encoded(part)
            decoded[b.name] = b.decode(part, s, decoded)
        if is_torch:
            return decoded
        return {k: v.numpy() for k, v in decoded.items()}

    def project(self, x: Any) -> Any:
        """Model output ``(..., D)`` -> the nearest decodable pseudo-actions (bounded values
        clipped to their range; everything else unchanged). Non-finite values stay and are
        rejected by :meth:`decode`."""
        is_torch = isinstance(x, torch.Tensor)
        xt = as_tensor(x, "pseudo-actions")
        check_tail(xt, (None, self.width), "pseudo-actions", f"(..., T-1, {self.width})")
        out = torch.cat([b.project(xt[..., self.slices[b.name]]) for b in self.blocks], -1)
        return out if is_torch else out.numpy()

    def describe(self) -> list[tuple[int, str, str, str]]:
        """Rows ``(index, dim name, unit, block)`` for tables and docs."""
        rows = []
        for b in self.blocks:
            sl = self.slices[b.name]
            for k, (n, u) in enumerate(zip(b.dim_names(), b.units())):
                rows.append((sl.start + k, n, u, type(b).__name__))
        return rows
