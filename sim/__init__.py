"""Simulation: built-in MuJoCo tasks, robosuite and LIBERO adapters, the closed-loop evaluator.

Imports as ``cosmos3_robot.sim`` (package-dir mapping in ``pyproject.toml``).
"""
