#!/usr/bin/env bash
# End-to-end tests of kvstore with the official Apify clients:
#   py3 - Python apify-client 3.x (tests/clients/python/requirements.txt, venv .venv)
#   py2 - Python apify-client 2.x (tests/clients/python/requirements-v2.txt, venv .venv-v2)
#   py1 - Python apify-client 1.12.x, still pinned by many Actors (requirements-v1.txt, venv .venv-v1)
#   js  - JavaScript apify-client 2.x (tests/clients/js, node --test)
#   sdk - the Apify SDK for Python running Actor code (tests/clients/sdk/requirements.txt, venv .venv)
#   cli - the Apify CLI, `apify login` and `apify kvs …` (tests/clients/cli, node --test)
#   crawlee - `kvstore import` / `export` round trips with crawlee-python and crawlee JS
#         (tests/clients/crawlee: pytest in venv .venv, and node --test)
#
# Usage: scripts/client-tests.sh [py3] [py2] [py1] [js] [sdk] [cli] [crawlee]      (default: all seven)
# Env:   KVSTORE_BIN      use this server binary instead of `cargo build --bin kvstore`
#        CLIENT_TESTS_DATABASE_URL  run the server on this (empty) PostgreSQL database instead of a
#                         fresh data directory
#        PYTHON           Python >= 3.10 to make the venvs with (default python3)
#        CLIENT_TESTS_ARGS extra arguments for pytest (e.g. "-k keys -x")
#
# The clients are installed into ignored folders and reinstalled only when their requirements / lock file change.
# The server runs on a fresh temporary data directory with users alice and bob, and carol for the CLI suite
# alone (its store listing starts empty); it is stopped on exit.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY_DIR="$ROOT/tests/clients/python"
JS_DIR="$ROOT/tests/clients/js"
SDK_DIR="$ROOT/tests/clients/sdk"
CLI_DIR="$ROOT/tests/clients/cli"
CRAWLEE_DIR="$ROOT/tests/clients/crawlee"
PYTHON="${PYTHON:-python3}"
SUITE_TIMEOUT="${SUITE_TIMEOUT:-900}"

