#!/usr/bin/env bash
# The test suite: starts a throw-away PostgreSQL on loopback so the storage tests run on both backends.
set -euo pipefail
cd "$(dirname "$0")/.."
export SUMSWEEP_TEST_POSTGRES=${SUMSWEEP_TEST_POSTGRES:-$(bash scripts/start_test_postgres.sh)}
exec python3 -m pytest -q -n 2 "$@"
