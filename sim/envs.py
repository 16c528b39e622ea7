"""Environment names the evaluator understands, and the factory behind them.

- built-in tasks: ``reach``, ``push``, ``pick_place``, ``stack`` (``builtin`` = all four);
- robosuite: ``robosuite/Lift``, ``robosuite/Stack``, ``robosuite/PickPlaceCan`` (``robosuite`` = these
  three), any robosuite 1.4 task name after the slash;
- LIBERO: ``libero_spatial/3`` (suite/task index; the suite name alone = all its tasks), run
  under the standard protocol (needs LIBERO's assets: ``libero_assets``).
"""

from __future__ import annotations

from typing import Any, Sequence

from cosmos3_robot.sim import BUILTIN_TASKS as BUILTIN
ROBOSUITE = ("Lift", "Stack", "PickPlaceCan")


def expand(names: Sequence[str]) -> tuple[str, ...]:
    """Suite shorthands and comma lists -> individual env names."""
    out: list[str] = []
    for n in names:
        for part in (p for p in n.split(",") if p):
            if part == "builtin":
                out += BUILTIN
            elif part == "robosuite":
                out += [f"robosuite/{t}" for t in ROBOSUITE]
            elif part.startswith("libero_") and "/" not in part:
                from cosmos3_robot.sim.libero import SUITES, list_tasks

                if part not in SUITES:
                    raise ValueError(f"env: unknown LIBERO suite {part!r}; suites: {list(SUITES)}")
                out += [f"{part}/{t.index}" for t in list_tasks(part)]
            else:
                out.append(part)
    return tuple(out)


def check(name: str) -> None:
    """Raise ``ValueError`` for a name no factory knows (without building anything)."""
    from cosmos3_robot.sim.tasks import TASKS

    if name in TASKS:
        return
    kind, _, rest = name.partition("/")
    if kind == "robosuite" and rest:
        return
    if kind.startswith("libero_") and rest.isdigit():
        return
    raise ValueError(f"env: unknown {name!r}; expected a built-in task {sorted(TASKS)}, 'robosuite/<Task>' or "
                     f"'<libero suite>/<task index>'")


DEFAULT_IMAGE_SIZE = {"builtin": 64, "robosuite": 128, "libero": 256}
"""Each kind's own rendered size (px) when none is given: the built-in tasks' training size,
robosuite's adapter default, LIBERO's protocol."""


def make_env(name: str, image_size: int | None = None, max_steps: int | None = None,
             libero_assets: str | None = None, cameras: tuple[str, ...] | None = None) -> Any:
    """Build the env behind ``name`` (see the module docstring). ``image_size`` and
    ``max_steps`` apply to every kind (``None``: its own, :data:`DEFAULT_IMAGE_SIZE` and each
    task's step limit). ``cameras`` (built-in tasks only) names the cameras to render,
    default front and wrist; ``()`` renders none (a policy that reads no image runs at the
    physics' speed)."""
    check(name)
    kind, _, rest = name.partition("/")
    if not rest:
        from cosmos3_robot.sim.tasks import TASKS

        kw = {} if cameras is None else {"cameras": tuple(cameras)}
        return TASKS[name](image_size=image_size or DEFAULT_IMAGE_SIZE["builtin"], max_episode_steps=max_steps, **kw)
    if cameras is not None:
        raise ValueError(f"cameras: only the built-in tasks choose their cameras; {name!r} renders its own")
    if kind == "robosuite":
        from cosmos3_robot.sim.robosuite_env import RobosuiteEnv

        return RobosuiteEnv(rest, image_size=image_size or DEFAULT_IMAGE_SIZE["robosuite"], max_episode_steps=max_steps)
    from cosmos3_robot.sim.libero import LiberoEnv

    return LiberoEnv(kind, int(rest), assets=libero_assets, image_size=image_size, max_steps=max_steps)
