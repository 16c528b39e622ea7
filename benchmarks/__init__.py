"""Reproducible measurements, each a script that prints a table (``cosmos3-robot bench NAME``
runs them as ``python -m cosmos3_robot.benchmarks.<module>``; from a checkout,
``python benchmarks/<module>.py`` does the same)."""
