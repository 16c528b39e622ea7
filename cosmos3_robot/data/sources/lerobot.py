"""LeRobot datasets (format v3.0) through lerobot's own ``LeRobotDataset``.

A local ``root`` is read offline; a hub ``repo_id`` alone works for users with a network
(LeRobot downloads it). Each LeRobot episode becomes an :class:`Episode`: its numeric
columns (``observation.state``, ``action``, ...) become state/commands under the names
given in :class:`LeRobotLayout`, its cameras become uint8 frames decoded by LeRobot's video
decoder, its task string the instruction, and ``timestamp`` the timestamps.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator

import numpy as np
import torch

from cosmos3_robot.data.episode import DataError, Episode, guarded


@dataclass(frozen=True)
class LeRobotLayout:
    """Attributes:
        cameras: our camera name -> LeRobot feature key (``observation.images.front``).
        state: raw key -> LeRobot feature key of per-frame state.
        commands: raw key -> LeRobot feature key of per-frame commands (``action``).
        video_backend: LeRobot's decoder (``None``: its default, torchcodec, which needs
            the system FFmpeg; ``"pyav"`` needs nothing more).
    """

    cameras: dict[str, str] = field(default_factory=dict)
    state: dict[str, str] = field(default_factory=dict)
    commands: dict[str, str] = field(default_factory=lambda: {"action": "action"})
    video_backend: str | None = None


def _to_uint8_hwc(x: torch.Tensor) -> np.ndarray:
    """LeRobot frames ``(T, C, H, W)`` float in [0, 1] -> ``(T, H, W, C)`` uint8."""
    return (x.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()


def _missing_files(repo_id: str, root: str) -> list[str]:
    """The data and video files a local dataset's metadata lists that are not on disk."""
    from pathlib import Path

    from cosmos3_robot.data.convert import quiet_encoders

    quiet_encoders()
    from lerobot.datasets import LeRobotDatasetMetadata

    if not (Path(root) / "meta" / "info.json").exists():
        return []  # not a local dataset (yet): LeRobotDataset says what is wrong
    try:
        meta = LeRobotDatasetMetadata(repo_id, root=root)
        paths = {meta.get_data_file_path(e) for e in range(meta.total_episodes)}
        paths |= {meta.get_video_file_path(e, k) for e in range(meta.total_episodes) for k in meta.video_keys}
    except Exception:  # noqa: BLE001  (unreadable metadata: LeRobotDataset reports it)
        return []
    return sorted(str(p) for p in paths if not (Path(root) / p).exists())


