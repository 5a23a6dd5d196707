#!/usr/bin/env bash
# Staging on S3-compatible storage (MinIO, Ceph, AWS S3).
#
# replseed reads the endpoint and credentials from the usual AWS variables:
#   AWS_ENDPOINT_URL=http://minio:9000   # omit for AWS S3
#   AWS_ALLOW_HTTP=true                   # plain http endpoints only
#   AWS_ACCESS_KEY_ID=...  AWS_SECRET_ACCESS_KEY=...  AWS_REGION=us-east-1
# and the stage is s3://bucket/prefix. Snapshots are published with a
# create-only put of their manifest (If-None-Match), which MinIO and AWS support.
#
# Without MinIO at hand, this script starts a local S3 server (s3s-fs) and
# two sandboxes, then extracts, lists, verifies and loads through it:
#   examples/s3-minio.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
RS=${REPLSEED_BIN:-$ROOT/target/release/replseed}
SB=${REPLSEED_SANDBOX_BIN:-$ROOT/target/release/replseed-sandbox}
DIR=${SANDBOX_DIR:-$ROOT/sandbox-s3}
S3_PORT=${S3_PORT:-9000}
if [ ! -x "$RS" ] || [ ! -x "$SB" ]; then
  cargo build --release --quiet -p replseed -p replseed-testkit
fi
mkdir -p "$DIR"
export REPLSEED_NO_PROGRESS=1

if [ -z "${AWS_ENDPOINT_URL:-}" ]; then
  "$SB" s3 --root "$DIR/s3" --port "$S3_PORT" --bucket snapshots 2>"$DIR/s3.log" &
  S3_PID=$!
  trap 'kill $S3_PID 2>/dev/null || true' EXIT
  export AWS_ENDPOINT_URL=http://127.0.0.1:$S3_PORT AWS_ALLOW_HTTP=true AWS_REGION=us-east-1 \
         AWS_ACCESS_KEY_ID=replseed-test AWS_SECRET_ACCESS_KEY=replseed-test-secret
  for _ in $(seq 50); do grep -q "S3 server at" "$DIR/s3.log" 2>/dev/null && break; sleep 0.1; done
fi
STAGE=${REPLSEED_STAGE:-s3://snapshots/demo}

MASTER=${REPLSEED_SOURCE:-}
REPLICA=${REPLSEED_TARGET:-}
if [ -z "$MASTER" ]; then
  "$SB" mariadb stop --dir "$DIR/master" 2>/dev/null || true
  "$SB" mariadb stop --dir "$DIR/replica" 2>/dev/null || true
  rm -rf "$DIR/master" "$DIR/replica"
  MASTER=$("$SB" mariadb start --dir "$DIR/master" --port "${MASTER_PORT:-3317}" --server-id 1)
  REPLICA=$("$SB" mariadb start --dir "$DIR/replica" --port "${REPLICA_PORT:-3318}" --server-id 2)
  mariadb -h127.0.0.1 -P"${MASTER_PORT:-3317}" -uroot < examples/sample.sql >/dev/null
fi

"$RS" extract --source "$MASTER" --stage "$STAGE" --snapshot "demo-$(date -u +%Y%m%dT%H%M%S)" --json
"$RS" snapshots list --stage "$STAGE"
"$RS" snapshots verify latest --stage "$STAGE"
"$RS" load --stage "$STAGE" --snapshot latest --target "$REPLICA" --json
"$RS" catchup --stage "$STAGE" --snapshot latest --source "$MASTER" --target "$REPLICA" --json
"$RS" verify --source "$MASTER" --target "$REPLICA"
