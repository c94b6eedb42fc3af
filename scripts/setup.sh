#!/usr/bin/env bash
# One-shot set-up on a fresh machine: a virtualenv with privgrid and its test tools.
# With --system-packages it also installs Debian's mosquitto (the tests' real broker),
# chromium (the dashboard's browser test drives it headless; nothing downloads a browser) and
# the multi-host test's iproute2, iptables and tcpdump; `privgrid run` itself needs none of
# them (embedded broker; the dashboard needs no browser on the machine that serves it).
# Needs Python ≥ 3.11 (pyproject.toml). Debian splits `python3 -m venv` into python3-venv;
# as root, setup installs it when creating the virtualenv fails. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}

is_root() { [ "$(id -u)" -eq 0 ]; }

apt_install() {
  echo "setup: installing Debian's $*" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

if ! command -v "$PYTHON" >/dev/null 2>&1; then
  echo "setup: $PYTHON not found; install Python 3.11 or newer (or set PYTHON=...)" >&2
  exit 1
fi
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "setup: privgrid needs Python ≥ 3.11, but $PYTHON is $("$PYTHON" -V 2>&1);" \
    "install a newer one and run again with PYTHON=python3.11 (or newer)" >&2
  exit 1
fi

# The tests' system tools, by the binary that proves each: Mosquitto (the real broker), and
# for the multi-host test (tests/test_multihost.py) iproute2, iptables and tcpdump.
has() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/sbin/$1" ]; }
if [[ "${1:-}" == "--system-packages" ]]; then
  missing=()
  has mosquitto || missing+=(mosquitto)
  has ip || missing+=(iproute2)
  has iptables || missing+=(iptables)
  has tcpdump || missing+=(tcpdump)
  if [ ${#missing[@]} -gt 0 ]; then
    if is_root; then
      apt_install "${missing[@]}"
      # The mosquitto package starts a system broker on port 1883; the tests start their own.
      (systemctl disable --now mosquitto || service mosquitto stop || true) >/dev/null 2>&1
    else
      echo "setup: missing ${missing[*]}; install with: sudo apt-get install ${missing[*]}" >&2
    fi
  fi
fi

if [[ "${1:-}" == "--system-packages" ]] && ! [ -x /usr/bin/chromium ]; then
  if is_root; then
    apt_install chromium
  else
    echo "setup: chromium is missing (the dashboard's browser test skips without it);" \
      "install it with: sudo apt-get install chromium" >&2
  fi
fi

# A virtualenv without pip is what a failed `python3 -m venv` leaves behind (ensurepip
# missing): create it again rather than trust it.
venv_ok() { [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -m pip --version >/dev/null 2>&1; }

if ! venv_ok; then
  log=$(mktemp)
  trap 'rm -f "$log"' EXIT
  if ! "$PYTHON" -m venv --clear "$VENV" >"$log" 2>&1; then
    version=$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
    if ! is_root || ! command -v apt-get >/dev/null 2>&1; then
      cat "$log" >&2
      echo "setup: '$PYTHON -m venv' failed; on Debian/Ubuntu install the venv module:" \
        "sudo apt-get install python$version-venv" >&2
      exit 1
    fi
    # python3-venv only matches the distribution's default python3; PYTHON may be another.
    echo "setup: '$PYTHON -m venv' failed; installing Debian's python$version-venv" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "python$version-venv" >/dev/null 2>&1 \
      || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
    if ! "$PYTHON" -m venv --clear "$VENV" >"$log" 2>&1; then
      cat "$log" >&2
      echo "setup: '$PYTHON -m venv' still fails after installing python$version-venv" >&2
      exit 1
    fi
  fi
fi
stamp="$VENV/.installed"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  "$VENV/bin/python" -m pip install -q --upgrade pip
  "$VENV/bin/python" -m pip install -q -e '.[test]'
  touch "$stamp"
fi
