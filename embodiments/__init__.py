"""Embodiment registry, filled from the entry-point group ``cosmos3_robot.embodiments``.

Built-in embodiments (this folder) and third-party ones register the same way: a
distribution declares, in its ``pyproject.toml``::

    [project.entry-points."cosmos3_robot.embodiments"]
    my_arm = "my_package.my_module:my_arm"

where ``my_arm`` is an :class:`~cosmos3_robot.embodiment.Embodiment` or a zero-argument
callable returning one. :func:`register` adds one at run time (tests, notebooks).
"""

from __future__ import annotations

import threading
from importlib.metadata import EntryPoint, entry_points
from typing import Callable, Union

from cosmos3_robot.embodiment import Embodiment

ENTRY_POINT_GROUP = "cosmos3_robot.embodiments"

Factory = Union[Embodiment, Callable[[], Embodiment]]

_runtime: dict[str, Factory] = {}
_cache: dict[str, Embodiment] = {}
_lock = threading.Lock()


def _entry_points() -> dict[str, EntryPoint]:
    found: dict[str, EntryPoint] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        # The first distribution on sys.path wins, as for imports.
        found.setdefault(ep.name, ep)
    return found


def available() -> list[str]:
    """Names of all registered embodiments (entry points and run-time registrations), sorted."""
    return sorted(set(_entry_points()) | set(_runtime))


def register(name: str, factory: Factory, *, overwrite: bool = False) -> None:
    """Register an embodiment at run time under ``name``."""
    with _lock:
        if not overwrite and (name in _runtime or name in _entry_points()):
            raise ValueError(f"embodiment {name!r} is already registered (pass overwrite=True)")
        _runtime[name] = factory
        _cache.pop(name, None)


def unregister(name: str) -> None:
    """Remove a run-time registration (entry points stay)."""
    with _lock:
        _runtime.pop(name, None)
        _cache.pop(name, None)


def _build(name: str, factory: object, origin: str) -> Embodiment:
    obj = factory() if callable(factory) and not isinstance(factory, Embodiment) else factory
    if not isinstance(obj, Embodiment):
        raise TypeError(f"embodiment {name!r} from {origin}: expected an Embodiment, got {type(obj).__name__}")
    if obj.name != name:
        raise ValueError(f"embodiment registered as {name!r} from {origin} calls itself {obj.name!r}")
    return obj


def get(name: str) -> Embodiment:
    """The embodiment registered as ``name``; ``ValueError`` listing the known ones otherwise."""
    with _lock:
        if name in _cache:
            return _cache[name]
        if name in _runtime:
            emb = _build(name, _runtime[name], "register()")
        else:
            eps = _entry_points()
            if name not in eps:
                known = sorted(set(eps) | set(_runtime))
                raise ValueError(f"unknown embodiment {name!r}; available: {known}")
            ep = eps[name]
            emb = _build(name, ep.load(), f"entry point {ep.value!r}")
        _cache[name] = emb
        return emb


__all__ = ["ENTRY_POINT_GROUP", "Embodiment", "available", "get", "register", "unregister"]
