"""Simulation: built-in MuJoCo tasks, robosuite and LIBERO adapters, the closed-loop evaluator.

Imports as ``cosmos3_robot.sim`` (package-dir mapping in ``pyproject.toml``). Importing it
chooses the headless OpenGL backend (:mod:`.render`, before MuJoCo loads) and registers
the built-in tasks with gymnasium::

    import gymnasium as gym, cosmos3_robot.sim
    env = gym.make("cosmos3_robot/PickPlace-v0", image_size=128)

(or without the import: ``gym.make("cosmos3_robot.sim:cosmos3_robot/PickPlace-v0")``).
"""

from cosmos3_robot.sim.render import select_gl

GL_BACKEND = select_gl()

ENV_IDS = {"reach": "cosmos3_robot/Reach-v0", "push": "cosmos3_robot/Push-v0",
           "pick_place": "cosmos3_robot/PickPlace-v0", "stack": "cosmos3_robot/Stack-v0"}
BUILTIN_TASKS = tuple(ENV_IDS)
_CLASSES = {"reach": "ReachEnv", "push": "PushEnv", "pick_place": "PickPlaceEnv", "stack": "StackEnv"}


def _register() -> None:
    try:
        import gymnasium as gym
    except ImportError:  # the `sim` extra is not installed; envs are still importable by class
        return
    for task, env_id in ENV_IDS.items():
        if env_id not in gym.registry:
            gym.register(env_id, entry_point=f"cosmos3_robot.sim.tasks:{_CLASSES[task]}")


_register()
