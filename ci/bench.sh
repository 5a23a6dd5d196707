#!/usr/bin/env bash
# Benchmark: replseed against mariadb-dump, mydumper/myloader and
# mariadb-backup, on this machine, in one run, into fresh empty replicas.
# Not part of CI. Writes docs/BENCHMARKS.md (results, machine, commands;
# docs/bench-notes.md is appended as the analysis).
#
#   ci/bench.sh [--tables 8] [--rows 500000] [--threads 2] [--big-rows 2000000] [--repeat 3] [--skip TOOL,...]
#               [--durable] [--out FILE]
#
# --durable: both servers as production replicas run (innodb_flush_log_at_trx_commit=1,
# sync_binlog=1). --out: write the report there instead of docs/BENCHMARKS.md.
#
# mydumper+myloader and the replseed runs are repeated --repeat times and the
# median is reported (single runs on a 2-core machine vary by +-10%).
#
# TOOL: dump (mariadb-dump), mydumper, mydumper-c (compressed), replseed,
# provision, backup (mariadb-backup), lowerbound (SELECT INTO OUTFILE +
# LOAD DATA INFILE, secondary index after), big (peak RSS on one table
# --big-rows long, to show memory does not grow with table size).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

TABLES=8 ROWS=500000 THREADS=2 BIG_ROWS=2000000 SKIP="" REPEAT=3 DURABLE="" OUT=docs/BENCHMARKS.md
while [ $# -gt 0 ]; do
  case "$1" in
    --tables) TABLES=$2; shift 2 ;;
    --rows) ROWS=$2; shift 2 ;;
    --threads) THREADS=$2; shift 2 ;;
    --big-rows) BIG_ROWS=$2; shift 2 ;;
    --skip) SKIP=$2; shift 2 ;;
    --repeat) REPEAT=$2; shift 2 ;;
    --durable) DURABLE=--durable; shift ;;
    --out) OUT=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
skipped() { [[ ",$SKIP," == *",$1,"* ]]; }

ci/install-deps.sh bench
cargo build --release --quiet -p replseed -p replseed-testkit
RS=$ROOT/target/release/replseed
SB=$ROOT/target/release/replseed-sandbox
WORK=${BENCH_DIR:-$ROOT/target/bench}
MPORT=3410 RPORT=3411
BP=2048   # InnoDB buffer pool (MiB) of both servers, the same for every tool
REDO=96M  # innodb_log_file_size: MariaDB's default (the sandboxes use 32M for tests)
MASTER=mysql://root@127.0.0.1:$MPORT
REPLICA=mysql://root@127.0.0.1:$RPORT
export REPLSEED_NO_PROGRESS=1

cleanup() {
  "$SB" mariadb stop --dir "$WORK/master" >/dev/null 2>&1 || true
  "$SB" mariadb stop --dir "$WORK/replica" >/dev/null 2>&1 || true
}
trap cleanup EXIT
cleanup
rm -rf "$WORK"
mkdir -p "$WORK"

now() { date +%s.%N; }
since() { echo "$(now) - $1" | bc -l | xargs printf '%.1f'; }
mdb() { mariadb -h127.0.0.1 -uroot "$@"; }

fresh_replica() {
  "$SB" mariadb stop --dir "$WORK/replica" >/dev/null 2>&1 || true
  rm -rf "$WORK/replica"
  "$SB" mariadb start --dir "$WORK/replica" --port $RPORT --server-id 2 --buffer-pool-mb $BP --opt=--innodb-log-file-size=$REDO $DURABLE >/dev/null
}

check_replica() {   # the same tables, with the same row counts and checksums as the master's
  local want got
  want=$(mdb -P$MPORT -N -e "SELECT GROUP_CONCAT(TABLE_NAME ORDER BY TABLE_NAME) FROM information_schema.TABLES WHERE TABLE_SCHEMA='sbtest'")
  got=$(mdb -P$RPORT -N -e "SELECT GROUP_CONCAT(TABLE_NAME ORDER BY TABLE_NAME) FROM information_schema.TABLES WHERE TABLE_SCHEMA='sbtest'" 2>/dev/null || true)
  [ "$want" = "$got" ] || { echo "replica tables differ after $1: $got" >&2; exit 1; }
  for i in $(seq 1 "$TABLES"); do
    local a b
    a=$(mdb -P$MPORT -N -e "SELECT COUNT(*) FROM sbtest.sbtest$i; CHECKSUM TABLE sbtest.sbtest$i" | cut -f2 | tr '\n' ' ')
    b=$(mdb -P$RPORT -N -e "SELECT COUNT(*) FROM sbtest.sbtest$i; CHECKSUM TABLE sbtest.sbtest$i" | cut -f2 | tr '\n' ' ')
    [ "$a" = "$b" ] || { echo "sbtest$i differs after $1 (rows, checksum: master $a, replica $b)" >&2; exit 1; }
  done
}

