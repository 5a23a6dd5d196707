#!/usr/bin/env bash
# A CI job step: a throwaway replica of production data from the latest
# staged snapshot, for integration tests, then torn down.
#
#   REPLSEED_SOURCE=mysql://replseed@db1:3306 REPLSEED_SOURCE_PASSWORD=PW \
#   REPLSEED_REPLICATION_PASSWORD=RPW REPLSEED_STAGE=s3://snapshots/db1 \
#     examples/ci-replica.sh -- ./run-my-tests.sh
#
# The replica runs on this CI machine (a replseed-sandbox MariaDB on
# REPLICA_PORT, default 3399), is loaded from the newest published snapshot
# (no load on production beyond replication), catches up, and is verified.
# The command after `--` runs with REPLICA_URL set; the replica is stopped
# afterwards whatever the outcome.
set -euo pipefail
: "${REPLSEED_SOURCE:?set REPLSEED_SOURCE=mysql://user:password@host:port}"
: "${REPLSEED_STAGE:?set REPLSEED_STAGE=s3://bucket/prefix (or a directory)}"
RS=${REPLSEED_BIN:-replseed}
SB=${REPLSEED_SANDBOX_BIN:-replseed-sandbox}
PORT=${REPLICA_PORT:-3399}
DIR=${REPLICA_DIR:-$(mktemp -d)}
export REPLSEED_NO_PROGRESS=1

cleanup() { "$SB" mariadb stop --dir "$DIR/replica" >/dev/null 2>&1 || true; }
trap cleanup EXIT

REPLICA_URL=$("$SB" mariadb start --dir "$DIR/replica" --port "$PORT" --server-id "${REPLICA_SERVER_ID:-$((1000 + RANDOM))}")
export REPLICA_URL
"$RS" provision --target "$REPLICA_URL" --snapshot latest --json
"$RS" verify --target "$REPLICA_URL"

if [ "${1:-}" = "--" ]; then
  shift
  "$@"
fi
