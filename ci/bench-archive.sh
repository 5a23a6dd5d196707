#!/usr/bin/env bash
# Benchmark of the binlog archive (issue 10): on this machine, in one run,
#   * the master's write rate under sysbench oltp_write_only,
#   * `replseed archive --until-current` throughput on that binlog,
#   * the archive's size against the master's binlogs,
#   * catch-up of a loaded replica from the archive (master purged) against
#     native replication from the master, on the same transactions.
# Not part of CI. Prints a Markdown section; --write replaces the
# "Binlog archive" section of docs/BENCHMARKS.md with it.
#
#   ci/bench-archive.sh [--seconds 30] [--threads 2] [--rows 100000] [--repeat 3] [--write]
#
# Each catch-up is repeated --repeat times on a fresh replica and the median
# is reported (native ones first, then the master purges, then the archive's).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
SECONDS_=30 THREADS=2 ROWS=100000 WRITE=0 REPEAT=3
while [ $# -gt 0 ]; do
  case "$1" in
    --seconds) SECONDS_=$2; shift 2 ;;
    --threads) THREADS=$2; shift 2 ;;
    --rows) ROWS=$2; shift 2 ;;
    --write) WRITE=1; shift ;;
    --repeat) REPEAT=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done

ci/install-deps.sh bench
cargo build --release --quiet -p replseed -p replseed-testkit
RS=$ROOT/target/release/replseed
SB=$ROOT/target/release/replseed-sandbox
WORK=${BENCH_DIR:-$ROOT/target/bench-archive}
MPORT=3420 APORT=3421 BPORT=3422
MASTER=mysql://root@127.0.0.1:$MPORT
export REPLSEED_NO_PROGRESS=1
mdb() { mariadb -h127.0.0.1 -uroot "$@"; }
now() { date +%s.%N; }
since() { echo "$(now) - $1" | bc -l | xargs printf '%.2f'; }
cleanup() { for d in master ra rb; do "$SB" mariadb stop --dir "$WORK/$d" >/dev/null 2>&1 || true; done; }
trap cleanup EXIT
cleanup
rm -rf "$WORK"; mkdir -p "$WORK"
start() { "$SB" mariadb start --dir "$WORK/$1" --port "$2" --server-id "$3" --buffer-pool-mb 1024 >/dev/null; }

start master $MPORT 1
mdb -P$MPORT -e "CREATE DATABASE sbtest"
SYSB=(--db-driver=mysql --mysql-host=127.0.0.1 --mysql-port=$MPORT --mysql-user=root --mysql-db=sbtest --tables=4 --table-size="$ROWS")
sysbench oltp_write_only "${SYSB[@]}" prepare >/dev/null
STAGE=$WORK/stage
"$RS" extract --source $MASTER --stage "$STAGE" --snapshot base --no-accounts >/dev/null 2>&1
seqno() { mdb -P$MPORT -N -e "SELECT @@gtid_binlog_pos" | awk -F- '{print $3}'; }
binlog_bytes() { mdb -P$MPORT -N -e "SHOW BINARY LOGS" | awk '{s+=$2} END {print s}'; }
S0=$(seqno) B0=$(binlog_bytes)

echo "== master: sysbench oltp_write_only, $THREADS threads, $SECONDS_ s" >&2
T=$(now)
sysbench oltp_write_only "${SYSB[@]}" --threads="$THREADS" --time="$SECONDS_" run >/dev/null
MASTER_S=$(since "$T")
TRX=$(( $(seqno) - S0 ))
BINLOG=$(( $(binlog_bytes) - B0 ))

echo "== archive --until-current" >&2
AJ=$("$RS" archive --source $MASTER --stage "$STAGE" --until-current --json 2>/dev/null)
j() { echo "$AJ" | python3 -c "import json,sys; print(json.load(sys.stdin)['$1'])"; }
A_S=$(j elapsed_s) A_TRX=$(j transactions) A_EV=$(j events) A_RAW=$(j bytes_raw) A_STORED=$(j bytes_stored)

median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
fresh() {  # fresh NAME PORT ID: an empty replica with the snapshot loaded
  "$SB" mariadb stop --dir "$WORK/$1" >/dev/null 2>&1 || true
  rm -rf "${WORK:?}/$1"
  start "$1" "$2" "$3"
  "$RS" load --stage "$STAGE" --snapshot base --target "mysql://root@127.0.0.1:$2" --no-accounts >/dev/null 2>&1
}
elapsed() { python3 -c "import json,sys; print(json.load(sys.stdin)['elapsed_s'])"; }