RESULTS=()
SEP=$'\x1f'  # field separator of RESULTS (not whitespace: empty fields stay)
record() { RESULTS+=("$1$SEP$2$SEP$3$SEP$4$SEP$5$SEP${6:-}"); echo ">> $1: $2 s (bytes ${3:--}, rss ${4:--}, cpu ${6:--}) $5" >&2; }

# CPU seconds (user + system) a server has used so far, by its port.
srv_cpu() {
  local pid
  pid=$(pgrep -f -- "mariadbd .*--port=$1( |$)" | head -1)
  [ -n "$pid" ] || { echo 0; return; }
  awk -v hz="$(getconf CLK_TCK)" '{printf "%.2f", ($14 + $15) / hz}' "/proc/$pid/stat"
}
# Runs CMD... under /usr/bin/time with FORMAT (which must end in "%U %S"),
# into FILE; sets CPUS to the CPU seconds of the tool, the master and the
# replica meanwhile, "tool master replica": the profile of where the time
# goes, run by run. The command's output goes to stdout.
cpu_timed() {  # cpu_timed FILE FORMAT CMD...
  local m0 r0 u s
  m0=$(srv_cpu $MPORT) r0=$(srv_cpu $RPORT)
  /usr/bin/time -f "$2" -o "$1" "${@:3}"
  read -r u s <<< "$(awk '{print $(NF-1), $NF}' "$1")"
  CPUS="$(echo "$u + $s" | bc -l) $(echo "$(srv_cpu $MPORT) - $m0" | bc -l) $(echo "$(srv_cpu $RPORT) - $r0" | bc -l)"
}
# Adds up "tool master replica" triples.
cpu_add() { echo "$1 $2" | awk '{printf "%.1f %.1f %.1f", $1 + $4, $2 + $5, $3 + $6}'; }
# The median of each part of a list of triples, as "tool / master / replica".
cpu_median() {
  local i out=()
  for i in 1 2 3; do out+=("$(printf '%s\n' "$@" | awk -v i=$i '{print $i}' | sort -g | awk '{a[NR]=$1} END {printf "%.1f", a[int((NR+1)/2)]}')"); done
  echo "${out[0]} / ${out[1]} / ${out[2]}"
}

echo "== master with $TABLES x $ROWS sysbench rows" >&2
"$SB" mariadb start --dir "$WORK/master" --port $MPORT --server-id 1 --buffer-pool-mb $BP --opt=--innodb-log-file-size=$REDO $DURABLE >/dev/null
mdb -P$MPORT -e "CREATE DATABASE sbtest"
T=$(now)
sysbench oltp_read_write --db-driver=mysql --mysql-host=127.0.0.1 --mysql-port=$MPORT --mysql-user=root \
  --mysql-db=sbtest --tables="$TABLES" --table-size="$ROWS" --threads="$THREADS" prepare >/dev/null
echo "prepared in $(since "$T") s" >&2
INNODB_MB=$(mdb -P$MPORT -N -e "SELECT ROUND(SUM(DATA_LENGTH+INDEX_LENGTH)/1048576) FROM information_schema.TABLES WHERE TABLE_SCHEMA='sbtest'")

if ! skipped dump; then
  fresh_replica
  T=$(now)
  mariadb-dump -h127.0.0.1 -P$MPORT -uroot --single-transaction --master-data=2 --gtid --databases sbtest \
    | mariadb -h127.0.0.1 -P$RPORT -uroot --init-command="SET sql_log_bin=0"
  record "mariadb-dump &#124; mariadb" "$(since "$T")" "" "" "one stream"
  check_replica mariadb-dump
fi

median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

