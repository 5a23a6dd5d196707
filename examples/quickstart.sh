#!/usr/bin/env bash
# replseed quickstart: a master and an empty replica on local ports, a sample
# shop database, then one `replseed provision` with local-disk staging, and a
# `replseed verify` that compares the two.
#
#   examples/quickstart.sh            # from a fresh checkout; installs what is missing
#   examples/quickstart.sh --stop     # stop the sandbox servers afterwards
#
# Settings (environment): SANDBOX_DIR (default ./sandbox), MASTER_PORT (3307),
# REPLICA_PORT (3308), REPLSEED_BIN / REPLSEED_SANDBOX_BIN (prebuilt binaries).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
SANDBOX=${SANDBOX_DIR:-$ROOT/sandbox}
MASTER_PORT=${MASTER_PORT:-3307}
REPLICA_PORT=${REPLICA_PORT:-3308}

if [ "${1:-}" = "--stop" ]; then
  SB=${REPLSEED_SANDBOX_BIN:-$ROOT/target/release/replseed-sandbox}
  "$SB" mariadb stop --dir "$SANDBOX/master" || true
  "$SB" mariadb stop --dir "$SANDBOX/replica" || true
  exit 0
fi

step() { printf '\n== %s\n' "$*" >&2; }

step "1/6 installing what is missing (MariaDB from the distribution)"
ci/install-deps.sh

if [ -z "${REPLSEED_BIN:-}" ]; then
  step "2/6 building replseed (release; the first build takes about 10 minutes)"
  cargo build --release --quiet -p replseed -p replseed-testkit
  REPLSEED_BIN=$ROOT/target/release/replseed
  REPLSEED_SANDBOX_BIN=$ROOT/target/release/replseed-sandbox
else
  step "2/6 using $REPLSEED_BIN"
fi
RS=$REPLSEED_BIN
SB=${REPLSEED_SANDBOX_BIN:-$ROOT/target/release/replseed-sandbox}

step "3/6 starting a master on 127.0.0.1:$MASTER_PORT and an empty replica on 127.0.0.1:$REPLICA_PORT (in $SANDBOX)"
"$SB" mariadb stop --dir "$SANDBOX/master" 2>/dev/null || true
"$SB" mariadb stop --dir "$SANDBOX/replica" 2>/dev/null || true
rm -rf "$SANDBOX"
mkdir -p "$SANDBOX"
MASTER=$("$SB" mariadb start --dir "$SANDBOX/master" --port "$MASTER_PORT" --server-id 1)
REPLICA=$("$SB" mariadb start --dir "$SANDBOX/replica" --port "$REPLICA_PORT" --server-id 2)

step "4/6 loading the sample shop database into the master"
mariadb -h127.0.0.1 -P"$MASTER_PORT" -uroot < examples/sample.sql >/dev/null
mariadb -h127.0.0.1 -P"$MASTER_PORT" -uroot -e \
  "SELECT table_name, table_rows FROM information_schema.tables WHERE table_schema='shop'" >&2

step "5/6 replseed provision: extract -> stage ($SANDBOX/stage) -> load -> catch up"
"$RS" provision --source "$MASTER" --target "$REPLICA" --stage "$SANDBOX/stage" --threads 2 --json > "$SANDBOX/provision.json"
cat "$SANDBOX/provision.json" >&2

step "6/6 a change on the master replicates; replseed verify compares master and replica"
mariadb -h127.0.0.1 -P"$MASTER_PORT" -uroot -e \
  "INSERT INTO shop.orders VALUES (999999, 1, CURDATE(), '10:00:00', 42.00, 'new', 'placed after provisioning')"
"$RS" verify --source "$MASTER" --target "$REPLICA"

cat >&2 <<MSG

Done: $REPLICA is a replica of $MASTER, provisioned from snapshot
$(sed -n 's/.*"snapshot":"\([^"]*\)".*/\1/p' "$SANDBOX/provision.json") staged in $SANDBOX/stage.

Look around:
  mariadb -h127.0.0.1 -P$REPLICA_PORT -uroot -e 'SHOW SLAVE STATUS\G'
  $RS snapshots list --stage $SANDBOX/stage
  $RS snapshots show latest --stage $SANDBOX/stage
Stop the sandboxes:
  examples/quickstart.sh --stop

With real servers:
  1. On the master: binlog_format=ROW, log_bin on, a user for replseed and one for the replicas:
       GRANT SELECT, RELOAD, BINLOG MONITOR, SHOW VIEW, TRIGGER, EVENT ON *.* TO 'replseed'@'%';
       GRANT REPLICATION SLAVE ON *.* TO 'repl'@'%';
  2. On each new replica: its own server_id, local_infile=1, and a user with
       GRANT ALL ON *.* (it creates the databases and runs CHANGE MASTER).
  3. Passwords from the environment (or files, or a --defaults-file group per role),
     never on the command line:
       export REPLSEED_SOURCE_PASSWORD=... REPLSEED_TARGET_PASSWORD=... REPLSEED_REPLICATION_PASSWORD=...
       replseed provision --source mysql://replseed@master:3306 --replication-user repl \\
         --target mysql://admin@replica1:3306 --target mysql://admin@replica2:3306 \\
         --stage s3://bucket/prefix          # AWS_* variables for S3 or MinIO
  See examples/cron-nightly.sh and examples/ci-replica.sh for jobs.
MSG
