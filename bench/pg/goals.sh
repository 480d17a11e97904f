#!/usr/bin/env bash
# Issue 12's targets for the PostgreSQL backend in one run, each ratio against a reference measured
# minutes apart at most, then a summary table:
#
#   bench/pg/goals.sh KVSTORE_BINARY      (a release build; root, for two_nodes.sh's cgroups)
#
# - GET and durable PUT of 1 KiB against the prepared SELECT / upsert (hot1k.sh, 3 rounds each,
#   the node on the database's core as bench/run.sh pins it);
# - a key listing of 1000 against the prepared range SELECT (list_keys.sh), with the database alone
#   on its core (BENCH_NODE_CORE=1, as under pgbench) and with the node on the database's core,
#   alternated, twice each;
# - two nodes against one, each held to a quarter of a core (two_nodes.sh get, list and put, 2 rounds
#   each).
#
# The scripts' own output goes to standard error as it comes; the summary to standard output.
# About 6 minutes.
set -euo pipefail
DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
BIN=${1:-}
if [ ! -x "$BIN" ]; then
    echo "usage: $0 KVSTORE_BINARY" >&2
    exit 2
fi
LOG=$(mktemp -d)
trap 'rm -rf "$LOG"' EXIT

# run NAME COMMAND...: COMMAND's output to LOG/NAME and to standard error.
run() {
    local name=$1
    shift
    "$@" 2>&1 | tee "$LOG/$name" >&2
}
# range FILE…: the lowest and highest of the numbers in the files, "low–high×".
range() { sort -g "$@" | awk 'NR == 1 { lo = $1 } { hi = $1 } END { if (NR) printf "%.2f–%.2f×", lo, hi; else printf "?" }'; }
# hot NAME: the per-round ratios of hot1k.sh's output.
hot() { sed -n 's/.*tps; \([0-9.]*\)x$/\1/p' "$LOG/$1"; }
# listing NAME: each kvstore rate of list_keys.sh's output against each pgbench rate.
listing() {
    awk '/Requests\/sec:/ { for (i = 1; i <= NF; i++) if ($i == "Requests/sec:") k[n++] = $(i + 1) }
         /tps = / { for (i = 1; i <= NF; i++) if ($i == "=") p[m++] = $(i + 1) }
         END { for (i = 0; i < n; i++) for (j = 0; j < m; j++) printf "%.4f\n", k[i] / p[j] }' "$LOG/$1"
}
# pair NAME: two_nodes.sh's two ÷ one ratios.
pair() { sed -n 's/.*two ÷ one: \([0-9.]*\)x$/\1/p' "$LOG/$1"; }

echo "# $(date -u '+%F %T') UTC, bench/pg/goals.sh $BIN, load $(cut -d' ' -f1-3 /proc/loadavg)" >&2
run get "$DIR/hot1k.sh" get --rounds 3 "$BIN"
run put "$DIR/hot1k.sh" put --rounds 3 "$BIN"
for i in 1 2; do
    BENCH_NODE_CORE=1 run "list-own-$i" "$DIR/list_keys.sh" "$BIN"
    BENCH_NODE_CORE=0 run "list-shared-$i" "$DIR/list_keys.sh" "$BIN"
done
for mode in get list put; do
    run "nodes-$mode" "$DIR/two_nodes.sh" "$mode" --rounds 2 "$BIN"
done

echo "| target (bench/pg/goals.sh, $(date -u '+%F %H:%M') UTC) | goal | measured |"
echo "|---|---|---|"
echo "| GET 1 KiB ÷ prepared SELECT (hot1k.sh, node on the database's core) | ≥ 0.7× | $(hot get | range) |"
echo "| durable PUT 1 KiB ÷ prepared upsert (hot1k.sh, node on the database's core) | ≥ 0.7× | $(hot put | range) |"
echo "| list-keys 1000 ÷ prepared range SELECT, the database alone on its core | ≥ 0.7× | $(for i in 1 2; do listing "list-own-$i"; done | range) |"
echo "| list-keys 1000 ÷ prepared range SELECT, node on the database's core | ≥ 0.7× | $(for i in 1 2; do listing "list-shared-$i"; done | range) |"
for mode in get list put; do
    echo "| two nodes ÷ one node, $mode (each at a quarter core) | > 1× | $(pair "nodes-$mode" | range) |"
done
