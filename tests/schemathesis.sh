#!/usr/bin/env bash
# Fuzzes the real server against its own OpenAPI document with schemathesis (from PyPI): no
# request may get a 5xx, and every answer's status, content type, headers and body must be the
# ones the document declares. Usage: tests/schemathesis.sh [path/to/keyledger]
set -euo pipefail
bin=${1:-target/debug/keyledger}
version=4.32.5
if ! command -v st >/dev/null 2>&1 || ! st --version 2>/dev/null | grep -q "$version"; then
    python3 -m pip install -q --disable-pip-version-check "schemathesis==$version"
fi

dir=$(mktemp -d)
token="fuzz-$(date +%s%N)"
# Cheap hashing: the fuzzer creates many users; the hashing parameters are not under test here.
KEYLEDGER_ADMIN_TOKEN=$token KEYLEDGER_ARGON2_M_COST=1024 KEYLEDGER_ARGON2_T_COST=1 \
    "$bin" serve --listen 127.0.0.1:0 --database "sqlite://$dir/kl.db" >"$dir/out" 2>"$dir/err" &
server=$!
trap 'kill $server 2>/dev/null; rm -rf "$dir"' EXIT
for _ in $(seq 1 100); do
    base=$(sed -n 's/^keyledger listening on //p' "$dir/out")
    [ -n "$base" ] && break
    sleep 0.1
done
[ -n "$base" ] || { echo "schemathesis: the server did not start"; cat "$dir/err"; exit 1; }

# The SSE feed never ends by design (the e2e tests cover its answers), so it is not fuzzed.
st run "$base/openapi.json" --url "$base" \
    --exclude-path /api/v1/events/stream \
    -H "Authorization: Bearer $token" \
    --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,response_headers_conformance \
    --max-examples 40 --workers 2 --seed 1 --no-color
