#!/usr/bin/env bash
# Set up (idempotent) and run the main job: `cosmos3-robot demo` (record demonstrations in
# MuJoCo, train a small model, evaluate it closed loop, write a report under runs/demo/report).
# Extra arguments go to the demo, e.g. `bash scripts/demo.sh --quick` for a smoke run.
# MUJOCO_GL is left to cosmos3_robot.sim (EGL on an NVIDIA GPU, OSMesa on a CPU) unless set.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/setup.sh
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}"   # the demo makes its own data
exec .venv/bin/cosmos3-robot demo "$@"
