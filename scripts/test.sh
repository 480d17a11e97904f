#!/usr/bin/env bash
# Runs every test suite of kvstore: unit tests, the HTTP integration tests and the storage
# conformance suite (on the embedded engine, then the HTTP suites again on the in-memory backend
# and on PostgreSQL), schemathesis fuzzing a live server against its own OpenAPI document
# (scripts/schemathesis.sh), and the end-to-end tests with the official apify-client packages
# (Python v3 and v2, JS), the Apify SDK for Python and the Apify CLI. The clients and schemathesis
# are installed into ignored folders under tests/.
#
# PostgreSQL: KVSTORE_TEST_DATABASE_URL (default postgres://postgres@127.0.0.1:5432/test); every
# test creates and drops a database of its own there. Without a reachable server those suites are
# skipped with a message, except under CI=true, where they must run.
set -euo pipefail
cd "$(dirname "$0")/.."

stage() {
  local name=$1
  shift
  local start=$SECONDS
  echo "==> ${name}"
  "$@"
  echo "==> ${name}: done in $((SECONDS - start))s"
}

pg_url=${KVSTORE_TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}
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

stage "cargo test (embedded engine; conformance on every backend)" cargo test --all-targets
stage "HTTP suites on the in-memory backend" \
  env KVSTORE_TEST_BACKEND=memory cargo test --test stores --test keys --test records --test access --test caching --test backup --test admin --test access_matrix
if [[ $have_pg == 1 ]]; then
  stage "HTTP suites on PostgreSQL" \
    env KVSTORE_TEST_BACKEND=postgres cargo test --test stores --test keys --test records --test access --test caching --test backup --test admin --test access_matrix
else
  echo "!! SKIPPED: HTTP suites on PostgreSQL (no database at ${pg_host}:${pg_port})"
fi
stage "schemathesis against the OpenAPI document (GET /v2/openapi.json)" scripts/schemathesis.sh
# The storage browser (GET /) end to end in headless Chromium (Debian's chromium, apt-installed if missing).
stage "storage browser in headless Chromium" scripts/ui-tests.sh
stage "official clients (apify-client Python v3/v2 and JS, Apify SDK, Apify CLI, Crawlee round trips)" \
  scripts/client-tests.sh
if [[ $have_pg == 1 ]] && command -v psql >/dev/null; then
  client_db="kvstore_clients_$$"
  psql "$pg_url" -qc "CREATE DATABASE ${client_db}"
  trap 'psql "$pg_url" -qc "DROP DATABASE IF EXISTS ${client_db} WITH (FORCE)" >/dev/null 2>&1 || true' EXIT
  stage "official clients on PostgreSQL" \
    env CLIENT_TESTS_DATABASE_URL="${pg_url%/*}/${client_db}" scripts/client-tests.sh py3 py2 js sdk cli
elif [[ ${CI:-} == true ]]; then
  echo "CI=true needs psql to run the client tests on PostgreSQL." >&2
  exit 1
else
  echo "!! SKIPPED: official clients on PostgreSQL (no database or no psql)"
fi
