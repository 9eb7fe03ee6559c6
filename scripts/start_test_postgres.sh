#!/usr/bin/env bash
# Starts a throw-away PostgreSQL on loopback for the storage tests and prints its URL.
# Usage: export SUMSWEEP_TEST_POSTGRES=$(scripts/start_test_postgres.sh)
set -euo pipefail
PORT=${PGPORT_TEST:-54329}
DATA=${PGDATA_TEST:-/tmp/sumsweep-pg}
bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
if [ -z "$bin" ] || [ ! -x "$bin/postgres" ]; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql) >&2
  bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
fi
id postgres >/dev/null 2>&1 || useradd --system postgres
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
if as_pg "$bin/pg_ctl" -D "$DATA" status >/dev/null 2>&1; then
  as_pg "$bin/pg_ctl" -D "$DATA" stop -m fast >/dev/null
fi
rm -rf "$DATA" && mkdir -p "$DATA" && chown postgres "$DATA" 2>/dev/null || true
as_pg "$bin/initdb" -D "$DATA" -A trust -U postgres >/dev/null
as_pg "$bin/pg_ctl" -D "$DATA" -l "$DATA/server.log" -w \
  -o "-p $PORT -k $DATA -c listen_addresses=127.0.0.1 -c fsync=off" start >/dev/null
"$bin/createdb" -h 127.0.0.1 -p "$PORT" -U postgres sumsweep_test
echo "postgresql://postgres@127.0.0.1:$PORT/sumsweep_test"
