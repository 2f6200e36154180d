#!/usr/bin/env bash
# Regenerates the lockfiles from pyproject.toml: requirements-dev.lock (the platform and its dev
# tools) and requirements.lock (the platform alone, at the same versions), both with hashes, for
# CPython 3.11 (Debian 12's). install.sh installs from them; run this after changing a
# dependency in pyproject.toml, and commit both files. Needs PyPI. Extra arguments go to
# pip-compile (e.g. --upgrade-package numpy).
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON=${OEMR_PYTHON:-python3}
tools=.venv-lock
[ -x "$tools/bin/pip-compile" ] || {
  "$PYTHON" -m venv "$tools"
  "$tools/bin/pip" install -q --disable-pip-version-check 'pip-tools==7.*'
}
compile=("$tools/bin/pip-compile" -q --generate-hashes --strip-extras --allow-unsafe
         --no-emit-find-links --no-emit-index-url)
# The build backend too: install.sh builds the editable install without build isolation, so
# nothing is fetched unpinned.
project=(--build-deps-for editable)
export CUSTOM_COMPILE_COMMAND="bash deploy/local/lock.sh"
"${compile[@]}" "${project[@]}" --extra dev -o requirements-dev.lock "$@" pyproject.toml
# The runtime set pinned to the versions the dev set chose, so `run.sh` and `test.sh` install
# the same versions of every package they share.
pins=$(mktemp)
trap 'rm -f "$pins"' EXIT
grep -E '^[A-Za-z0-9_.-]+==' requirements-dev.lock | sed 's/ \\$//' > "$pins"
"${compile[@]}" "${project[@]}" -c "$pins" -o requirements.lock pyproject.toml
sed -i "\#-c $pins#d" requirements.lock
# The third-party Sparkplug edge node of the interop test runs in a venv of its own
# (pysparkplug pins paho-mqtt < 2): locked too.
echo "pysparkplug==0.6.1" > "$pins"
"${compile[@]}" -o tests/integration/spb_edge_node.lock "$pins"
sed -i "s#-r $pins#the interop test#" tests/integration/spb_edge_node.lock
echo "[lock] wrote requirements.lock ($(grep -c '==' requirements.lock) packages) and requirements-dev.lock ($(grep -c '==' requirements-dev.lock))"
