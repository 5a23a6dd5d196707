#!/usr/bin/env bash
# Question 3 of docs/design/provisioning-gtid.md: after kill -9 of a replica in the middle of a
# reserved-domain stream applied in parallel, does its committed position name exactly the chunks
# it holds (a prefix from which re-sending is exact)? S streams CDB, CREATE TABLE, then CHUNKS
# chunks of ROWS rows (domain 77, seq 3.. = chunk 1..); R (4 optimistic workers, max_queued 256 MiB)
# is killed mid-way, restarted; its rows must equal (seq - 2) * ROWS and cover ids 1..that; then
# START SLAVE must end identical to S.
here=$(dirname "$0"); source "$here/lib.sh"
CHUNKS=${CHUNKS:-20}; ROWS=${ROWS:-20000}
start s 100 2>/dev/null
start r 2 --slave-parallel-threads=4 --slave-parallel-mode=optimistic --slave-parallel-max-queued=268435456 2>/dev/null
q s "set gtid_domain_id=77, server_id=1; create database d; create table d.t(id int auto_increment primary key, c char(120) not null)"
for i in $(seq 0 $((CHUNKS - 1))); do
  q s "set gtid_domain_id=77, server_id=1; insert into d.t select seq, repeat(md5(seq), 3) from mysql.seq_$((i * ROWS + 1))_to_$(((i + 1) * ROWS))"
done
goal=$(q s "select @@gtid_binlog_pos")
replicate r s
until [ "$(q r "select count(*) from d.t" 2>/dev/null || echo 0)" -gt $((ROWS * CHUNKS / 3)) ]; do sleep 0.05; done
crash r; boot r 2>/dev/null
pos=$(q r "select @@gtid_slave_pos"); seq=${pos##*-}
rows=$(q r "select count(*) from d.t"); top=$(q r "select coalesce(max(id),0) from d.t")
echo "after kill -9 and restart: gtid_slave_pos=$pos, rows=$rows, max(id)=$top, want $(( (seq - 2) * ROWS ))"
ok=1; [ "$rows" = $(( (seq - 2) * ROWS )) ] && [ "$top" = "$rows" ] || ok=0
q r "start slave"; wait_gtid r "$goal" 60 || ok=0
[ "$(q r 'checksum table d.t' | cut -f2)" = "$(q s 'checksum table d.t' | cut -f2)" ] || ok=0
echo "after START SLAVE: gtid_slave_pos=$(q r 'select @@gtid_slave_pos'), rows=$(q r 'select count(*) from d.t')"
stop s; stop r
[ $ok = 1 ] && echo "RESULT: the committed position is an exact prefix; re-sending from it ends identical" || { echo "RESULT: NOT exact"; exit 1; }
