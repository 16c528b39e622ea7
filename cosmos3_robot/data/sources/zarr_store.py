"""Zarr replay buffers (Diffusion Policy / UMI layout) via zarr v3.

Layout: ``data/<key>`` arrays concatenated over all episodes along axis 0, and
``meta/episode_ends`` ``(E,)`` exclusive end indices. Keys are configured, not guessed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from cosmos3_robot.data.episode import DataError, Episode, guarded


@dataclass(frozen=True)
class ZarrLayout:
    """Attributes:
        cameras: camera name -> ``data/<key>`` of ``(N, H, W, 3)`` uint8 images.
        state / commands: raw key -> ``data/<key>``.
        timestamps: ``data/<key>`` holding per-step seconds, or ``None`` to use ``fps``.
        fps: rate in Hz when there are no timestamps.
        text: instruction for every episode (replay buffers carry none).
    """

    cameras: dict[str, str] = field(default_factory=dict)
    state: dict[str, str] = field(default_factory=dict)
    commands: dict[str, str] = field(default_factory=dict)
    timestamps: str | None = None
    fps: float = 10.0
    text: str = ""


def read_zarr(path: str | os.PathLike[str], layout: ZarrLayout, skipped: list[str] | None = None,
              ) -> Iterator[Episode]:
    """Yield one validated :class:`Episode` per replay-buffer episode (bad ones recorded in
    ``skipped`` and skipped when a list is given, else raised)."""
    import zarr

    path = Path(path)
    try:
        root = zarr.open_group(str(path), mode="r")
    except Exception as exc:
        raise DataError(f"{path}: not a readable zarr group ({exc})") from None
    for grp in ("data", "meta"):
        if grp not in root:
            raise DataError(f"{path}: missing group {grp!r} (expected data/<key> and meta/episode_ends)")
    if "episode_ends" not in root["meta"]:
        raise DataError(f"{path}: missing meta/episode_ends")
    raw_ends = np.asarray(root["meta"]["episode_ends"][:])
    if raw_ends.ndim != 1 or raw_ends.size == 0:
        raise DataError(f"{path}: meta/episode_ends: expected (E >= 1,) exclusive end indices, got shape "
                        f"{raw_ends.shape}")
    if raw_ends.dtype.kind not in "iu" and not (raw_ends.dtype.kind == "f" and np.all(raw_ends == np.round(raw_ends))):
        raise DataError(f"{path}: meta/episode_ends: expected whole row indices, got {raw_ends.dtype} "
                        f"{raw_ends[:8].tolist()}")
    ends = raw_ends.astype(np.int64)
    if (np.diff(ends) <= 0).any() or ends[0] <= 0:
        raise DataError(f"{path}: meta/episode_ends must be strictly increasing positive ends, got {ends[:8]}...")
    data = root["data"]

    def column(key: str, what: str) -> np.ndarray:
        if key not in data:
            raise DataError(f"{path}: {what}: missing data/{key}; present: {sorted(data.keys())}")
        arr = data[key]
        if arr.shape[0] != ends[-1]:
            raise DataError(f"{path}: data/{key} has {arr.shape[0]} rows but meta/episode_ends ends at {ends[-1]}"
                            f"{' (the last rows belong to no episode)' if arr.shape[0] > ends[-1] else ''}")
        return arr

    cams = {c: column(k, f"frames[{c!r}]") for c, k in layout.cameras.items()}
    state = {s: column(k, f"state[{s!r}]") for s, k in layout.state.items()}
    cmds = {s: column(k, f"commands[{s!r}]") for s, k in layout.commands.items()}
    stamps = column(layout.timestamps, "timestamps") if layout.timestamps else None
    def read_episode(e: int, start: int, end: int) -> Episode:
        sl = slice(start, end)
        ts = np.asarray(stamps[sl], dtype=np.float64) if stamps is not None else np.arange(end - start) / layout.fps
        return Episode(
            f"{path.name}:episode_{e}", ts,
            {c: np.asarray(a[sl]) for c, a in cams.items()},
            {k: np.asarray(a[sl], dtype=np.float64) for k, a in state.items()},
            {k: np.asarray(a[sl], dtype=np.float64) for k, a in cmds.items()},
            layout.text,
        ).validate()

    starts = [0] + ends[:-1].tolist()
    yield from guarded(((lambda e=e, a=a, b=b: read_episode(e, a, b))
                        for e, (a, b) in enumerate(zip(starts, ends.tolist()))), skipped)
