#!/usr/bin/env bash
# Question 2 of docs/design/provisioning-gtid.md: do row-event transactions into ONE AUTO_INCREMENT
# table apply concurrently on a replica's parallel applier, and what stops them?
# M writes CHUNKS transactions of ROWS rows (sysbench sbtest shape, no secondary index) into one
# table, one session, one after the other; R (table created, gtid_slave_pos at the GTID before)
# first receives the whole relay log (IO thread only), then the SQL thread applies it alone, timed.
# Usage: q2-parallel.sh "THREADS MODE MAX_QUEUED" ...   e.g. "0 none 131072" "4 optimistic 268435456"
here=$(dirname "$0"); source "$here/lib.sh"
CHUNKS=${CHUNKS:-16}; ROWS=${ROWS:-50000}
ddl="create table d.t(id int auto_increment primary key, k int not null default 0, c char(120) not null default '', pad char(60) not null default '')"
start m 1 2>/dev/null
q m "create database d; $ddl"
g=$(q m "select @@gtid_binlog_pos")
for i in $(seq 0 $((CHUNKS - 1))); do
  q m "insert into d.t select seq, seq mod 1000, repeat(md5(seq), 3), md5(seq + 1) from mysql.seq_$((i * ROWS + 1))_to_$(((i + 1) * ROWS))"
done
goal=$(q m "select @@gtid_binlog_pos"); sum=$(q m "checksum table d.t" | cut -f2)
echo "master: $CHUNKS x $ROWS rows, $(du -m "$EXP"/m/data/bin.000001 | cut -f1) MB binlog; flags of the chunks:" \
  "$(mariadb-binlog "$EXP"/m/data/bin.000001 | grep -o 'GTID [0-9-]*.*' | sed 's/GTID [0-9-]* *//' | sort | uniq -c | tr -s ' ' | tr '\n' ';')"
for conf in "$@"; do
  read -r threads mode queued <<<"$conf"
  start r 2 --slave-parallel-threads="$threads" --slave-parallel-mode="$mode" --slave-parallel-max-queued="$queued" 2>/dev/null
  q r "create database d; $ddl; set global gtid_slave_pos='$g'"
  q r "change master to master_host='127.0.0.1', master_port=$(port m), master_user='root', master_use_gtid=slave_pos; start slave io_thread"
  until [ "$(mariadb -uroot -S "$EXP/r/s" -e 'show slave status\G' | awk '/Gtid_IO_Pos/{print $2}')" = "$goal" ]; do sleep 0.2; done
  pid=$(cat "$EXP/r/pid"); cpu0=$(awk '{print $14 + $15}' /proc/"$pid"/stat); t0=$(date +%s.%N)
  q r "start slave sql_thread"
  peak=0
  while [ "$(q r "select @@gtid_slave_pos")" != "$goal" ]; do
    n=$(q r "select count(*) from information_schema.processlist where command='Slave_worker' and state not like 'Waiting for work%' and state not like 'Waiting for prior%'")
    [ "$n" -gt "$peak" ] && peak=$n; sleep 0.1
  done
  t1=$(date +%s.%N); cpu1=$(awk '{print $14 + $15}' /proc/"$pid"/stat)
  got=$(q r "checksum table d.t" | cut -f2)
  retried=$(q r "select variable_value from information_schema.global_status where variable_name='SLAVE_RETRIED_TRANSACTIONS'")
  printf 'RESULT threads=%s mode=%s max_queued=%s: apply %.2f s wall, %.2f s replica CPU, busy workers seen at once: %s, retried transactions: %s, checksum %s\n' \
    "$threads" "$mode" "$queued" "$(echo "$t1 - $t0" | bc)" "$(echo "($cpu1 - $cpu0) / $(getconf CLK_TCK)" | bc -l)" "$peak" "$retried" \
    "$([ "$got" = "$sum" ] && echo equal || echo DIFFERS)"
  stop r
done
stop m
