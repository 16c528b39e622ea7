"""Write episodes from any source as a LeRobot v3.0 dataset with LeRobot's own writer.

Feature naming: camera ``c`` -> ``observation.images.c`` (video, or image with
``use_videos=False``); state key ``k`` -> ``observation.k``; a single command key ->
``action`` (several -> ``action.k``). Episodes are resampled to ``fps`` by timestamps; a
command array with ``T-1`` rows gets its last row repeated for the final frame.
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from cosmos3_robot.data.episode import DataError, Episode, resample_indices


def _feature_names(ep: Episode) -> dict[str, tuple[str, str]]:
    """LeRobot feature key -> (kind, our key)."""
    names = {f"observation.images.{c}": ("frames", c) for c in ep.frames}
    names.update({f"observation.{k}": ("state", k) for k in ep.state})
    if len(ep.commands) == 1:
        names["action"] = ("commands", next(iter(ep.commands)))
    else:
        names.update({f"action.{k}": ("commands", k) for k in ep.commands})
    return names


def quiet_encoders() -> None:
    """Keep the video libraries' and datasets' chatter off the console: SVT-AV1 (LeRobot's
    default codec) prints its whole configuration for every video unless ``SVT_LOG`` lowers
    its level (1: errors), libav muxer notes go through PyAV's logger, ``datasets`` draws a
    progress bar per saved episode, and importing LeRobot's video module warns that
    torchvision's video API is deprecated (we decode with PyAV; nothing for a user to do).
    A user's own ``SVT_LOG`` wins. Call it before importing LeRobot."""
    import warnings

    warnings.filterwarnings("ignore", message="The video decoding and encoding capabilities of torchvision",
                            category=UserWarning)
    os.environ.setdefault("SVT_LOG", "1")
    try:
        import av.logging

        av.logging.set_level(av.logging.ERROR)
    except ImportError:
        pass
    try:
        import datasets

        datasets.disable_progress_bars()
    except ImportError:
        pass


# libav's muxer notes that LeRobot's video writer lets through (it restores libav's default
# log callback after each file): two lines per episode, no information for a user
_NOISE = ("Starting second pass: moving the moov atom",)


@contextlib.contextmanager
def filtered_stderr(noise: tuple[str, ...] = _NOISE) -> Iterator[None]:
    """Hold what C libraries write to file descriptor 2 inside the block, then pass it on
    without the lines that contain one of ``noise`` (everything else, errors included, is
    written out unchanged, also when the block raises)."""
    import tempfile

    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            kept = [ln for ln in tmp.read().decode(errors="replace").splitlines(keepends=True)
                    if not any(n in ln for n in noise)]
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()


def to_lerobot(episodes: Iterable[Episode], root: str | os.PathLike[str], repo_id: str, fps: int,
               use_videos: bool = True, robot_type: str | None = None) -> Path:
    """Write ``episodes`` to a new LeRobot dataset at ``root``; returns ``root``.

    The dataset is written to a temporary folder beside ``root`` and moved into place when
    complete, so a failure (a bad episode, Ctrl-C) leaves nothing at ``root`` and the same
    command can simply be run again. ``root`` must not exist yet. Every episode must have
    the first one's keys and per-step shapes; the error names the episode and the field."""
    import shutil

    root = Path(root)
    if root.exists():
        raise DataError(f"{root}: already exists; write the dataset to a new folder (or remove this one)")
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = root.parent / f".{root.name}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        _write_lerobot(episodes, tmp, repo_id, fps, use_videos, robot_type)
        os.replace(tmp, root)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return root


def _write_lerobot(episodes: Iterable[Episode], root: Path, repo_id: str, fps: int, use_videos: bool,
                   robot_type: str | None) -> None:
    quiet_encoders()
    from lerobot.datasets import LeRobotDataset

    ds = None
    names: dict[str, tuple[str, str]] = {}
    shapes: dict[str, tuple[int, ...]] = {}
    try:
        for ep in episodes:
            ep = ep.select(resample_indices(ep.timestamps, fps, ep.name))
            if ds is None:
                names = _feature_names(ep)
                shapes = {feat: tuple(getattr(ep, kind)[key].shape[1:]) for feat, (kind, key) in names.items()}
                features = {}
                for feat, (kind, key) in names.items():
                    if kind == "frames":
                        features[feat] = {"dtype": "video" if use_videos else "image", "shape": shapes[feat],
                                          "names": ["height", "width", "channels"]}
                    else:
                        features[feat] = {"dtype": "float32", "shape": shapes[feat] or (1,), "names": None}
                ds = LeRobotDataset.create(repo_id, fps=fps, features=features, root=root, use_videos=use_videos,
                                           robot_type=robot_type)
            elif _feature_names(ep) != names:
                raise DataError(f"{ep.name}: keys differ from the first episode's ({sorted(names)})")
            for feat, (kind, key) in names.items():
                got = tuple(getattr(ep, kind)[key].shape[1:])
                if got != shapes[feat]:
                    raise DataError(f"{ep.name}: {kind}[{key!r}] has per-step shape {got}; the first episode's "
                                    f"is {shapes[feat]}")
            for t in range(len(ep)):
                frame = {}
                for feat, (kind, key) in names.items():
                    v = getattr(ep, kind)[key][t]
                    frame[feat] = v if kind == "frames" else \
                        np.asarray(v, np.float32).reshape(ds.features[feat]["shape"])
                frame["task"] = ep.text or "unspecified"
                ds.add_frame(frame)
            with filtered_stderr():
                ds.save_episode()
    except BaseException:
        if ds is not None:  # let LeRobot's writer threads and files close before the folder is removed
            for stop in (ds.clear_episode_buffer, ds.finalize):  # public and idempotent in LeRobot 0.6
                try:
                    stop()
                except Exception:  # noqa: BLE001  (best effort on the way out)
                    pass
        raise
    if ds is None:
        raise DataError("convert: no episodes to write")
    with filtered_stderr():
        ds.finalize()
