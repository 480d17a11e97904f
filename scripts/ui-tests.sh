#!/usr/bin/env bash
# End-to-end test of the storage browser (GET /) in headless Chromium: Debian's `chromium` package,
# driven by playwright-core (tests/ui, node --test). Screenshots of every step go to
# target/ui-screenshots/ (ignored).
#
# Usage: scripts/ui-tests.sh
# Env:   KVSTORE_BIN     use this server binary instead of `cargo build --bin kvstore`
#        CHROMIUM_PATH   the browser (default /usr/bin/chromium; installed with apt-get when missing)
#        SCREENSHOT_DIR  where the screenshots go (default target/ui-screenshots)
#        UI_TEST_TIMEOUT seconds the test may take (default 300)
#
# playwright-core is installed into the ignored tests/ui/node_modules, again only when package.json or
# package-lock.json change; it downloads no browser. The server runs on a fresh temporary data directory
# on 127.0.0.1 with a free port and one user, alice; it is stopped on exit.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
UI_DIR="$ROOT/tests/ui"
CHROMIUM_PATH="${CHROMIUM_PATH:-/usr/bin/chromium}"
SCREENSHOT_DIR="${SCREENSHOT_DIR:-${CARGO_TARGET_DIR:-$ROOT/target}/ui-screenshots}"
UI_TEST_TIMEOUT="${UI_TEST_TIMEOUT:-300}"

STAGE_NAMES=()
STAGE_RESULTS=()
STAGE_TIMES=()
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
record_stage() { # name result start
    local took
    took="$(elapsed "$3")"
    STAGE_NAMES+=("$1"); STAGE_RESULTS+=("$2"); STAGE_TIMES+=("$took")
    echo "==> $1: $2 (${took}s)"
}
summary() {
    local i
    echo "==> summary"
    for i in "${!STAGE_NAMES[@]}"; do
        printf '    %-28s %-18s %7ss\n' "${STAGE_NAMES[$i]}" "${STAGE_RESULTS[$i]}" "${STAGE_TIMES[$i]}"
    done
}

WORK="$(mktemp -d "${TMPDIR:-/tmp}/kvstore-ui-tests.XXXXXX")"
SERVER_PID=""
FAILED=0
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

# ---- Chromium and playwright-core --------------------------------------------------------------------------

start="$(now)"
echo "==> installing the browser and playwright-core"
if [[ ! -x "$CHROMIUM_PATH" ]]; then
    [[ "$CHROMIUM_PATH" == /usr/bin/chromium ]] \
        || { echo "CHROMIUM_PATH=$CHROMIUM_PATH does not exist" >&2; exit 1; }
    SUDO=()
    if [[ $(id -u) -ne 0 ]]; then
        command -v sudo >/dev/null \
            || { echo "/usr/bin/chromium is missing; installing it (apt-get install chromium) needs root" >&2; exit 1; }
        SUDO=(sudo)
    fi
    echo "    apt-get install -y chromium"
    if ! "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; then
        echo "    the install failed; apt-get update and try again"
        "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
        "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium
    fi
fi
# Debian's launcher script prints a harmless shell warning on --version; keep only the version line.
echo "    $("$CHROMIUM_PATH" --version 2>/dev/null | grep -m1 -i chrom || echo "chromium at $CHROMIUM_PATH")"

node -e 'process.exit(Number(process.versions.node.split(".")[0]) >= 20 ? 0 : 1)' \
    || { echo "Node.js 20 or newer is needed (found $(node --version 2>/dev/null || echo none))" >&2; exit 1; }
want_hash="$(cat "$UI_DIR/package.json" "$UI_DIR/package-lock.json" | sha256sum | cut -d' ' -f1)"
have_hash=""
[[ -f "$UI_DIR/node_modules/.lock.hash" ]] && have_hash="$(cat "$UI_DIR/node_modules/.lock.hash")"
if [[ "$want_hash" == "$have_hash" ]]; then
    echo "    ui/node_modules: up to date"
else
    echo "    ui/node_modules: npm ci"
    # playwright-core ships no browser and downloads none.
    (cd "$UI_DIR" && npm ci --no-audit --no-fund --loglevel=error)
    echo "$want_hash" > "$UI_DIR/node_modules/.lock.hash"
fi
record_stage "install" ok "$start"

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
TOKEN="$(env -u KVSTORE_DATABASE_URL "$BIN" users create alice --data-dir "$DATA" | tail -n 1 | tr -d '[:space:]')"
[[ -n "$TOKEN" ]] || { echo "could not read the token printed by 'users create'" >&2; exit 1; }
# The test relies on the defaults: drop any KVSTORE_* variable that would change them (the public URL
# must be this server's own, on 127.0.0.1).
env -u KVSTORE_PUBLIC_URL -u KVSTORE_DEFAULT_GENERAL_ACCESS -u KVSTORE_ALLOW_METHOD_OVERRIDE \
    -u KVSTORE_MAX_RECORD_BYTES -u KVSTORE_DATABASE_URL -u KVSTORE_CORS_ORIGINS \
    "$BIN" serve --listen 127.0.0.1:0 --data-dir "$DATA" >"$WORK/server.out" 2>"$WORK/server.err" &
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
echo "==> server pid $SERVER_PID at $KVSTORE_URL"
record_stage "start server" ok "$start"

# ---- the test ---------------------------------------------------------------------------------------------

start="$(now)"
echo
echo "==> storage browser in headless Chromium (screenshots: $SCREENSHOT_DIR)"
rc=0
(
    cd "$UI_DIR"
    export KVSTORE_URL KVSTORE_TOKEN="$TOKEN" CHROMIUM_PATH SCREENSHOT_DIR
    timeout "$UI_TEST_TIMEOUT" node --test --test-force-exit --test-reporter=spec test.mjs
) || rc=$?
if [[ $rc -eq 0 ]]; then
    record_stage "storage browser" passed "$start"
else
    FAILED=1
    record_stage "storage browser" "FAILED (exit $rc)" "$start"
fi
echo "    screenshots: $(find "$SCREENSHOT_DIR" -name '*.png' 2>/dev/null | wc -l) in $SCREENSHOT_DIR"

echo
summary
if [[ $FAILED -ne 0 ]]; then
    echo "==> UI tests FAILED"
    exit 1
fi
echo "==> UI tests passed"
