"""Quantile normaliser for pseudo-actions (and any other per-dimension feature).

``offset = (q99 + q01) / 2``, ``scale = (q99 - q01) / 2``, ``x_n = (x - offset) / scale``,
optionally clamped to ``[-1, 1]`` (REFERENCE.md section 1). With ``skip`` set (e.g. the
codec's rotation mask, the ``quantile_rot`` option) those dimensions pass through unchanged:
6D rotation entries already live in [-1, 1].

A dimension that is constant in the data (``scale`` below ``min_scale``) is only centred:
its scale is set to 1 so nothing is divided by zero; :attr:`QuantileNormalizer.constant`
lists such dimensions.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch


@dataclass(frozen=True)
class QuantileNormalizer:
    """Per-dimension affine normaliser from the 1st and 99th percentiles.

    Attributes:
        q01, q99: ``(D,)`` low/high quantiles of the data (float64).
        skip: ``(D,)`` bool; True dimensions are left unnormalised (``quantile_rot``).
        clamp: clamp normalised values to ``[-1, 1]`` (the inverse cannot undo a clamp).
        names: optional ``(D,)`` dimension names, saved with the statistics for checking.
        min_scale: scales below this count as constant dimensions (scale set to 1).
        low_q, high_q: the quantiles used (0.01 and 0.99 by default).
    """

    q01: np.ndarray
    q99: np.ndarray
    skip: np.ndarray | None = None
    clamp: bool = False
    names: tuple[str, ...] | None = None
    min_scale: float = 1e-8
    low_q: float = 0.01
    high_q: float = 0.99
    offset: np.ndarray = field(init=False, repr=False)
    scale: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        q01 = np.asarray(self.q01, dtype=np.float64).reshape(-1)
        q99 = np.asarray(self.q99, dtype=np.float64).reshape(-1)
        if q01.shape != q99.shape:
            raise ValueError(f"normaliser: q01 {q01.shape} and q99 {q99.shape} differ in shape")
        if not (np.isfinite(q01).all() and np.isfinite(q99).all()):
            raise ValueError("normaliser: q01/q99 must be finite")
        if (q99 < q01).any():
            bad = int(np.nonzero(q99 < q01)[0][0])
            raise ValueError(f"normaliser: q99 < q01 at dimension {bad}")
        skip = np.zeros(q01.shape, bool) if self.skip is None else np.asarray(self.skip, bool).reshape(-1)
        if skip.shape != q01.shape:
            raise ValueError(f"normaliser: skip mask has shape {skip.shape}, expected {q01.shape}")
        if self.names is not None and len(self.names) != q01.size:
            raise ValueError(f"normaliser: {len(self.names)} names for {q01.size} dimensions")
        offset = (q99 + q01) / 2
        scale = (q99 - q01) / 2
        scale = np.where(scale < self.min_scale, 1.0, scale)
        offset = np.where(skip, 0.0, offset)
        scale = np.where(skip, 1.0, scale)
        for k, v in dict(q01=q01, q99=q99, skip=skip, offset=offset, scale=scale).items():
            v.setflags(write=False)
            object.__setattr__(self, k, v)
        if self.names is not None:
            object.__setattr__(self, "names", tuple(self.names))

    @property
    def dim(self) -> int:
        return int(self.q01.size)

    @property
    def constant(self) -> list[int]:
        """Dimensions that were constant in the data (only centred)."""
        raw = (self.q99 - self.q01) / 2
        return [int(i) for i in np.nonzero((raw < self.min_scale) & ~self.skip)[0]]

    @classmethod
    def from_data(
        cls,
        x: Any,
        *,
        skip: np.ndarray | None = None,
        clamp: bool = False,
        names: Sequence[str] | None = None,
        low_q: float = 0.01,
        high_q: float = 0.99,
    ) -> "QuantileNormalizer":
        """Statistics from data ``(..., D)`` (all leading dimensions pooled)."""
        arr = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
        if arr.ndim < 1 or arr.shape[-1] == 0:
            raise ValueError(f"normaliser data: expected shape (..., D), got {arr.shape}")
        flat = arr.reshape(-1, arr.shape[-1]).astype(np.float64)
        if flat.shape[0] == 0:
            raise ValueError("normaliser data: no rows to compute statistics from")
        bad = ~np.isfinite(flat)
        if bad.any():
            r, c = (int(i) for i in np.argwhere(bad)[0])
            raise ValueError(f"normaliser data: non-finite value in row {r}, dimension {c}")
        q = np.quantile(flat, [low_q, high_q], axis=0)
        return cls(q[0], q[1], skip=skip, clamp=clamp, names=tuple(names) if names else None,
                   low_q=low_q, high_q=high_q)

    def _params(self, x: Any) -> tuple[Any, Any]:
        if x.shape[-1] != self.dim:
            raise ValueError(f"normaliser: expected last dimension {self.dim}, got shape {tuple(x.shape)}")
        if isinstance(x, torch.Tensor):
            return (torch.tensor(self.offset, dtype=x.dtype, device=x.device),
                    torch.tensor(self.scale, dtype=x.dtype, device=x.device))
        return self.offset.astype(x.dtype, copy=False), self.scale.astype(x.dtype, copy=False)

    def normalize(self, x: Any) -> Any:
        """``(..., D)`` raw -> normalised (numpy or torch, dtype kept)."""
        x = x if isinstance(x, torch.Tensor) else np.asarray(x, dtype=np.result_type(x, np.float32))
        offset, scale = self._params(x)
        y = (x - offset) / scale
        if self.clamp:
            if isinstance(y, torch.Tensor):
                skip = torch.tensor(self.skip, device=y.device)
                y = torch.where(skip, y, y.clamp(-1, 1))
            else:
                y = np.where(self.skip, y, np.clip(y, -1, 1))
        return y

    def unnormalize(self, y: Any) -> Any:
        """``(..., D)`` normalised -> raw (numpy or torch, dtype kept)."""
        y = y if isinstance(y, torch.Tensor) else np.asarray(y, dtype=np.result_type(y, np.float32))
        offset, scale = self._params(y)
        return y * scale + offset

    # ---- persistence -----------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "type": "quantile",
            "q01": self.q01.tolist(),
            "q99": self.q99.tolist(),
            "skip": self.skip.tolist(),
            "clamp": self.clamp,
            "names": list(self.names) if self.names is not None else None,
            "min_scale": self.min_scale,
            "low_q": self.low_q,
            "high_q": self.high_q,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "QuantileNormalizer":
        if d.get("type") != "quantile":
            raise ValueError(f"normaliser file: expected type 'quantile', got {d.get('type')!r}")
        missing = [k for k in ("q01", "q99") if k not in d]
        if missing:
            raise ValueError(f"normaliser file: missing field(s) {missing}")
        names = d.get("names")
        return cls(
            np.asarray(d["q01"], float), np.asarray(d["q99"], float),
            skip=np.asarray(d["skip"], bool) if d.get("skip") is not None else None,
            clamp=bool(d.get("clamp", False)),
            names=tuple(names) if names is not None else None,
            min_scale=float(d.get("min_scale", 1e-8)),
            low_q=float(d.get("low_q", 0.01)), high_q=float(d.get("high_q", 0.99)),
        )

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write JSON atomically (temp file + rename), so a crash never leaves half a file.
        The temp file is per process: data-parallel ranks that compute the same statistics
        may all save them at once (each rename is atomic; the last one stays)."""
        path = Path(path)
        tmp = path.with_suffix(f"{path.suffix}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=1))
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, names: Sequence[str] | None = None) -> "QuantileNormalizer":
        """Read JSON; with ``names``, check they match the saved dimension names."""
        norm = cls.from_dict(json.loads(Path(path).read_text()))
        if names is not None and norm.names is not None and tuple(names) != norm.names:
            raise ValueError(
                f"normaliser {path}: saved for dimensions {list(norm.names)[:4]}..., "
                f"but {list(names)[:4]}... were asked for"
            )
        return norm