MYD_S=""
if ! skipped mydumper; then
  TOT=() DS=() LS_=() MCPU=()
  for _ in $(seq 1 "$REPEAT"); do
    fresh_replica
    rm -rf "$WORK/mydumper"
    T=$(now)
    cpu_timed "$WORK/mydumper.cpu" "%U %S" mydumper -h 127.0.0.1 -P $MPORT -u root -B sbtest -t "$THREADS" -r 100000 -o "$WORK/mydumper"
    D=$(since "$T") DCPU=$CPUS
    T=$(now)
    cpu_timed "$WORK/myloader.cpu" "%U %S" myloader -h 127.0.0.1 -P $RPORT -u root -d "$WORK/mydumper" -t "$THREADS"
    L=$(since "$T")
    check_replica myloader
    TOT+=("$(echo "$D + $L" | bc -l)") DS+=("$D") LS_+=("$L")
    MCPU+=("$(cpu_add "$DCPU" "$CPUS")")
  done
  MYD_S=$(median "${TOT[@]}")
  record "mydumper + myloader (uncompressed)" "$MYD_S" "$(du -sb "$WORK/mydumper" | cut -f1)" "" "median of $REPEAT: dump $(median "${DS[@]}") s + load $(median "${LS_[@]}") s (runs: ${TOT[*]})" "$(cpu_median "${MCPU[@]}")"
fi

if ! skipped mydumper-c; then
  fresh_replica
  rm -rf "$WORK/mydumper-c"
  T=$(now)
  mydumper -h 127.0.0.1 -P $MPORT -u root -B sbtest -t "$THREADS" -r 100000 -c -o "$WORK/mydumper-c"
  D=$(since "$T")
  T=$(now)
  myloader -h 127.0.0.1 -P $RPORT -u root -d "$WORK/mydumper-c" -t "$THREADS"
  L=$(since "$T")
  record "mydumper -c + myloader (compressed)" "$(echo "$D + $L" | bc -l)" "$(du -sb "$WORK/mydumper-c" | cut -f1)" "" "dump $D s + load $L s"
  check_replica "myloader -c"
fi

timed() {  # timed NAME CMD... : wall seconds (SECS), peak RSS in KiB (RSS) and CPU (CPUS) of one command
  cpu_timed "$WORK/$1.time" "%e %M %U %S" "${@:2}" > "$WORK/$1.out"
  read -r SECS RSS _ < "$WORK/$1.time"
}

if ! skipped replseed; then
  ES_=() LS_=() TOT=() ERSS=0 LRSS=0 ECPU=() LCPU=() TCPU=()
  for _ in $(seq 1 "$REPEAT"); do
    fresh_replica
    rm -rf "$WORK/stage"
    timed extract "$RS" extract --source $MASTER --stage "$WORK/stage" --snapshot bench --threads "$THREADS" --json
    ES_+=("$SECS"); (( RSS > ERSS )) && ERSS=$RSS; ECPU+=("$CPUS")
    BYTES=$(du -sb "$WORK/stage" | cut -f1)
    timed load "$RS" load --stage "$WORK/stage" --snapshot bench --target $REPLICA --threads "$THREADS" --json
    LS_+=("$SECS"); (( RSS > LRSS )) && LRSS=$RSS; LCPU+=("$CPUS"); TCPU+=("$(cpu_add "${ECPU[-1]}" "$CPUS")")
    TOT+=("$(echo "${ES_[-1]} + $SECS" | bc -l)")
    check_replica "replseed load"
  done
  record "replseed extract" "$(median "${ES_[@]}")" "$BYTES" "$ERSS" "zstd Parquet; median of $REPEAT (runs: ${ES_[*]})" "$(cpu_median "${ECPU[@]}")"
  record "replseed load" "$(median "${LS_[@]}")" "" "$LRSS" "median of $REPEAT (runs: ${LS_[*]})" "$(cpu_median "${LCPU[@]}")"
  record "replseed extract, then load" "$(median "${TOT[@]}")" "$BYTES" "" "median of $REPEAT" "$(cpu_median "${TCPU[@]}")"
fi

