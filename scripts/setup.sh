#!/usr/bin/env bash
# Set up cosmos3-robot on a fresh machine: system packages, a virtual environment in .venv,
# and the Python packages. Idempotent: a second run checks and returns in seconds.
#
#   bash scripts/setup.sh            # everything (extras: all,dev)
#   EXTRAS=dev bash scripts/setup.sh # a lighter set (core + test tools)
#
# Environment: PYTHON (a Python 3.12 for the venv; found by itself otherwise),
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
# Python 3.12 (LeRobot 0.5+ needs it): $PYTHON, else python3.12 / python3 on PATH when they run
# 3.12, else pyenv's versions folder (where a pyenv shim on PATH may not resolve).
WANT_PY=3.12
is_wanted() { "$1" -c "import sys; sys.exit(sys.version_info[:2] != tuple(map(int, '$WANT_PY'.split('.'))))" 2>/dev/null; }
find_python() {
  local c
  for c in python$WANT_PY python3; do
    if command -v "$c" >/dev/null && is_wanted "$c"; then command -v "$c"; return 0; fi
  done
  local root; root="$(pyenv root 2>/dev/null || echo "${PYENV_ROOT:-$HOME/.pyenv}")"
  for c in "$root"/versions/$WANT_PY*/bin/python$WANT_PY; do
    if [[ -x "$c" ]] && is_wanted "$c"; then echo "$c"; return 0; fi
  done
  return 1
}
if [[ -z "${PYTHON:-}" ]]; then
  PYTHON="$(find_python)" || {
    log "ERROR: Python $WANT_PY was not found (looked for python$WANT_PY and python3 on PATH, then pyenv's versions)."
    log "  install it: sudo apt-get install python$WANT_PY python$WANT_PY-venv  (Debian 13 / Ubuntu 24.04),"
    log "  or: pyenv install $WANT_PY  ; or point PYTHON=/path/to/python$WANT_PY at one"
    exit 1; }
fi
is_wanted "$PYTHON" || { log "ERROR: PYTHON=$PYTHON is not Python $WANT_PY"; exit 1; }
if [[ -x "$VENV/bin/python" ]] && ! is_wanted "$VENV/bin/python"; then
  log "$VENV has $("$VENV/bin/python" --version 2>&1); the project needs Python $WANT_PY: recreating it"
  rm -rf "$VENV"
fi
if [[ ! -x "$VENV/bin/python" ]]; then
  log "creating virtual environment $VENV with $("$PYTHON" --version)"
  "$PYTHON" -m venv "$VENV"
fi
PY="$VENV/bin/python"

# ---- Python packages -----------------------------------------------------------------------
# Reinstall only when pyproject.toml or the extras change (a stamp records the last install).
stamp="$VENV/.cosmos3-robot-installed"
PLUGIN=plugins/lerobot_policy_cosmos3   # LeRobot policy plugin, installed with the lerobot extra
ENV_PLUGIN=plugins/lerobot_env_cosmos3_sim   # the built-in tasks as a LeRobot env plugin
want="$(cat pyproject.toml "$PLUGIN/pyproject.toml" "$ENV_PLUGIN/pyproject.toml" | sha256sum | cut -d' ' -f1) $EXTRAS openpi-client-0.1.2"
if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$want" ]] || ! "$PY" -c 'import cosmos3_robot' 2>/dev/null; then
  log "installing Python packages (extras: $EXTRAS); the first time takes several minutes"
  "$PY" -m pip install --quiet --upgrade "pip>=24" "setuptools>=69" wheel
  "$PY" -m pip install --quiet -e ".[$EXTRAS]"
  if [[ ",$EXTRAS," == *",lerobot,"* || ",$EXTRAS," == *",all,"* ]]; then
    # two more distributions: LeRobot discovers plugins by distribution name (lerobot_policy_*, lerobot_env_*)
    "$PY" -m pip install --quiet --no-deps -e "$PLUGIN" -e "$ENV_PLUGIN"
  fi
  # openpi's own websocket client, for the compatibility test: it declares numpy<2, so it is
  # installed without its dependencies (it uses websockets, msgpack and typing_extensions, ours)
  "$PY" -m pip install --quiet --no-deps "openpi-client==0.1.2"
  echo "$want" > "$stamp"
else
  log "Python packages up to date ($VENV)"
fi
log "ready: $("$PY" -c 'import cosmos3_robot, torch; print(f"cosmos3_robot {cosmos3_robot.__version__}, torch {torch.__version__}")')"
