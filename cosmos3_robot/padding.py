"""Zero-padding of pseudo-actions to a shared width, so embodiments share one batch.

The model's action projections read a fixed width (64 by default, as in the reference);
each embodiment fills its first ``D`` entries and a boolean mask marks them valid, so
losses and projections ignore the padding.
"""

from __future__ import annotations

import functools
from typing import Any, Sequence

import numpy as np
import torch

MAX_ACTION_WIDTH = 64
"""Default padded action width (REFERENCE.md section 1: actions zero-padded to 64)."""


def pad_actions(x: Any, width: int = MAX_ACTION_WIDTH) -> tuple[Any, Any]:
    """Pad ``(..., D)`` to ``(..., width)`` with zeros; return ``(padded, mask)``.

    ``mask`` is ``(width,)`` bool with the first ``D`` entries True. numpy in, numpy out;
    torch in, torch out (same dtype and device).
    """
    d = x.shape[-1]
    if d > width:
        raise ValueError(f"actions: width {d} exceeds the padded maximum {width}")
    if isinstance(x, torch.Tensor):
        padded = torch.nn.functional.pad(x, (0, width - d))
        mask = torch.zeros(width, dtype=torch.bool, device=x.device)
    else:
        x = np.asarray(x)
        padded = np.zeros(x.shape[:-1] + (width,), dtype=x.dtype)
        padded[..., :d] = x
        mask = np.zeros(width, dtype=bool)
    mask[:d] = True
    return padded, mask


def unpad_actions(x: Any, dim: int) -> Any:
    """The first ``dim`` entries of padded actions ``(..., width)``."""
    if dim > x.shape[-1]:
        raise ValueError(f"actions: cannot take {dim} dimensions from width {x.shape[-1]}")
    return x[..., :dim]


def stack_padded(chunks: Sequence[Any], width: int = MAX_ACTION_WIDTH) -> tuple[torch.Tensor, torch.Tensor]:
    """Batch action chunks of different widths ``[(T, D_i)]`` into ``(B, T, width)`` + mask ``(B, width)``.

    All chunks must share ``T`` (the chunk length); widths may differ per embodiment.
    """
    if not chunks:
        raise ValueError("stack_padded: no chunks given")
    tensors = [c if isinstance(c, torch.Tensor) else torch.from_numpy(np.asarray(c)) for c in chunks]
    lengths = {tuple(t.shape[:-1]) for t in tensors}
    if len(lengths) != 1:
        raise ValueError(f"stack_padded: chunks differ in leading shape {sorted(lengths)}; expected one (T,)")
    dtype = functools.reduce(torch.promote_types, [t.dtype for t in tensors])
    pairs = [pad_actions(t.to(dtype), width) for t in tensors]
    return torch.stack([p for p, _ in pairs]), torch.stack([m for _, m in pairs])
