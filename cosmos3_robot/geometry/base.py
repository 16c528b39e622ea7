"""The shared machinery: array types, the torch/numpy dispatch (:func:`dual`), safe norms."""

from __future__ import annotations

import functools
from typing import Any, Callable, Literal, TypeVar

import numpy as np
import torch

Array = TypeVar("Array", torch.Tensor, np.ndarray)
QuatOrder = Literal["wxyz", "xyzw"]
Rot6dConvention = Literal["columns", "rows"]
RelativeMode = Literal["framewise", "anchored"]

ROT6D_CONVENTION: Rot6dConvention = "columns"
"""The project's 6D convention: first two columns of R (Cosmos, Zhou et al. 2019)."""

# Smallest norm treated as non-zero (keeps sqrt and divisions finite, gradients too).
_EPS = {torch.float64: 1e-150, torch.float32: 1e-18, torch.float16: 1e-4, torch.bfloat16: 1e-18}


def _eps(x: torch.Tensor) -> float:
    return _EPS.get(x.dtype, 1e-7)


def _to_torch(a: Any) -> Any:
    if isinstance(a, np.ndarray):
        if not np.issubdtype(a.dtype, np.floating):
            a = a.astype(np.float64)
        return torch.from_numpy(a if a.flags.c_contiguous else a.copy())
    return a


def _to_numpy(out: Any) -> Any:
    if isinstance(out, torch.Tensor):
        return out.detach().cpu().numpy()
    if isinstance(out, tuple):
        return tuple(_to_numpy(o) for o in out)
    return out


F = TypeVar("F", bound=Callable[..., Any])


def dual(fn: F) -> F:
    """Let a torch implementation accept numpy too.

    When no positional argument is a tensor, ``numpy.ndarray`` (and list) arguments are
    converted without copying and the result is returned as numpy. Integer arrays become
    float64.
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if any(isinstance(a, torch.Tensor) for a in args):
            return fn(*args, **kwargs)
        np_args = [np.asarray(a) if isinstance(a, list) else a for a in args]
        return _to_numpy(fn(*[_to_torch(a) for a in np_args], **kwargs))

    return wrapper  # type: ignore[return-value]


def _check_last(x: torch.Tensor, shape: tuple[int, ...], name: str) -> None:
    if tuple(x.shape[-len(shape):]) != shape or x.dim() < len(shape):
        expected = "(..., " + ", ".join(str(s) for s in shape) + ")"
        raise ValueError(f"{name}: expected shape {expected}, got {tuple(x.shape)}")


def _safe_norm(v: torch.Tensor, dim: int = -1, keepdim: bool = False) -> torch.Tensor:
    """Euclidean norm whose gradient is finite at zero."""
    sq = (v * v).sum(dim=dim, keepdim=keepdim)
    eps = _eps(v)
    return torch.sqrt(torch.clamp(sq, min=eps * eps))
