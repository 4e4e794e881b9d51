#!/usr/bin/env bash
# voxclust quick start. Creates .venv (Python 3.11) when it is missing or out of date, then:
#   ./quickstart.sh demo [ARGS]   generate a demo scan batch, voxelize it into a local store, print a summary
#   ./quickstart.sh test [ARGS]   ruff, mypy and the pytest suite (what CI runs); installs chromium when root
set -euo pipefail
cd "$(dirname "$0")"

PY=${PYTHON:-python3.11}
VENV=.venv
STAMP=$VENV/.voxclust-installed

want=$(cat pyproject.toml constraints.txt | sha256sum | cut -d' ' -f1)
if [ ! -x "$VENV/bin/python" ] || [ "$(cat "$STAMP" 2>/dev/null)" != "$want" ]; then
  command -v "$PY" >/dev/null || { echo "voxclust needs $PY on PATH (set PYTHON=... to choose another 3.11)" >&2; exit 1; }
  echo "setting up $VENV (one time, a few minutes)..." >&2
  [ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
  # pip's own chatter goes to a log, shown only when the install fails
  log=$VENV/install.log
  if ! { "$VENV/bin/python" -m pip install -q --upgrade pip && \
         "$VENV/bin/python" -m pip install -q -c constraints.txt -e ".[dev]"; } > "$log" 2>&1; then
    cat "$log" >&2
    echo "setting up $VENV failed (the log above is in $log)" >&2
    exit 1
  fi
  echo "$want" > "$STAMP"
fi

# Offline-safe Prefect defaults (ephemeral API unless PREFECT_API_URL is set).
export PREFECT_SERVER_ANALYTICS_ENABLED=${PREFECT_SERVER_ANALYTICS_ENABLED:-false}
export DO_NOT_TRACK=${DO_NOT_TRACK:-1}
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS=${PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS:-120}

cmd=${1:-demo}
shift || true
case "$cmd" in
  demo)
    exec "$VENV/bin/voxclust" demo "$@"
    ;;
  test)
    # The UI check of tests/ops/test_operate.py drives Debian's chromium headless (skipped where it can't be had).
    if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
      echo "installing chromium for the UI test (one time)..." >&2
      (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null 2>&1 \
        || echo "could not install chromium: the UI check will be skipped" >&2
    fi
    # The study-database tests start a throwaway PostgreSQL from Debian's package (skipped where it can't be had).
    if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
      echo "installing postgresql for the study-database tests (one time)..." >&2
      (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql) >/dev/null 2>&1 \
        || echo "could not install postgresql: those tests will be skipped" >&2
    fi
    "$VENV/bin/ruff" check .
    "$VENV/bin/mypy"
    exec "$VENV/bin/python" -m pytest "$@"
    ;;
  *)
    echo "usage: ./quickstart.sh demo|test [ARGS]" >&2
    exit 2
    ;;
esac
