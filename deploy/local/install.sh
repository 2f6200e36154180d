#!/usr/bin/env bash
# Creates (or updates) the project's virtual environment at .venv. Idempotent: a second run with
# unchanged pyproject.toml only checks. Usage: install.sh [--dev]
set -euo pipefail
cd "$(dirname "$0")/../.."
extras=""
[ "${1:-}" = "--dev" ] && extras="[dev]"
PYTHON=${OEMR_PYTHON:-python3}
if ! "$PYTHON" -c 'import sys; assert sys.version_info >= (3, 11)' 2>/dev/null; then
  echo "[install] oem-retention needs Python >= 3.11 (Debian 12 ships 3.11 as python3)" >&2
  exit 1
fi
if ! "$PYTHON" -m venv --help >/dev/null 2>&1 || ! "$PYTHON" -c 'import ensurepip' 2>/dev/null; then
  echo "[install] installing python3-venv from Debian" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
fi
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
stamp=".venv/.installed$(echo "$extras" | tr -d '[]')"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "[install] installing oem-retention$extras into .venv" >&2
  .venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip
  .venv/bin/python -m pip install -q --disable-pip-version-check -e ".$extras" \
    --config-settings editable_mode=compat
  touch "$stamp"
fi
