"""LIBERO / robomimic HDF5 demonstrations via h5py.

File layout (REFERENCE.md section 3): ``data/demo_N/actions`` ``(T, 7)``,
``data/demo_N/obs/<key>`` per-step observations, images ``(T, H, W, 3)`` uint8 rendered
upside down (LIBERO), the instruction in ``data.attrs["problem_info"]`` (JSON,
``language_instruction``) and in the file name. Key names differ between releases; they are
configured with :class:`HDF5Layout`, never guessed.
"""

from __future__ import annotations

import io
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from cosmos3_robot.data.episode import DataError, Episode, guarded


@dataclass(frozen=True)
class HDF5Layout:
    """Where things are inside each ``data/demo_N`` group.

    Attributes:
        cameras: camera name -> dataset path of ``(T, H, W, 3)`` uint8 images, or of JPEG
            bytes when ``jpeg`` is True.
        state: raw key -> dataset path of ``(T, ...)`` per-step state.
        commands: raw key -> dataset path of ``(T, ...)`` per-step commands.
        rotate_180: images are stored upside down (LIBERO renders); turn them upright.
        jpeg: camera datasets hold encoded JPEG bytes per frame.
        fps: recording rate in Hz (HDF5 demos carry no timestamps).
    """

    cameras: dict[str, str] = field(default_factory=dict)
    state: dict[str, str] = field(default_factory=dict)
    commands: dict[str, str] = field(default_factory=dict)
    rotate_180: bool = False
    jpeg: bool = False
    fps: float = 20.0


LIBERO = HDF5Layout(
    cameras={"agentview": "obs/agentview_rgb", "wrist": "obs/eye_in_hand_rgb"},
    state={"ee_pos": "obs/ee_pos", "ee_ori": "obs/ee_ori", "gripper_states": "obs/gripper_states",
           "joint_states": "obs/joint_states"},
    commands={"actions": "actions"},
    rotate_180=True,
    fps=20.0,
)
"""The LIBERO benchmark's release (128x128 images, 20 Hz)."""

ROBOMIMIC = HDF5Layout(
    cameras={"agentview": "obs/agentview_image", "wrist": "obs/robot0_eye_in_hand_image"},
    state={"eef_pos": "obs/robot0_eef_pos", "eef_quat": "obs/robot0_eef_quat",
           "gripper_qpos": "obs/robot0_gripper_qpos"},
    commands={"actions": "actions"},
    rotate_180=False,
    fps=20.0,
)
"""robosuite/robomimic naming (re-releases of LIBERO use it too)."""

LAYOUTS = {"libero": LIBERO, "robomimic": ROBOMIMIC}


def _demo_key(name: str) -> tuple[int, str]:
    m = re.match(r"demo_(\d+)$", name)
    return (int(m.group(1)) if m else 1 << 30, name)


def _instruction(f, path: Path) -> str:
    info = f["data"].attrs.get("problem_info")
    if info is not None:
        try:
            text = json.loads(info if isinstance(info, str) else info.decode()).get("language_instruction")
            if text:
                return str(text).strip()
        except (json.JSONDecodeError, AttributeError):
            pass
    # LIBERO file names: "<SCENE>_<instruction words>_demo.hdf5"
    stem = re.sub(r"_demo$", "", path.stem)
    stem = re.sub(r"^[A-Z0-9_]*SCENE\d+_", "", stem)
    return stem.replace("_", " ").strip()


def _decode_jpeg(frames, where: str) -> np.ndarray:
    from PIL import Image

    out = []
    for i, buf in enumerate(frames):
        try:
            out.append(np.asarray(Image.open(io.BytesIO(bytes(buf))).convert("RGB")))
        except Exception as exc:
            raise DataError(f"{where}: frame {i} is not a decodable JPEG ({exc})") from None
    return np.stack(out)


def read_hdf5(path: str | os.PathLike[str], layout: HDF5Layout = LIBERO, text: str | None = None,
              skipped: list[str] | None = None) -> Iterator[Episode]:
    """Yield one validated :class:`Episode` per ``data/demo_N`` group, in demo order.

    With a ``skipped`` list, a bad demo is recorded there (``"name: reason"``) and skipped
    instead of raising."""
    import h5py

    path = Path(path)
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise DataError(f"{path}: not a readable HDF5 file ({exc})") from None
    with f:
        if "data" not in f:
            raise DataError(f"{path}: no 'data' group (expected data/demo_N/...)")
        instruction = text if text is not None else _instruction(f, path)
        def read_demo(demo: str) -> Episode:
            g = f["data"][demo]
            name = f"{path.name}:{demo}"

            def read(key: str, p: str, what: str) -> np.ndarray:
                if p not in g:
                    raise DataError(f"{name}: {what}[{key!r}]: missing dataset {p!r}")
                return g[p][()]

            frames = {}
            for cam, p in layout.cameras.items():
                img = read(cam, p, "frames")
                img = _decode_jpeg(img, f"{name}: frames[{cam!r}]") if layout.jpeg else img
                frames[cam] = np.ascontiguousarray(img[:, ::-1, ::-1]) if layout.rotate_180 else img
            state = {k: np.asarray(read(k, p, "state"), dtype=np.float64) for k, p in layout.state.items()}
            commands = {k: np.asarray(read(k, p, "commands"), dtype=np.float64) for k, p in layout.commands.items()}
            lengths = [a.shape[0] for a in (*frames.values(), *state.values())]
            if not lengths:
                lengths = [a.shape[0] for a in commands.values()]
            T = lengths[0]
            return Episode(name, np.arange(T) / layout.fps, frames, state, commands, instruction).validate()

        demos = sorted(f["data"].keys(), key=_demo_key)
        yield from guarded(((lambda d=d: read_demo(d)) for d in demos), skipped)