SUITES=("$@")
[[ ${#SUITES[@]} -eq 0 ]] && SUITES=(py3 py2 py1 js sdk cli crawlee)
for s in "${SUITES[@]}"; do
    case "$s" in py3|py2|py1|js|sdk|cli|crawlee) ;; *) echo "unknown suite '$s' (use py3, py2, py1, js, sdk, cli, crawlee)" >&2; exit 2 ;; esac
done
want() { local s; for s in "${SUITES[@]}"; do [[ "$s" == "$1" ]] && return 0; done; return 1; }

STAGE_NAMES=()
STAGE_RESULTS=()
STAGE_TIMES=()
FAILED=0
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
record_stage() { # name result start
    local took
    took="$(elapsed "$3")"
    STAGE_NAMES+=("$1"); STAGE_RESULTS+=("$2"); STAGE_TIMES+=("$took")
    echo "==> $1: $2 (${took}s)"
}

WORK="$(mktemp -d "${TMPDIR:-/tmp}/kvstore-client-tests.XXXXXX")"
SERVER_PID=""
cleanup() {
    local rc=$?
    if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -TERM "$SERVER_PID" 2>/dev/null || true
        for _ in $(seq 1 50); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    if [[ $rc -ne 0 || $FAILED -ne 0 ]] && [[ -s "$WORK/server.err" ]]; then
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

# ---- install the clients (only what changed) ---------------------------------------------------------------

hash_of() { cat "$@" | sha256sum | cut -d' ' -f1; }

ensure_venv() { # venv requirements-file
    local venv="$1" req="$2" want_hash have_hash=""
    want_hash="$(hash_of "$req")-$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
    [[ -f "$venv/.requirements.hash" ]] && have_hash="$(cat "$venv/.requirements.hash")"
    if [[ "$want_hash" == "$have_hash" && -x "$venv/bin/python" ]]; then
        echo "    $(basename "$venv"): up to date"
        return 0
    fi
    echo "    $(basename "$venv"): installing $(tr '\n' ' ' < "$req")"
    rm -rf "$venv"
    "$PYTHON" -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input -r "$req"
    echo "$want_hash" > "$venv/.requirements.hash"
}

ensure_node_modules() { # package-dir
    local dir="$1" want_hash have_hash=""
    want_hash="$(hash_of "$dir/package.json" "$dir/package-lock.json")"
    [[ -f "$dir/node_modules/.lock.hash" ]] && have_hash="$(cat "$dir/node_modules/.lock.hash")"
    if [[ "$want_hash" == "$have_hash" ]]; then
        echo "    $(basename "$dir")/node_modules: up to date"
        return 0
    fi
    echo "    $(basename "$dir")/node_modules: npm ci"
    (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
    echo "$want_hash" > "$dir/node_modules/.lock.hash"
}

start="$(now)"
echo "==> installing clients"
if want py3 || want py2 || want sdk || want crawlee; then
    "$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)' \
        || { echo "$PYTHON is older than 3.10; apify-client 3 and the apify SDK need 3.10+" >&2; exit 1; }
fi
want py3 && ensure_venv "$PY_DIR/.venv" "$PY_DIR/requirements.txt"
want py2 && ensure_venv "$PY_DIR/.venv-v2" "$PY_DIR/requirements-v2.txt"
want py1 && ensure_venv "$PY_DIR/.venv-v1" "$PY_DIR/requirements-v1.txt"
want sdk && ensure_venv "$SDK_DIR/.venv" "$SDK_DIR/requirements.txt"
want js && ensure_node_modules "$JS_DIR"
want cli && ensure_node_modules "$CLI_DIR"
want crawlee && ensure_venv "$CRAWLEE_DIR/.venv" "$CRAWLEE_DIR/requirements.txt"
want crawlee && ensure_node_modules "$CRAWLEE_DIR"
record_stage "install clients" ok "$start"

# ---- the server -------------------------------------------------------------------------------------------

start="$(now)"
if [[ -n "${KVSTORE_BIN:-}" ]]; then
    BIN="$KVSTORE_BIN"
    echo "==> using KVSTORE_BIN=$BIN"
else
    echo "==> cargo build --bin kvstore"
    (cd "$ROOT" && cargo build --bin kvstore)
    BIN="${CARGO_TARGET_DIR:-$ROOT/target}/debug/kvstore"
fi
[[ -x "$BIN" ]] || { echo "no server binary at $BIN" >&2; exit 1; }
record_stage "build server" ok "$start"

start="$(now)"
DATA="$WORK/data"
mkdir -p "$DATA"
if [[ -n "${CLIENT_TESTS_DATABASE_URL:-}" ]]; then
    STORAGE_ARGS=(--database-url "$CLIENT_TESTS_DATABASE_URL")
    DATA="PostgreSQL"
else
    STORAGE_ARGS=(--data-dir "$DATA")
fi
create_user() { # name -> prints token (last line of stdout)
    local out
    out="$(env -u KVSTORE_DATABASE_URL "$BIN" users create "$1" "${STORAGE_ARGS[@]}")" \
        || { echo "users create $1 failed" >&2; return 1; }
    printf '%s\n' "$out" | tail -n 1 | tr -d '[:space:]'
}
ALICE_TOKEN="$(create_user alice)"
BOB_TOKEN="$(create_user bob)"
CAROL_TOKEN="$(create_user carol)"
[[ -n "$ALICE_TOKEN" && -n "$BOB_TOKEN" && -n "$CAROL_TOKEN" && "$ALICE_TOKEN" != "$BOB_TOKEN" ]] \
    || { echo "could not read the tokens printed by 'users create'" >&2; exit 1; }

# Settings the tests rely on are the defaults: drop any KVSTORE_* variable that would change them.
env -u KVSTORE_PUBLIC_URL -u KVSTORE_DEFAULT_GENERAL_ACCESS -u KVSTORE_ALLOW_METHOD_OVERRIDE \
    -u KVSTORE_MAX_RECORD_BYTES -u KVSTORE_DATABASE_URL \
    "$BIN" serve --listen 127.0.0.1:0 "${STORAGE_ARGS[@]}" >"$WORK/server.out" 2>"$WORK/server.err" &
SERVER_PID=$!
KVSTORE_URL=""
for _ in $(seq 1 300); do
    if line="$(grep -m1 -o 'listening on http://127\.0\.0\.1:[0-9]\+' "$WORK/server.out" 2>/dev/null)"; then
        KVSTORE_URL="${line#listening on }"
        break
    fi
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
        echo "the server exited before listening:" >&2
        cat "$WORK/server.out" "$WORK/server.err" >&2 || true
        exit 1
    fi
    sleep 0.1
done
[[ -n "$KVSTORE_URL" ]] || { echo "the server did not print 'listening on http://127.0.0.1:PORT' within 30 s" >&2; exit 1; }
echo "==> server pid $SERVER_PID at $KVSTORE_URL (data $DATA)"
record_stage "start server" ok "$start"

export KVSTORE_URL KVSTORE_USER=alice KVSTORE_TOKEN="$ALICE_TOKEN" KVSTORE_TOKEN2="$BOB_TOKEN"
export KVSTORE_USER3=carol KVSTORE_TOKEN3="$CAROL_TOKEN"

# ---- the suites -------------------------------------------------------------------------------------------

# The clients run with retries off (max_retries=0, maxRetries: 0) so that a 5xx or a dropped
# connection fails the test that met it. The SDK and the CLI keep their own retries; the server
# itself therefore counts its 5xx answers (GET /metrics), and a suite during which it gave any fails.
server_5xx() { # prints how many 5xx answers the server has given so far
    curl -sf --max-time 10 "$KVSTORE_URL/metrics" \
        | awk '/^kvstore_http_requests_total[{]/ && /status="5[0-9][0-9]"/ { n += $NF } END { printf "%d\n", n }'
}

run_suite() { # name command...   (against the shared server: its 5xx answers are counted)
    local name="$1" rc=0 before after
    shift
    local t0
    t0="$(now)"
    echo
    echo "==> $name"
    before="$(server_5xx)" || before=""
    timeout "$SUITE_TIMEOUT" "$@" || rc=$?
    after="$(server_5xx)" || after=""
    if [[ $rc -eq 0 && ( -z $before || -z $after ) ]]; then
        echo "!! could not read the server's 5xx count from $KVSTORE_URL/metrics" >&2
        rc=1
    elif [[ $rc -eq 0 && $after -ne $before ]]; then
        echo "!! the server answered $((after - before)) requests with 5xx during '$name' (see $WORK/server.err)" >&2
        rc=1
    fi
    if [[ $rc -eq 0 ]]; then
        record_stage "$name" passed "$t0"
    else
        FAILED=1
        record_stage "$name" "FAILED (exit $rc)" "$t0"
    fi
}

run_own_suite() { # name command...   (the suite runs servers of its own)
    local name="$1" rc=0
    shift
    local t0
    t0="$(now)"
    echo
    echo "==> $name"
    timeout "$SUITE_TIMEOUT" "$@" || rc=$?
    if [[ $rc -eq 0 ]]; then
        record_stage "$name" passed "$t0"
    else
        FAILED=1
        record_stage "$name" "FAILED (exit $rc)" "$t0"
    fi
}

# shellcheck disable=SC2086  # CLIENT_TESTS_ARGS is meant to split
if want py3; then
    run_suite "python apify-client 3.x" env EXPECT_CLIENT_MAJOR=3 "$PY_DIR/.venv/bin/python" -m pytest \
        -p no:cacheprovider -q -rfE "$PY_DIR/test_apify_client.py" ${CLIENT_TESTS_ARGS:-}
fi
# shellcheck disable=SC2086
if want py2; then
    run_suite "python apify-client 2.x" env EXPECT_CLIENT_MAJOR=2 "$PY_DIR/.venv-v2/bin/python" -m pytest \
        -p no:cacheprovider -q -rfE "$PY_DIR/test_apify_client.py" ${CLIENT_TESTS_ARGS:-}
fi
# shellcheck disable=SC2086
if want py1; then
    run_suite "python apify-client 1.12" "$PY_DIR/.venv-v1/bin/python" -m pytest \
        -p no:cacheprovider -q -rfE "$PY_DIR/test_apify_client_v1.py" ${CLIENT_TESTS_ARGS:-}
fi
if want js; then
    run_suite "js apify-client 2.x" bash -c 'cd "$1" && node --test --test-force-exit --test-reporter=spec' _ "$JS_DIR"
fi
# shellcheck disable=SC2086
if want sdk; then
    run_suite "python apify SDK" "$SDK_DIR/.venv/bin/python" -m pytest \
        -p no:cacheprovider -q -rfE "$SDK_DIR/test_apify_sdk.py" ${CLIENT_TESTS_ARGS:-}
fi
if want cli; then
    run_suite "apify-cli" bash -c 'cd "$1" && node --test --test-force-exit --test-reporter=spec' _ "$CLI_DIR"
fi

# The crawlee round trips run the binary on their own data directories (not the server above).
if want crawlee; then
    run_own_suite "crawlee-python round trip" env KVSTORE_BIN="$BIN" "$CRAWLEE_DIR/.venv/bin/python" -m pytest \
        -p no:cacheprovider -q -rfE "$CRAWLEE_DIR/test_crawlee_roundtrip.py"
    run_own_suite "crawlee JS round trip" env KVSTORE_BIN="$BIN" \
        bash -c 'cd "$1" && node --test --test-force-exit --test-reporter=spec' _ "$CRAWLEE_DIR"
fi

echo
echo "==> summary"
for i in "${!STAGE_NAMES[@]}"; do
    printf '    %-28s %-18s %7ss\n' "${STAGE_NAMES[$i]}" "${STAGE_RESULTS[$i]}" "${STAGE_TIMES[$i]}"
done
if [[ $FAILED -ne 0 ]]; then
    echo "==> client tests FAILED"
    exit 1
fi
echo "==> client tests passed"