if ! skipped provision; then
  PS_=() PRSS=0 PCPU=()
  for _ in $(seq 1 "$REPEAT"); do
    fresh_replica
    rm -rf "$WORK/stage-p"
    timed provision "$RS" provision --source $MASTER --target $REPLICA --stage "$WORK/stage-p" --threads "$THREADS" --json
    PS_+=("$SECS"); (( RSS > PRSS )) && PRSS=$RSS; PCPU+=("$CPUS")
    check_replica "replseed provision"
  done
  record "replseed provision (end to end)" "$(median "${PS_[@]}")" "$(du -sb "$WORK/stage-p" | cut -f1)" "$PRSS" "extract, load while extracting, catch up: replicating at the end; median of $REPEAT (runs: ${PS_[*]})" "$(cpu_median "${PCPU[@]}")"
fi

if ! skipped backup; then
  rm -rf "$WORK/backup"
  T=$(now)
  mariadb-backup --backup --host=127.0.0.1 --port=$MPORT --user=root --target-dir="$WORK/backup" --parallel="$THREADS" 2>"$WORK/backup.log"
  mariadb-backup --prepare --target-dir="$WORK/backup" 2>>"$WORK/backup.log"
  record "mariadb-backup --backup + --prepare (physical)" "$(since "$T")" "$(du -sb "$WORK/backup" | cut -f1)" "" "copy only: no server start, no load"
fi

if ! skipped lowerbound; then
  # The hand-made reference of the benchmark issue: server-side files, no compression,
  # no consistency, secondary index built after; $THREADS tables at a time.
  fresh_replica
  rm -rf "$WORK/outfile"; mkdir -p "$WORK/outfile"; chmod 777 "$WORK/outfile"
  mdb -P$RPORT -e "CREATE DATABASE sbtest"
  for i in $(seq 1 "$TABLES"); do
    mdb -P$MPORT -N -e "SHOW CREATE TABLE sbtest.sbtest$i" | cut -f2 | sed 's/\\n/\n/g' | grep -v '^  KEY ' \
      | sed -z 's/,\n)/\n)/' > "$WORK/outfile/t$i.sql"
  done
  T=$(now)
  seq 1 "$TABLES" | xargs -P "$THREADS" -I{} mariadb -h127.0.0.1 -uroot -P$MPORT -e "SELECT * INTO OUTFILE '$WORK/outfile/t{}.tsv' FROM sbtest.sbtest{}"
  seq 1 "$TABLES" | xargs -P "$THREADS" -I{} sh -c "mariadb -h127.0.0.1 -uroot -P$RPORT sbtest -e \"SET sql_log_bin=0, unique_checks=0, foreign_key_checks=0; \$(cat $WORK/outfile/t{}.sql); START TRANSACTION; LOAD DATA INFILE '$WORK/outfile/t{}.tsv' INTO TABLE sbtest{} CHARACTER SET binary; COMMIT; ALTER TABLE sbtest{} ADD KEY k_{} (k)\""
  record "hand-made: SELECT INTO OUTFILE + LOAD DATA INFILE, index after" "$(since "$T")" "$(du -sb "$WORK/outfile" | cut -f1)" "" "server-side files, no compression, not consistent"
  check_replica "lower bound"
fi

BIG_LINE=""
if ! skipped big; then
  # Memory must not grow with table size: one table --big-rows long.
  mdb -P$MPORT -e "CREATE DATABASE sbbig"
  sysbench oltp_read_write --db-driver=mysql --mysql-host=127.0.0.1 --mysql-port=$MPORT --mysql-user=root \
    --mysql-db=sbbig --tables=1 --table-size="$BIG_ROWS" --threads=1 prepare >/dev/null
  fresh_replica
  rm -rf "$WORK/stage-big"
  timed bigx "$RS" extract --source $MASTER --stage "$WORK/stage-big" --snapshot big --databases sbbig --threads "$THREADS" --json
  BX=$SECS BXR=$RSS
  timed bigl "$RS" load --stage "$WORK/stage-big" --snapshot big --target $REPLICA --threads "$THREADS" --json
  BL=$SECS BLR=$RSS
  fresh_replica
  rm -rf "$WORK/stage-bigp"
  timed bigp "$RS" provision --source $MASTER --target $REPLICA --stage "$WORK/stage-bigp" --databases sbbig --threads "$THREADS" --json
  BIG_LINE="One table of $BIG_ROWS rows ($(( BIG_ROWS / ROWS ))x a benchmark table), $THREADS threads: extract ${BX} s with peak RSS $((BXR / 1024)) MiB, load ${BL} s with peak RSS $((BLR / 1024)) MiB, provision (a subset replica of that database) ${SECS} s with peak RSS $((RSS / 1024)) MiB."
  echo ">> $BIG_LINE" >&2
