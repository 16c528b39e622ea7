#!/usr/bin/env bash
# Set up cosmos3-robot on a fresh machine: system packages, a virtual environment in .venv,
# and the Python packages. Idempotent: a second run checks and returns in seconds.
#
#   bash scripts/setup.sh            # everything (extras: all,dev)
#   EXTRAS=dev bash scripts/setup.sh # a lighter set (core + test tools)
#
# Environment: PYTHON (interpreter for the venv, default python3.11 or python3),
# VENV (default .venv), EXTRAS (default all,dev), SKIP_APT=1 to skip system packages.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VENV="${VENV:-.venv}"
EXTRAS="${EXTRAS:-all,dev}"
APT_PACKAGES=(libosmesa6 ffmpeg)   # headless MuJoCo on a CPU; LeRobot's default video decoder

log() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }

# ---- system packages ---------------------------------------------------------------------
if [[ "${SKIP_APT:-0}" != 1 ]]; then
  missing=()
  for p in "${APT_PACKAGES[@]}"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
  done
  if ((${#missing[@]})); then
    if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null; then
      log "installing system packages: ${missing[*]}"
      export DEBIAN_FRONTEND=noninteractive
      apt-get update -qq
      apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    else
      log "WARNING: missing system packages: ${missing[*]}"
      log "  install them with: sudo apt-get install -y ${missing[*]}"
      log "  (needed for headless MuJoCo rendering on a CPU and for video decoding; the rest works without)"
    fi
  fi
fi

# ---- virtual environment -------------------------------------------------------------------
if [[ -z "${PYTHON:-}" ]]; then
  if command -v python3.11 >/dev/null; then PYTHON=python3.11; else PYTHON=python3; fi
fi
if [[ ! -x "$VENV/bin/python" ]]; then
  "$PYTHON" -c 'import sys; assert (3, 10) <= sys.version_info[:2] <= (3, 12), sys.version' || {
    log "ERROR: Python 3.10-3.12 is required (3.11 recommended); set PYTHON=/path/to/python3.11"; exit 1; }
  log "creating virtual environment $VENV with $("$PYTHON" --version)"
  "$PYTHON" -m venv "$VENV"
fi
PY="$VENV/bin/python"

# ---- Python packages -----------------------------------------------------------------------
# Reinstall only when pyproject.toml or the extras change (a stamp records the last install).
stamp="$VENV/.cosmos3-robot-installed"
PLUGIN=plugins/lerobot_policy_cosmos3   # LeRobot policy plugin, installed with the lerobot extra
want="$(cat pyproject.toml "$PLUGIN/pyproject.toml" | sha256sum | cut -d' ' -f1) $EXTRAS openpi-client-0.1.2"
if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$want" ]] || ! "$PY" -c 'import cosmos3_robot' 2>/dev/null; then
  log "installing Python packages (extras: $EXTRAS); the first time takes several minutes"
  "$PY" -m pip install --quiet --upgrade "pip>=24" "setuptools>=69" wheel
  "$PY" -m pip install --quiet -e ".[$EXTRAS]"
  if [[ ",$EXTRAS," == *",lerobot,"* || ",$EXTRAS," == *",all,"* ]]; then
    # a second distribution: LeRobot discovers plugins by distribution name (lerobot_policy_*)
    "$PY" -m pip install --quiet --no-deps -e "$PLUGIN"
  fi
  # openpi's own websocket client, for the compatibility test: it declares numpy<2, so it is
  # installed without its dependencies (it uses websockets, msgpack and typing_extensions, ours)
  "$PY" -m pip install --quiet --no-deps "openpi-client==0.1.2"
  echo "$want" > "$stamp"
else
  log "Python packages up to date ($VENV)"
fi
log "ready: $("$PY" -c 'import cosmos3_robot, torch; print(f"cosmos3_robot {cosmos3_robot.__version__}, torch {torch.__version__}")')"
