#!/usr/bin/env bash
# Instructions per request, counted by valgrind's callgrind: a figure that does not depend on what
# else the machine is doing (wrk's req/s and CPU times do), so it shows the cost of the request path
# even on a busy machine. Measures, in one run and the same way:
#   - the bare axum/hyper hello-world (examples/bench_hello.rs, the HTTP ceiling), GET of 1 KiB;
#   - kvstore on the embedded engine: GET of a 1 KiB record, and PUT of 1 KiB records (durable);
#   - optionally another kvstore binary (e.g. an older commit's) for comparison: --also BIN.
# Each server runs under callgrind; a Python client sends 300 warm-up requests, then the counters
# are zeroed and 2000 requests sent one after another on one keep-alive connection.
#
#   bench/callgrind.sh [--also /path/to/other/kvstore] [--no-build]
#
# Prints a Markdown table; bench/RESULTS.md keeps the runs by hand under "Instruction counts".
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ALSO=""
BUILD=1
while [ $# -gt 0 ]; do
    case "$1" in
        --also) ALSO="$2"; shift 2 ;;
        --no-build) BUILD=0; shift ;;
        *) echo "usage: bench/callgrind.sh [--also BIN] [--no-build]" >&2; exit 2 ;;
    esac
done
command -v valgrind >/dev/null || { echo "needs valgrind (apt-get install valgrind)" >&2; exit 1; }
if [ "$BUILD" = 1 ]; then
    (cd "$ROOT" && cargo build --release --bin kvstore --example bench_hello)
fi
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}/release"
N=2000
WORK="$(mktemp -d)"
trap 'pkill -f "callgrind-out-file=$WORK" 2>/dev/null || true; rm -rf "$WORK"' EXIT

cat >"$WORK/client.py" <<'PY'
import http.client, sys
port, n, method, path, token = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
c = http.client.HTTPConnection('127.0.0.1', port)
headers = {'Authorization': 'Bearer ' + token} if token != '-' else {}
body = b'x' * 1024
for i in range(n):
    if method == 'PUT':
        c.request('PUT', path % (i % 50), body=body, headers={**headers, 'Content-Type': 'application/octet-stream'})
    else:
        c.request('GET', path, headers=headers)
    r = c.getresponse(); r.read()
    assert r.status in (200, 201), r.status
PY

# count NAME PORT METHOD PATH TOKEN: instructions per request of the server under callgrind.
count() {
    local name=$1 port=$2 method=$3 path=$4 token=$5 pid f total
    python3 "$WORK/client.py" "$port" 300 "$method" "$path" "$token"
    pid=$(pgrep -f "callgrind-out-file=$WORK/$name")
    callgrind_control -z "$pid" >/dev/null 2>&1
    python3 "$WORK/client.py" "$port" "$N" "$method" "$path" "$token"
    callgrind_control -d "$pid" >/dev/null 2>&1
    sleep 1
    f=$(ls -t "$WORK/$name".* | head -1)
    total=$(grep -E '^(summary|totals):' "$f" | head -1 | awk '{print $2}')
    echo $((total / N))
}

start() { # NAME PORT CMD...
    local name=$1 port=$2
    shift 2
    valgrind --tool=callgrind --callgrind-out-file="$WORK/$name" "$@" >"$WORK/$name.log" 2>&1 &
    for _ in $(seq 1 120); do
        curl -s -o /dev/null "http://127.0.0.1:$port/" && return 0
        sleep 0.5
    done
    echo "$name did not start" >&2
    cat "$WORK/$name.log" >&2
    exit 1
}

start hello 18591 "$TARGET/examples/bench_hello" 127.0.0.1:18591
HELLO=$(count hello 18591 GET / -)
pkill -f "callgrind-out-file=$WORK/hello" || true

# kvstore BIN NAME PORT: prints "GET PUT" instructions per request.
kvstore() {
    local bin=$1 name=$2 port=$3 token id
    token=$("$bin" users create alice --data-dir "$WORK/$name-data" | tail -1)
    start "$name" "$port" "$bin" serve --listen "127.0.0.1:$port" --data-dir "$WORK/$name-data"
    id=$(curl -s -X POST -H "Authorization: Bearer $token" "http://127.0.0.1:$port/v2/key-value-stores?name=bench" |
        python3 -c 'import sys, json; print(json.load(sys.stdin)["data"]["id"])')
    head -c 1024 /dev/zero | curl -s -o /dev/null -X PUT -H "Authorization: Bearer $token" \
        --data-binary @- "http://127.0.0.1:$port/v2/key-value-stores/$id/records/k1"
    local get put
    get=$(count "$name" "$port" GET "/v2/key-value-stores/$id/records/k1" "$token")
    put=$(count "$name" "$port" PUT "/v2/key-value-stores/$id/records/k%d" "$token")
    pkill -f "callgrind-out-file=$WORK/$name" || true
    echo "$get $put"
}

read -r GET PUT < <(kvstore "$TARGET/kvstore" now 18592)
echo "| server | GET 1 KiB, instructions/request | ÷ bare hyper | PUT 1 KiB, instructions/request |"
echo "|---|---:|---:|---:|"
echo "| bare axum/hyper hello-world | $HELLO | 1.00× | — |"
awk -v g="$GET" -v p="$PUT" -v h="$HELLO" -v v="$(cd "$ROOT" && git rev-parse --short HEAD)" \
    'BEGIN { printf "| kvstore %s (embedded) | %d | %.2f× | %d |\n", v, g, g / h, p }'
if [ -n "$ALSO" ]; then
    read -r GET2 PUT2 < <(kvstore "$ALSO" also 18593)
    awk -v g="$GET2" -v p="$PUT2" -v h="$HELLO" -v b="$ALSO" \
        'BEGIN { printf "| %s | %d | %.2f× | %d |\n", b, g, g / h, p }'
fi
echo
echo "(valgrind --tool=callgrind, $N sequential keep-alive requests after 300 warm-up; user-space instructions only)"