fi

# ---------------------------------------------------------------- report
CPU=$(grep -m1 "model name" /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')
MEM=$(free -g | awk '/Mem:/ {print $2}')
{
  echo "# Benchmarks"
  echo
  echo "Generated by \`ci/bench.sh --tables $TABLES --rows $ROWS --threads $THREADS $DURABLE\` on $(date -u +%Y-%m-%d)."
  echo "Every tool copies the same sysbench database ($TABLES tables x $ROWS rows, ${INNODB_MB} MiB in InnoDB) from one"
  echo "master into a fresh, empty replica on the same machine, with $THREADS threads; each copy is checked with CHECKSUM TABLE."
  echo
  echo "| tool | wall time (s) | vs mydumper+myloader | staged bytes | peak RSS | CPU s: tool / master / replica | notes |"
  echo "|---|---:|---:|---:|---:|---:|---|"
  for r in "${RESULTS[@]}"; do
    IFS=$SEP read -r name secs bytes rss note cpu <<< "$r"
    ratio=""
    if [ -n "$MYD_S" ]; then ratio=$(echo "$secs / $MYD_S" | bc -l | xargs printf '%.2fx'); fi
    hbytes=""; [ -n "$bytes" ] && hbytes=$(numfmt --to=iec-i --suffix=B "$bytes")
    hrss=""; [ -n "$rss" ] && hrss="$((rss / 1024)) MiB"
    echo "| $name | $(printf '%.1f' "$secs") | $ratio | $hbytes | $hrss | $cpu | $note |"
  done
  echo
  [ -n "$BIG_LINE" ] && { echo "Memory and table size: $BIG_LINE"; echo; }
  echo "## Machine"
  echo
  echo "- CPU: $CPU, $(nproc) cores; memory: ${MEM} GiB; disk: $(df -h "$WORK" | awk 'NR==2 {print $2}') ($(df -T "$WORK" | awk 'NR==2 {print $2}'))"
  echo "- $(mariadbd --version | sed 's/  */ /g')"
  echo "- $(mydumper --version 2>&1 | head -1); $(sysbench --version); replseed $("$RS" --version | cut -d' ' -f2)"
  echo "- Both servers are replseed-sandbox instances on this machine: binlog ROW, innodb_buffer_pool_size=${BP}M, innodb_log_file_size=$REDO, $( [ -n "$DURABLE" ] && echo "innodb_flush_log_at_trx_commit=1, sync_binlog=1 (durable)" || echo "innodb_flush_log_at_trx_commit=2" )."
  echo
  echo "## Commands"
  echo
  echo '```sh'
  echo "sysbench oltp_read_write --mysql-db=sbtest --tables=$TABLES --table-size=$ROWS --threads=$THREADS prepare"
  echo "mariadb-dump --single-transaction --master-data=2 --gtid --databases sbtest | mariadb --init-command='SET sql_log_bin=0'"
  echo "mydumper -B sbtest -t $THREADS -r 100000 [-c] -o DIR && myloader -d DIR -t $THREADS"
  echo "replseed extract --source \$MASTER --stage DIR --threads $THREADS && replseed load --stage DIR --snapshot bench --target \$REPLICA --threads $THREADS"
  echo "replseed provision --source \$MASTER --target \$REPLICA --stage DIR --threads $THREADS"
  echo "mariadb-backup --backup --parallel=$THREADS --target-dir=DIR && mariadb-backup --prepare --target-dir=DIR"
  echo '```'
  echo
  echo "Peak RSS is /usr/bin/time's maximum resident set size of the replseed process (the largest of the repeated runs)."
  echo "CPU s is the user + system CPU time of the tool's process(es), and what the master's and the replica's"
  echo "mariadbd used meanwhile (from /proc), each the median of the repeated runs: with all three on $(nproc) cores,"
  echo "their sum over $(nproc) is the least wall time any overlap of the work could reach."
  if [ -f docs/bench-notes.md ] && [ "$OUT" = docs/BENCHMARKS.md ]; then echo; cat docs/bench-notes.md; fi
} > "$OUT"
echo "wrote $OUT" >&2
