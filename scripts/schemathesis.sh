#!/usr/bin/env bash
# Fuzzes a real kvstore server with schemathesis (PyPI; pinned in tests/schemathesis/requirements.txt)
# driven by the server's own OpenAPI document, GET /v2/openapi.json. Every check runs: no 5xx, every
# status, media type, header and body as the document says, invalid input rejected and valid input
# accepted (tests/schemathesis/hooks.py: except an undefined `collection`), auth enforced where
# declared, 405 for undocumented methods, and the stateful phase chains calls through the links it
# infers (create a store, then read, write and delete it). Any finding fails the script.
#
# The run is bounded by the number of test cases (about 45 s on 2 cores with the defaults); the
# settings are in tests/schemathesis/schemathesis.toml (which store and keys to aim at) and below.
#
# Usage: scripts/schemathesis.sh
# Env:   KVSTORE_BIN                 use this server binary instead of `cargo build --bin kvstore`
#        PYTHON                      Python >= 3.10 to make the venv with (default python3)
#        SCHEMATHESIS_MAX_EXAMPLES   test cases per operation and phase (default 250)
#        SCHEMATHESIS_MAX_TIME       unset by default; seconds for a longer run: fuzzing and the
#                                    stateful phase then go on until it is spent
#        SCHEMATHESIS_SEED           default 1 (the same cases every run); `random` for a new one
#        SCHEMATHESIS_WORKERS        default 1; more needs CPython >= 3.11.8 (ast.parse in 3.11.7 and
#                                    older is not thread-safe and breaks schemathesis' coverage phase)
#        SCHEMATHESIS_TIMEOUT        seconds after which the run is stopped as hung (default: 600, or
#                                    SCHEMATHESIS_MAX_TIME + 300)
#        SCHEMATHESIS_ARGS           extra arguments for `schemathesis run` (split on spaces)
#
# The venv (tests/schemathesis/.venv, ignored) is reinstalled only when the requirements change. The
# server runs on a fresh temporary data directory, with the admin token known to the script; it is
# stopped on exit, and its log is printed if anything failed.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DIR="$ROOT/tests/schemathesis"
VENV="$DIR/.venv"
PYTHON="${PYTHON:-python3}"
MAX_TIME="${SCHEMATHESIS_MAX_TIME:-}"
MAX_EXAMPLES="${SCHEMATHESIS_MAX_EXAMPLES:-250}"
SEED="${SCHEMATHESIS_SEED:-1}"
WORKERS="${SCHEMATHESIS_WORKERS:-1}"

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