def read_lerobot(repo_id: str, layout: LeRobotLayout, root: str | None = None,
                 episodes: list[int] | None = None, skipped: list[str] | None = None) -> Iterator[Episode]:
    """Yield one validated :class:`Episode` per LeRobot episode (bad ones recorded in
    ``skipped`` and skipped when a list is given, else raised)."""
    from cosmos3_robot.data.convert import quiet_encoders

    quiet_encoders()
    from lerobot.datasets import LeRobotDataset
    from lerobot.datasets.video_utils import decode_video_frames

    missing = _missing_files(repo_id, root) if root is not None else []
    if missing:  # LeRobot would go to the hub for them and fail naming none
        raise DataError(f"lerobot {repo_id} ({root}): {len(missing)} file(s) the metadata lists are missing: "
                        f"{', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}")
    try:
        ds = LeRobotDataset(repo_id, root=root, episodes=episodes, video_backend=layout.video_backend)
    except Exception as exc:
        raise DataError(f"lerobot {repo_id} ({root}): cannot be opened ({type(exc).__name__}: {exc})") from None
    features = ds.meta.features
    for name, key in {**layout.cameras, **layout.state, **layout.commands}.items():
        if key not in features:
            raise DataError(f"lerobot {repo_id}: feature {key!r} (for {name!r}) not in the dataset; "
                            f"features: {sorted(features)}")
    hf = ds.hf_dataset  # the frames' table (LeRobot loads it on first access)
    columns = set(hf.column_names)
    for name, key in {**layout.state, **layout.commands}.items():
        if key not in columns:
            raise DataError(f"lerobot {repo_id}: feature {key!r} (for {name!r}) is in the metadata but not in the "
                            f"data files; columns: {sorted(columns)}")
    # Every column but the images is read once, as plain values (LeRobot's torch format, and
    # iterating rows of a column, decode every image of each row: 3x the images of a demo set)
    plain = hf.with_format(None)
    numeric = {**layout.state, **layout.commands}
    table = plain.select_columns(sorted({"episode_index", "timestamp", "task_index", *numeric.values()})).to_dict()
    ep_col = np.asarray(table["episode_index"])
    wanted = episodes if episodes is not None else sorted(set(ep_col.tolist()))
    image_keys = [k for k in layout.cameras.values() if k not in ds.meta.video_keys]
    images = plain.select_columns(image_keys) if image_keys else None

    def read_episode(ep_idx: int) -> Episode:
        rows = np.nonzero(ep_col == ep_idx)[0]
        name = f"lerobot:{repo_id}:episode_{ep_idx}"
        if rows.size < 2:
            raise DataError(f"{name}: {rows.size} frames; at least 2 are needed")
        ts = np.asarray([table["timestamp"][i] for i in rows], dtype=np.float64).reshape(-1)
        arrays = {}
        for raw, key in numeric.items():
            what = f"{'state' if raw in layout.state else 'commands'}[{raw!r}] ({key})"
            col = [table[key][i] for i in rows]
            nulls = [i for i, v in enumerate(col) if v is None or (isinstance(v, list) and any(x is None for x in v))]
            if nulls and len(nulls) == len(col):
                raise DataError(f"{name}: {what}: no values (the column is missing from the data files, or all null)")
            if nulls:
                raise DataError(f"{name}: {what}: null values at frame(s) {nulls[:5]}")
            try:
                arr = np.asarray(col, dtype=np.float64)
            except (TypeError, ValueError) as exc:
                raise DataError(f"{name}: {what}: not a numeric array ({exc})") from None
            # the per-frame shape the dataset declares: a (1,) feature is stored as a scalar
            shape = tuple((ds.meta.features.get(key) or {}).get("shape") or arr.shape[1:])
            if arr.size == len(rows) * int(np.prod(shape)):
                arr = arr.reshape(len(rows), *shape)
            arrays[raw] = arr
        sub = images.select(rows.tolist()) if images is not None else None
        frames = {}
        ep_meta = ds.meta.episodes[ep_idx]
        for cam, key in layout.cameras.items():
            if key in ds.meta.video_keys:
                path = ds.root / ds.meta.get_video_file_path(ep_idx, key)
                start = float(ep_meta[f"videos/{key}/from_timestamp"])
                try:
                    vid = decode_video_frames(path, [start + float(t) for t in ts], ds.tolerance_s, layout.video_backend)
                except Exception as exc:
                    raise DataError(f"{name}: frames[{cam!r}]: video {path.name} could not be decoded "
                                    f"({type(exc).__name__}: {exc})") from None
                frames[cam] = _to_uint8_hwc(vid)
            else:  # images stored in the parquet files
                imgs = sub[key]  # type: ignore[index]
                frames[cam] = np.stack([np.asarray(im.convert("RGB")) if hasattr(im, "convert")
                                        else _to_uint8_hwc(im[None])[0] for im in imgs])
        task_idx = int(table["task_index"][rows[0]])
        text = str(ds.meta.tasks.iloc[task_idx].name)
        state = {k: arrays[k] for k in layout.state}
        commands = {k: arrays[k] for k in layout.commands}
        return Episode(name, ts, frames, state, commands, text).validate()

    yield from guarded(((lambda e=e: read_episode(e)) for e in wanted), skipped)
