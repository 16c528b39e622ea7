"""A recorded episode in a source-neutral form, validated once when a source reads it.

Every data source (LeRobot, LIBERO/robomimic HDF5, zarr replay buffers, rosbag2) produces
:class:`Episode` objects; windowing, statistics and training only see this form.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator

import numpy as np


class DataError(ValueError):
    """Bad data, with the episode and field it was found in."""


@dataclass
class Episode:
    """One episode.

    Attributes:
        name: ``"<source>:<episode id>"``, used in every error message.
        timestamps: ``(T,)`` seconds, strictly increasing.
        frames: camera name -> ``(T, H, W, 3)`` uint8 images (upright).
        state: raw robot key -> ``(T, ...)`` float arrays, read by the embodiment's adapters.
        commands: raw key -> ``(T, ...)`` or ``(T-1, ...)`` native per-step commands (e.g.
            LIBERO's 7D ``actions``); a ``(T, ...)`` array's last row is the command after
            the final frame and is dropped when windows are cut.
        text: the task instruction.
    """

    name: str
    timestamps: np.ndarray
    frames: dict[str, np.ndarray] = field(default_factory=dict)
    state: dict[str, np.ndarray] = field(default_factory=dict)
    commands: dict[str, np.ndarray] = field(default_factory=dict)
    text: str = ""

    def __len__(self) -> int:
        return int(self.timestamps.shape[0])

    def validate(self) -> "Episode":
        """Check lengths, timestamps, image layout and finiteness; raise :class:`DataError`."""
        ts = np.asarray(self.timestamps, dtype=np.float64)
        if ts.ndim != 1 or ts.size < 2:
            raise DataError(f"{self.name}: timestamps: expected (T,) with T >= 2, got shape {ts.shape}")
        if not np.isfinite(ts).all():
            raise DataError(f"{self.name}: timestamps: non-finite values")
        bad = np.nonzero(np.diff(ts) <= 0)[0]
        if bad.size:
            i = int(bad[0])
            raise DataError(f"{self.name}: timestamps: not strictly increasing at index {i + 1} "
                            f"({ts[i]:.6f} s then {ts[i + 1]:.6f} s)")
        self.timestamps = ts
        T = ts.size
        for cam, img in self.frames.items():
            if img.ndim != 4 or img.shape[0] != T or img.shape[-1] != 3:
                raise DataError(f"{self.name}: frames[{cam!r}]: expected ({T}, H, W, 3), got {img.shape}")
            if img.dtype != np.uint8:
                raise DataError(f"{self.name}: frames[{cam!r}]: expected uint8 pixels, got {img.dtype}")
        for kind, arrays, lengths in (("state", self.state, (T,)), ("commands", self.commands, (T, T - 1))):
            for key, arr in arrays.items():
                a = np.asarray(arr)
                if a.ndim < 1 or a.shape[0] not in lengths:
                    raise DataError(f"{self.name}: {kind}[{key!r}]: expected {' or '.join(map(str, lengths))} "
                                    f"rows to match {T} frames, got shape {a.shape}")
                if not np.issubdtype(a.dtype, np.number):
                    raise DataError(f"{self.name}: {kind}[{key!r}]: expected numbers, got dtype {a.dtype}")
                if not np.isfinite(a).all():
                    row = int(np.argwhere(~np.isfinite(a))[0][0])
                    raise DataError(f"{self.name}: {kind}[{key!r}]: non-finite value at row {row}")
        return self

    def select(self, idx: np.ndarray) -> "Episode":
        """The episode at frame indices ``idx`` (commands follow their frames)."""
        cmds: dict[str, Any] = {}
        for k, v in self.commands.items():
            full = v if v.shape[0] == len(self) else np.concatenate([v, v[-1:]], 0)
            cmds[k] = full[idx]
        return Episode(self.name, self.timestamps[idx], {k: v[idx] for k, v in self.frames.items()},
                       {k: v[idx] for k, v in self.state.items()}, cmds, self.text)


def resample_indices(timestamps: np.ndarray, fps: float, name: str = "episode") -> np.ndarray:
    """Frame indices nearest to a regular ``fps`` grid from the first timestamp.

    Resampling goes by timestamps, not indices, so a 30 Hz recording read at 15 Hz takes
    every other frame and a recording with dropped frames keeps its real timing. Grid
    points more than half a grid step from any frame (gaps) raise :class:`DataError`.
    """
    if not fps > 0:
        raise DataError(f"{name}: fps must be > 0, got {fps}")
    ts = np.asarray(timestamps, dtype=np.float64)
    n = int(np.floor((ts[-1] - ts[0]) * fps + 1e-6)) + 1
    grid = ts[0] + np.arange(n) / fps
    right = np.clip(np.searchsorted(ts, grid), 1, ts.size - 1)
    left = right - 1
    idx = np.where(np.abs(ts[left] - grid) <= np.abs(ts[right] - grid), left, right)
    gap = np.abs(ts[idx] - grid) > 0.5 / fps + 1e-9
    if gap.any():
        g = int(np.nonzero(gap)[0][0])
        raise DataError(f"{name}: timestamps: no frame within half a step of t={grid[g] - ts[0]:.3f} s "
                        f"at {fps:g} fps (a gap in the recording)")
    return idx


def guarded(makers: Iterable[Callable[[], Episode]], skipped: list[str] | None) -> Iterator[Episode]:
    """Build episodes one by one; a :class:`DataError` is raised, or, when ``skipped`` is a
    list, recorded there (``"name: reason"``) and the episode left out: the counted skip
    a user asks for with ``on_error: skip``."""
    for make in makers:
        try:
            yield make()
        except DataError as exc:
            if skipped is None:
                raise
            skipped.append(str(exc))
