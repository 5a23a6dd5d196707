#!/usr/bin/env bash
# Nightly snapshot to S3 (or MinIO), keeping the newest N.
#
# crontab (02:30 every night; one JSON line per run lands in the log):
#   30 2 * * *  REPLSEED_SOURCE=mysql://replseed:PW@db1:3306 REPLSEED_STAGE=s3://snapshots/db1 \
#               AWS_ENDPOINT_URL=http://minio:9000 AWS_ALLOW_HTTP=true AWS_REGION=us-east-1 \
#               AWS_ACCESS_KEY_ID=... AWS_SECRET_ACCESS_KEY=... KEEP=7 \
#               /opt/replseed/examples/cron-nightly.sh >> /var/log/replseed-nightly.log 2>&1
#
# Try it here against the sandboxes (see examples/s3-minio.sh for a local S3 server):
#   REPLSEED_SOURCE=mysql://root@127.0.0.1:3307 REPLSEED_STAGE=s3://snapshots/db1 ... examples/cron-nightly.sh
#
# Exit status: 0 when the snapshot is published and old ones are pruned;
# non-zero otherwise (cron mails the output). A failed run publishes nothing.
set -euo pipefail
: "${REPLSEED_SOURCE:?set REPLSEED_SOURCE=mysql://user:password@host:port}"
: "${REPLSEED_STAGE:?set REPLSEED_STAGE=s3://bucket/prefix (or a directory)}"
KEEP=${KEEP:-7}
RS=${REPLSEED_BIN:-replseed}
export REPLSEED_NO_PROGRESS=1 REPLSEED_LOG_FORMAT=${REPLSEED_LOG_FORMAT:-json}

summary=$("$RS" extract --threads "${THREADS:-4}" --json)
echo "$summary"
"$RS" snapshots prune --keep "$KEEP" --json
