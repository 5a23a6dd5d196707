# Throwaway MariaDB servers for the experiments in this directory (docs/design/provisioning-gtid.md).
# start NAME SERVER_ID [mariadbd options...]: a fresh durable server in $EXP/NAME, socket $EXP/NAME/s.
# q NAME SQL: run SQL there, tab-separated, no headers.
set -euo pipefail
EXP=${EXP:-/tmp/gtid-exp}
mkdir -p "$EXP"
start() {
  local n=$1 id=$2; shift 2
  local d=$EXP/$n
  stop "$n" 2>/dev/null || true
  rm -rf "$d"; mkdir -p "$d/data"
  mariadb-install-db --no-defaults --datadir="$d/data" --auth-root-authentication-method=normal \
    --skip-test-db >/dev/null 2>&1
  echo "$id $*" >"$d/opts"
  boot "$n"
}
boot() {
  local n=$1 d=$EXP/$1; local id; read -r id rest <"$d/opts"
  # shellcheck disable=SC2086
  mariadbd --no-defaults --datadir="$d/data" --socket="$d/s" --skip-networking=0 --port=$((${PORTBASE:-23400} + id)) \
    --bind-address=127.0.0.1 --pid-file="$d/pid" --log-error="$d/err.log" --server-id="$id" \
    --log-bin=bin --binlog-format=ROW --innodb-flush-log-at-trx-commit=1 --sync-binlog=1 \
    --innodb-buffer-pool-size=256M --relay-log=relay --relay-log-recovery=1 \
    --skip-slave-start --user=root $rest &
  for _ in $(seq 100); do [ -S "$d/s" ] && mariadb -uroot -S "$d/s" -e 'select 1' >/dev/null 2>&1 && return 0; sleep 0.2; done
  echo "server $n did not start: $(tail -5 "$d/err.log")" >&2; return 1
}
port() { q "$1" "select @@port"; }
q() { mariadb -uroot -S "$EXP/$1/s" -N -B -e "$2"; }
stop() { [ -f "$EXP/$1/pid" ] || return 0; local p; p=$(cat "$EXP/$1/pid"); kill "$p" 2>/dev/null || true
  while kill -0 "$p" 2>/dev/null; do sleep 0.1; done; rm -f "$EXP/$1/pid"; }
crash() { local p; p=$(cat "$EXP/$1/pid"); kill -9 "$p"; while kill -0 "$p" 2>/dev/null; do sleep 0.1; done; rm -f "$EXP/$1/pid" "$EXP/$1/s"; }
# replicate REPLICA MASTER [gtid_slave_pos]: CHANGE MASTER to MASTER with slave_pos, START SLAVE.
replicate() {
  q "$1" "STOP SLAVE; SET GLOBAL gtid_slave_pos='${3:-}'; CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT=$(port "$2"), MASTER_USER='root', MASTER_PASSWORD='', MASTER_USE_GTID=slave_pos, MASTER_CONNECT_RETRY=1; START SLAVE;"
}
wait_gtid() { local r; r=$(q "$1" "SELECT MASTER_GTID_WAIT('$2', ${3:-60})"); [ "$r" = 0 ] || { q "$1" "SHOW SLAVE STATUS\G" | grep -E 'Running|Error|Gtid' >&2; return 1; }; }