echo "== native catch-up from the master (x$REPEAT)" >&2
NS=()
for _ in $(seq 1 "$REPEAT"); do
  fresh ra $APORT 2
  NS+=("$("$RS" catchup --stage "$STAGE" --snapshot base --source $MASTER --target mysql://root@127.0.0.1:$APORT --json 2>/dev/null | elapsed)")
  "$SB" mariadb stop --dir "$WORK/ra" >/dev/null   # its dump thread would keep the binlogs
done
N_S=$(median "${NS[@]}")

echo "== catch-up from the archive, master purged (x$REPEAT)" >&2
mdb -P$MPORT -e "FLUSH BINARY LOGS"
sleep 1
mdb -P$MPORT -e "PURGE BINARY LOGS BEFORE NOW() + INTERVAL 1 DAY"
[ "$(mdb -P$MPORT -N -e 'SHOW BINARY LOGS' | wc -l)" = 1 ] || { echo "the master kept binlogs" >&2; exit 1; }
XS=()
for _ in $(seq 1 "$REPEAT"); do
  fresh rb $BPORT 3
  XJ=$("$RS" catchup --stage "$STAGE" --snapshot base --source $MASTER --target mysql://root@127.0.0.1:$BPORT --json 2>"$WORK/archive-catchup.log")
  grep -q "replicating from the binlog archive" "$WORK/archive-catchup.log" || { echo "the catch-up did not use the archive" >&2; exit 1; }
  XS+=("$(echo "$XJ" | elapsed)")
  APPLY=$(grep -o 'handing over to the master.*secs="[0-9.]*"' "$WORK/archive-catchup.log" | grep -o '[0-9.]*"$' | tr -d '"')
  for t in 1 2 3 4; do
    a=$(mdb -P$MPORT -N -e "CHECKSUM TABLE sbtest.sbtest$t" | cut -f2)
    b=$(mdb -P$BPORT -N -e "CHECKSUM TABLE sbtest.sbtest$t" | cut -f2)
    [ "$a" = "$b" ] || { echo "sbtest$t differs after the archive catch-up" >&2; exit 1; }
  done
done
X_S=$(median "${XS[@]}")

rate() { echo "$1 / $2" | bc -l | xargs printf '%.0f'; }
mib() { echo "$1 / 1048576" | bc -l | xargs printf '%.1f'; }
SECTION=$(cat <<MD
## Binlog archive

Generated by \`ci/bench-archive.sh --seconds $SECONDS_ --threads $THREADS --rows $ROWS\` on $(date -u +%Y-%m-%d).
A snapshot of 4 sysbench tables of $ROWS rows, then \`sysbench oltp_write_only\` on the master for
$SECONDS_ s with $THREADS threads; master and replicas are sandboxes on this machine (relaxed durability,
\`slave_parallel_threads=0\`).

| what | time (s) | rate | size |
|---|---:|---:|---:|
| master writing (sysbench) | $(printf '%.1f' "$MASTER_S") | $(rate "$TRX" "$MASTER_S") trx/s | $(mib "$BINLOG") MiB of binlog |
| \`replseed archive --until-current\` | $(printf '%.1f' "$A_S") | $(rate "$A_TRX" "$A_S") trx/s, $(rate "$A_EV" "$A_S") events/s, $(echo "$A_RAW / 1048576 / $A_S" | bc -l | xargs printf '%.1f') MiB/s | $(mib "$A_RAW") MiB raw, $(mib "$A_STORED") MiB stored (zstd 3) |
| catch-up from the master (native replication) | $(printf '%.1f' "$N_S") | $(rate "$TRX" "$N_S") trx/s | median of $REPEAT (runs: ${NS[*]}) |
| catch-up from the archive (\`replseed serve\`, master purged) | $(printf '%.1f' "$X_S") | $(rate "$TRX" "$X_S") trx/s | median of $REPEAT (runs: ${XS[*]}); applying the archive alone: $APPLY s in the last run |

$TRX transactions. Catch-up times are \`replseed catchup\`'s own (\`elapsed_s\`: configuring the replica,
replicating, handing over); the archive's includes serving the segments and switching the replica to the
master at the end. Archive/native: $(echo "$X_S / $N_S" | bc -l | xargs printf '%.2f')x the time.
MD
)
echo "$SECTION"
if [ "$WRITE" = 1 ]; then
  python3 - "$SECTION" <<'PY'
import re, sys
p = "docs/BENCHMARKS.md"
s = open(p).read()
sec = sys.argv[1].rstrip() + "\n"
s = re.sub(r"\n## Binlog archive\n.*?(?=\n## |\Z)", "\n", s, flags=re.S).rstrip() + "\n\n" + sec
open(p, "w").write(s)
PY
fi
