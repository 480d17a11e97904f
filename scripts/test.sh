#!/usr/bin/env bash
# Runs every test suite of kvstore: unit tests, the HTTP integration tests and the storage
# conformance suite (on the embedded engine, then the HTTP suites again on the in-memory backend),
# and the end-to-end tests with the official apify-client packages (Python v3 and v2, JS).
# The clients are installed into ignored folders under tests/clients/.
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

stage "cargo test (embedded engine)" cargo test --all-targets
stage "HTTP suites on the in-memory backend" \
  env KVSTORE_TEST_BACKEND=memory cargo test --test stores --test keys --test records --test access
stage "official clients (apify-client for Python v3/v2 and JS)" scripts/client-tests.sh
