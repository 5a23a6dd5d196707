#!/usr/bin/env bash
# Question 1 of docs/design/provisioning-gtid.md: which GTIDs may the stream's invented transactions
# (schema + rows) carry so that, after provisioning, a replica with log_slave_updates=ON holds only
# the master's GTIDs in gtid_slave_pos and gtid_binlog_state?
# A scratch server S plays the stream: it writes the snapshot's schema and rows with the GTIDs the
# policy names (session gtid_domain_id / server_id / gtid_seq_no), so the replica's IO and SQL
# threads receive exactly such events. R replicates S, then the real master M from where it stands,
# and a cascading replica C replicates R from scratch.
# Usage: q1-policy.sh reserved|own-repeat|own-ascending|foreign-id  [strict: 0|1]
# Prints the states; exits non-zero when the property "only the master's GTIDs" does not hold.
here=$(dirname "$0"); source "$here/lib.sh"
policy=$1; strict=${2:-0}
CHUNKS=5
start m 1 --gtid-strict-mode=$strict 2>/dev/null
start s 100 2>/dev/null
start r 2 --log-slave-updates=1 --gtid-strict-mode=$strict 2>/dev/null
start c 3 --log-slave-updates=1 --gtid-strict-mode=$strict 2>/dev/null
# The master's history up to the snapshot G0 = 0-1-(2+CHUNKS).
q m "create database d; create table d.t(id int auto_increment primary key, v int)"
for i in $(seq $CHUNKS); do q m "insert into d.t select seq, seq - ($i-1)*1000 from mysql.seq_$(( (i-1)*1000 + 1 ))_to_$((i*1000))"; done
g0=$(q m "select @@gtid_binlog_pos"); s0=${g0##*-}
# The stream: schema then CHUNKS row transactions, under the policy's GTIDs.
case $policy in
  reserved)      gtid() { echo "set gtid_domain_id=77, server_id=1, gtid_seq_no=$1;"; } ;;
  own-repeat)    gtid() { echo "set gtid_domain_id=0, server_id=1, gtid_seq_no=$s0;"; } ;;
  own-ascending) gtid() { echo "set gtid_domain_id=0, server_id=1, gtid_seq_no=$((s0 - CHUNKS - 2 + $1));"; } ;;
  foreign-id)    gtid() { echo "set gtid_domain_id=0, server_id=999, gtid_seq_no=$((s0 - CHUNKS - 2 + $1));"; } ;;
esac
q s "$(gtid 1) create database d"
q s "$(gtid 2) create table d.t(id int auto_increment primary key, v int)"
for i in $(seq $CHUNKS); do
  q s "$(gtid $((2 + i))) insert into d.t select seq, seq - ($i-1)*1000 from mysql.seq_$(( (i-1)*1000 + 1 ))_to_$((i*1000))"
done
echo "stream (S's binlog): $(q s "select @@gtid_binlog_state")"
replicate r s
if ! wait_gtid r "$(q s 'select @@gtid_binlog_pos')" 20; then
  echo "RESULT $policy strict=$strict: the replica refused the stream: $(q r "show slave status\G" | grep -E 'Last_(SQL|IO)_Error:' | tr -s ' ')"
  exit 2
fi
after_stream="slave_pos=$(q r 'select @@gtid_slave_pos') binlog_state=$(q r 'select @@gtid_binlog_state')"
# The master goes on; the replica follows it from where it stands (what serve's archive phase does).
# serve sends the archive from G0 whatever the replica's position says; to let M stand in for it, a
# position without domain 0 (the reserved policy) gets G0 added, as serve would imply it.
q r "stop slave"
case $(q r "select @@gtid_slave_pos") in 0-*|*,0-*) ;; *) q r "set global gtid_slave_pos=concat_ws(',', nullif(@@gtid_slave_pos,''), '$g0')";; esac
q r "change master to master_port=$(port m); start slave"
q m "insert into d.t(v) values (1); insert into d.t(v) values (2)"
wait_gtid r "$(q m 'select @@gtid_binlog_pos')" 20 || { echo "RESULT $policy: replica does not follow the master"; exit 2; }
# A cascading replica from R, from nothing.
replicate c r
wait_gtid c "$(q r 'select @@gtid_binlog_pos')" 20 || { echo "RESULT $policy: cascade fails"; exit 2; }
ms=$(q m "select @@gtid_binlog_state"); rp=$(q r "select @@gtid_slave_pos"); rs=$(q r "select @@gtid_binlog_state")
sum() { q "$1" "checksum table d.t" | cut -f2; }
echo "master: binlog_state=$ms  checksum=$(sum m)"
echo "R after stream: $after_stream"
echo "R now: slave_pos=$rp binlog_state=$rs checksum=$(sum r)"
echo "C (cascade of R): slave_pos=$(q c 'select @@gtid_slave_pos') binlog_state=$(q c 'select @@gtid_binlog_state') checksum=$(sum c)"
echo "R's binlog GTIDs: $(mariadb-binlog --skip-gtid-strict-mode "$EXP"/r/data/bin.0* 2>/dev/null | grep -o 'GTID [0-9-]*' | tr '\n' ' ')"
ok=1
[ "$(sum r)" = "$(sum m)" ] && [ "$(sum c)" = "$(sum m)" ] || { echo "data differs"; ok=0; }
[ -n "${KEEP:-}" ] || for n in m s r c; do stop $n; done
# Only the master's GTIDs: R's slave_pos and binlog state, and C's, equal the master's binlog state.
if [ $ok = 1 ] && [ "$rp" = "$ms" ] && [ "$rs" = "$ms" ]; then
  echo "RESULT $policy strict=$strict: only the master's GTIDs"; exit 0
fi
echo "RESULT $policy strict=$strict: invented GTIDs remain"; exit 1
