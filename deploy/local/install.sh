#!/usr/bin/env bash
# Creates (or updates) the project's virtual environment at .venv from the lockfiles, so every
# machine runs the same versions: requirements.lock (the platform), or with --dev
# requirements-dev.lock (the platform, its tests and tools, the same versions of what they
# share), both with hashes (deploy/local/lock.sh writes them). Idempotent: a second run with
# unchanged lockfiles only checks. Usage: install.sh [--dev]
set -euo pipefail
cd "$(dirname "$0")/../.."
lock=requirements.lock
name=runtime
if [ "${1:-}" = "--dev" ]; then
  lock=requirements-dev.lock
  name=dev
fi
PYTHON=${OEMR_PYTHON:-python3}
if ! "$PYTHON" -c 'import sys; assert sys.version_info[:2] == (3, 11)' 2>/dev/null; then
  # The lockfiles are resolved for CPython 3.11, Debian 12's python3.
  echo "[install] oem-retention's lockfiles are for Python 3.11 (Debian 12's python3);" \
       "set OEMR_PYTHON to a 3.11 interpreter" >&2
  exit 1
fi
if ! "$PYTHON" -m venv --help >/dev/null 2>&1 || ! "$PYTHON" -c 'import ensurepip' 2>/dev/null; then
  echo "[install] installing python3-venv from Debian" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
fi
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
stamp=".venv/.installed-$name"
if [ ! -f "$stamp" ] || [ "$lock" -nt "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "[install] installing oem-retention ($name set, $lock) into .venv" >&2
  pip=(.venv/bin/python -m pip -q --disable-pip-version-check)
  # Exactly the locked versions, each checked against its hash; nothing resolved here.
  "${pip[@]}" install --require-hashes --no-deps -r "$lock"
  # Built with the locked setuptools, not one fetched into an isolated build environment.
  "${pip[@]}" install --no-deps --no-build-isolation -e . --config-settings editable_mode=compat
  touch "$stamp"
fi
