"""Input checks shared by the blocks and the codec: arrays as tensors, shapes, finiteness."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import torch

Episode = Mapping[str, Any]
"""Block name -> absolute values over time (numpy arrays or torch tensors)."""

ROT_TOL = {torch.float64: 1e-6, torch.float32: 1e-4}


def rot_tol(dtype: torch.dtype) -> float:
    return ROT_TOL.get(dtype, 1e-2)


def as_tensor(x: Any, what: str) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        t = x
    else:
        try:
            arr = np.asarray(x)
        except Exception as exc:  # pragma: no cover - exotic inputs
            raise ValueError(f"{what}: could not be read as an array ({exc})") from exc
        if arr.dtype == object or not (
            np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)
            or arr.dtype == np.bool_
        ):
            raise ValueError(f"{what}: expected a numeric array, got dtype {arr.dtype}")
        if not np.issubdtype(arr.dtype, np.floating):
            arr = arr.astype(np.float64)
        t = torch.from_numpy(arr if arr.flags.c_contiguous else arr.copy())
    if not torch.is_floating_point(t):
        t = t.to(torch.float64)
    return t


def first_index(mask: torch.Tensor) -> tuple[int, ...]:
    """Index of the first True entry of a boolean tensor."""
    return tuple(int(i) for i in mask.nonzero()[0].tolist())


def check_finite(t: torch.Tensor, what: str) -> None:
    bad = ~torch.isfinite(t)
    if bool(bad.any()):
        raise ValueError(f"{what}: non-finite value (NaN or Inf) at index {first_index(bad)}")


def shape_str(shape: Sequence[int | str]) -> str:
    return "(" + ", ".join(str(s) for s in shape) + ")"


def check_tail(t: torch.Tensor, tail: Sequence[int | None], what: str, expected: str) -> None:
    ok = t.dim() >= len(tail) and all(
        s is None or t.shape[t.dim() - len(tail) + k] == s for k, s in enumerate(tail)
    )
    if not ok:
        raise ValueError(f"{what}: expected shape {expected}, got {tuple(t.shape)}")
