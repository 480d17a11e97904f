# Shared by bench/memory.sh and bench/listing_after_overwrites.sh (sourced, not run).
#
# serve_1000_records BINARY NAME [SERVE_ARGS...]: a fresh `kvstore serve` on its own data directory,
# pinned to $SERVER_CPU, with one store NAME of 1000 records k0 … k999 of 1 KiB (PUT through HTTP).
# Sets pid, dir (holding `paths`, the records' paths, one a line), url, token and store; the caller
# kills the server and removes $dir (see stop_served).
serve_1000_records() {
    local bin=$1 name=$2
    shift 2
    dir=$(mktemp -d "/tmp/kvstore-$name.XXXXXX")
    taskset -c "$SERVER_CPU" "$bin" serve --listen 127.0.0.1:0 --data-dir "$dir/data" "$@" >"$dir/out" 2>&1 &
    pid=$!
    trap stop_served EXIT
    for _ in $(seq 300); do
        grep -q 'listening on' "$dir/out" && break
        sleep 0.1
    done
    url=$(grep -o 'listening on http://[0-9.:]*' "$dir/out" | cut -d' ' -f3)
    token=$(grep -oE '^kvs_[A-Za-z0-9_-]+' "$dir/out" | head -1)
    store=$(curl -sf -XPOST -H "Authorization: Bearer $token" "$url/v2/key-value-stores?name=$name" |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["data"]["id"])')
    for i in $(seq 0 999); do echo "/v2/key-value-stores/$store/records/k$i"; done >"$dir/paths"
    sed "s|^|url = \"$url|; s|\$|\"|" "$dir/paths" >"$dir/puts"
    head -c 1024 /dev/zero | tr '\0' x >"$dir/body"
    curl -sfS -Z --parallel-max 32 -XPUT -H "Authorization: Bearer $token" -H 'content-type: text/plain' \
        --data-binary @"$dir/body" -K "$dir/puts" -o /dev/null >/dev/null 2>&1
}

# Stops the server serve_1000_records started and removes its data directory.
stop_served() {
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    rm -rf "$dir"
    trap - EXIT
}
