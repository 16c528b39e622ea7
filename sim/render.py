"""Headless OpenGL backend choice for MuJoCo: EGL on a GPU, OSMesa on a CPU.

MuJoCo reads ``MUJOCO_GL`` once, when ``mujoco`` is first imported, so :func:`select_gl`
must run before that import (``cosmos3_robot.sim`` calls it on import). A user's own
``MUJOCO_GL`` is always respected. EGL is chosen only when an NVIDIA device is visible
*and* a trial render in a subprocess succeeds (EGL libraries exist on many CPU machines but
fail without a GPU); otherwise OSMesa, when Debian's ``libosmesa6`` is installed.
"""

from __future__ import annotations

import ctypes.util
import glob
import os
import subprocess
import sys

_PROBE = (
    "import mujoco; m = mujoco.MjModel.from_xml_string('<mujoco><worldbody><geom size=\"1\"/></worldbody></mujoco>');"
    "r = mujoco.Renderer(m, 8, 8); d = mujoco.MjData(m); mujoco.mj_forward(m, d); r.update_scene(d); r.render()"
)

INSTALL_HINT = (
    "no headless OpenGL backend for MuJoCo rendering: on a CPU machine install Debian's libosmesa6 "
    "(`apt-get install -y libosmesa6`) and set MUJOCO_GL=osmesa; on an NVIDIA GPU machine set MUJOCO_GL=egl"
)


PROBE_FAILURES: dict[str, str] = {}
"""Why each trial render failed (backend -> the last line of its error), for the error message."""


def _probe(backend: str, timeout: float = 60.0) -> bool:
    env = {**os.environ, "MUJOCO_GL": backend, "PYOPENGL_PLATFORM": backend}
    try:
        r = subprocess.run([sys.executable, "-c", _PROBE], env=env, capture_output=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as exc:
        PROBE_FAILURES[backend] = f"{type(exc).__name__}: {exc}"
        return False
    if r.returncode != 0:
        lines = r.stderr.decode(errors="replace").strip().splitlines()
        PROBE_FAILURES[backend] = lines[-1] if lines else f"exit status {r.returncode}"
    return r.returncode == 0


def candidate_backends() -> list[str]:
    """Backends worth trying on this machine, best first."""
    out = []
    if glob.glob("/dev/nvidia[0-9]*") and ctypes.util.find_library("EGL"):
        out.append("egl")
    if ctypes.util.find_library("OSMesa"):
        out.append("osmesa")
    return out


def select_gl(probe: bool = True) -> str | None:
    """Set ``MUJOCO_GL`` (and ``PYOPENGL_PLATFORM``) for headless rendering; returns the backend.

    Returns ``None`` when no backend is available; rendering then fails with
    :data:`INSTALL_HINT` (see :func:`check_renderer_error`), while physics still works.
    """
    if os.environ.get("MUJOCO_GL"):
        os.environ.setdefault("PYOPENGL_PLATFORM", os.environ["MUJOCO_GL"])
        return os.environ["MUJOCO_GL"]
    if "mujoco" in sys.modules:  # too late to choose; say what MuJoCo will use
        return None
    for backend in candidate_backends():
        # OSMesa is pure software and always works once the library is there; EGL needs a trial
        if backend == "osmesa" or not probe or _probe(backend):
            os.environ["MUJOCO_GL"] = backend
            os.environ["PYOPENGL_PLATFORM"] = backend
            return backend
    return None


def renderer_error(exc: BaseException) -> RuntimeError:
    """A rendering failure rewritten to say which backend was tried and how to fix it."""
    backend = os.environ.get("MUJOCO_GL", "<unset>")
    tried = "".join(f"; the trial render with {b} failed: {why}" for b, why in PROBE_FAILURES.items())
    return RuntimeError(f"MuJoCo rendering failed with MUJOCO_GL={backend} ({type(exc).__name__}: {exc}){tried}; "
                        f"{INSTALL_HINT}")
