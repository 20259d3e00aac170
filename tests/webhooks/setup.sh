#!/usr/bin/env bash
# Creates the Python environment of the test webhook receiver (a venv with the `standardwebhooks`
# package from PyPI) once, under the cargo target directory. Prints the interpreter's path.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="${CARGO_TARGET_DIR:-$here/../../target}/webhook-receiver-venv"
stamp="$venv/.requirements"
if [ ! -x "$venv/bin/python" ] || ! cmp -s "$here/requirements.txt" "$stamp"; then
    python3 -m venv "$venv" >&2
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$here/requirements.txt" >&2
    cp "$here/requirements.txt" "$stamp"
fi
echo "$venv/bin/python"