WORK="$(mktemp -d "${TMPDIR:-/tmp}/kvstore-schemathesis.XXXXXX")"
SERVER_PID=""
cleanup() {
    local rc=$?
    if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -TERM "$SERVER_PID" 2>/dev/null || true
        for _ in $(seq 1 50); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    if [[ $rc -ne 0 && -s "$WORK/server.err" ]]; then
        echo "---- last 40 lines of the server log ($WORK/server.err) ----"
        tail -n 40 "$WORK/server.err" || true
        echo "---- (kept in $WORK) ----"
    else
        rm -rf "$WORK"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---- schemathesis, in its own venv (only when the requirements change) --------------------------------------

start="$(now)"
"$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)' \
    || { echo "$PYTHON is older than 3.10; schemathesis 4 needs 3.10+" >&2; exit 1; }
want_hash="$(sha256sum < "$DIR/requirements.txt" | cut -d' ' -f1)-$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
have_hash=""
[[ -f "$VENV/.requirements.hash" ]] && have_hash="$(cat "$VENV/.requirements.hash")"
if [[ "$want_hash" == "$have_hash" && -x "$VENV/bin/schemathesis" ]]; then
    echo "==> schemathesis venv: up to date"
else
    echo "==> schemathesis venv: installing $(grep -m1 '^schemathesis==' "$DIR/requirements.txt")"
    rm -rf "$VENV"
    "$PYTHON" -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-input -r "$DIR/requirements.txt"
    echo "$want_hash" > "$VENV/.requirements.hash"
fi
echo "==> install: $(elapsed "$start")s"

# ---- the server -------------------------------------------------------------------------------------------

start="$(now)"
if [[ -n "${KVSTORE_BIN:-}" ]]; then
    BIN="$KVSTORE_BIN"
else
    (cd "$ROOT" && cargo build --bin kvstore)
    BIN="${CARGO_TARGET_DIR:-$ROOT/target}/debug/kvstore"
fi
[[ -x "$BIN" ]] || { echo "no server binary at $BIN" >&2; exit 1; }
echo "==> build: $(elapsed "$start")s"

TOKEN="kvs_schemathesis_$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
# Only the defaults: drop any KVSTORE_* variable that would change what the document describes.
env -u KVSTORE_PUBLIC_URL -u KVSTORE_DEFAULT_GENERAL_ACCESS -u KVSTORE_ALLOW_METHOD_OVERRIDE \
    -u KVSTORE_MAX_RECORD_BYTES -u KVSTORE_DATABASE_URL -u KVSTORE_LISTEN -u KVSTORE_DATA_DIR \
    KVSTORE_ADMIN_TOKEN="$TOKEN" \
    "$BIN" serve --listen 127.0.0.1:0 --data-dir "$WORK/data" >"$WORK/server.out" 2>"$WORK/server.err" &
SERVER_PID=$!
URL=""
for _ in $(seq 1 300); do
    if line="$(grep -m1 -o 'listening on http://127\.0\.0\.1:[0-9]\+' "$WORK/server.out" 2>/dev/null)"; then
        URL="${line#listening on }"
        break
    fi
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
        echo "the server exited before listening:" >&2
        cat "$WORK/server.out" "$WORK/server.err" >&2 || true
        exit 1
    fi
    sleep 0.1
done
[[ -n "$URL" ]] || { echo "the server did not print 'listening on http://127.0.0.1:PORT' within 30 s" >&2; exit 1; }
echo "==> server pid $SERVER_PID at $URL"

# The store that tests/schemathesis/schemathesis.toml aims the record operations at.
"$VENV/bin/python" - "$URL" "$TOKEN" <<'PY'
import json, sys, urllib.request
url, token = sys.argv[1], sys.argv[2]
def call(method, path, body, content_type="application/json"):
    request = urllib.request.Request(url + path, data=body, method=method, headers={
        "Authorization": "Bearer " + token, "Content-Type": content_type})
    with urllib.request.urlopen(request) as response:
        assert response.status in (200, 201), (method, path, response.status)
schema = {"actorKeyValueStoreSchemaVersion": 1, "collections": {
    "input": {"key": "INPUT", "contentTypes": ["application/json"]},
    "shots": {"keyPrefix": "shot-", "contentTypes": ["image/png"]}}}
call("POST", "/v2/key-value-stores?name=fuzz", json.dumps({"schema": schema}).encode())
call("PUT", "/v2/key-value-stores/~fuzz/records/INPUT", b'{"hello": "world"}')
call("PUT", "/v2/key-value-stores/~fuzz/records/shot-1", b"\x89PNG\r\n\x1a\n", "image/png")
call("PUT", "/v2/key-value-stores/~fuzz/records/OUTPUT", b"0123456789" * 100, "text/plain")
PY

# ---- the run ----------------------------------------------------------------------------------------------

run_args=(--max-examples "$MAX_EXAMPLES" --workers "$WORKERS")
[[ "$SEED" != random ]] && run_args+=(--seed "$SEED")
[[ -n "$MAX_TIME" ]] && run_args+=(--max-time "$MAX_TIME")
TIMEOUT="${SCHEMATHESIS_TIMEOUT:-$(( ${MAX_TIME:-300} + 300 ))}"
start="$(now)"
set +e
# shellcheck disable=SC2086  # SCHEMATHESIS_ARGS is meant to split
(cd "$WORK" && SCHEMATHESIS_HOOKS="$DIR/hooks.py" timeout "$TIMEOUT" "$VENV/bin/schemathesis" --no-color \
    --config-file "$DIR/schemathesis.toml" run "$URL/v2/openapi.json" \
    --header "Authorization: Bearer $TOKEN" \
    --checks all --exclude-checks positive_data_acceptance \
    "${run_args[@]}" --request-timeout 30 --generation-database none \
    ${SCHEMATHESIS_ARGS:-}) 2>&1 | tee "$WORK/schemathesis.log"
rc=${PIPESTATUS[0]}
set -e
echo "==> schemathesis: $(elapsed "$start")s"
if ! kill -0 "$SERVER_PID" 2>/dev/null; then
    echo "==> the server died during the run" >&2
    exit 1
fi
if grep -q 'panicked' "$WORK/server.err"; then
    echo "==> the server panicked during the run:" >&2
    grep -m5 -A3 'panicked' "$WORK/server.err" >&2
    exit 1
fi
# A crash inside schemathesis (a worker thread dying) skips operations without failing the run.
if grep -q '^Traceback (most recent call last)' "$WORK/schemathesis.log"; then
    echo "==> schemathesis crashed (see the traceback above): its run is incomplete" >&2
    exit 1
fi
if [[ $rc -eq 124 ]]; then
    echo "==> schemathesis did not finish within ${TIMEOUT}s" >&2
    exit 1
fi
if [[ $rc -ne 0 ]]; then
    echo "==> schemathesis FAILED (exit $rc)" >&2
    exit "$rc"
fi
echo "==> schemathesis passed"
