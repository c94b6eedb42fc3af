#!/usr/bin/env bash
# One-shot set-up on a fresh machine: a virtualenv with privgrid and its test tools.
# With --system-packages it also installs Debian's mosquitto (the tests' real broker);
# `privgrid run` itself works without it (embedded broker).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}

if [[ "${1:-}" == "--system-packages" ]] && ! command -v mosquitto >/dev/null 2>&1 \
    && ! [ -x /usr/sbin/mosquitto ]; then
  if [ "$(id -u)" -eq 0 ]; then
    echo "setup: installing Debian's mosquitto" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto >/dev/null
    # The package starts a system broker on port 1883; the tests start their own.
    (systemctl disable --now mosquitto || service mosquitto stop || true) >/dev/null 2>&1
  else
    echo "setup: mosquitto is missing; install it with: sudo apt-get install mosquitto" >&2
  fi
fi

if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
stamp="$VENV/.installed"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  "$VENV/bin/python" -m pip install -q --upgrade pip
  "$VENV/bin/python" -m pip install -q -e '.[test]'
  touch "$stamp"
fi
