#!/usr/bin/env bash
# Question 1 of docs/design/provisioning-gtid.md, part 2: does a Gtid_list event with FLAG_IGN_GTIDS
# (bit 29 of its count), sent over the wire by the master side, set the replica's gtid_slave_pos?
# And with SQL on the replica (what `provision` may do), does the reserved domain go away?
# S writes a reserved-domain stream (77-1-1..3), rotates, and its new file's Gtid_list is rewritten
# (patch-event.py) to carry FLAG_IGN_GTIDS and the snapshot GTID 0-1-42. R replicates S.
here=$(dirname "$0"); source "$here/lib.sh"
start s 100 2>/dev/null
start r 2 --log-slave-updates=1 2>/dev/null
q s "set gtid_domain_id=77, server_id=1; create database d; create table d.t(id int primary key); insert into d.t values (1)"
q s "flush binary logs"          # bin.000002 opens with Gtid_list [77-1-3]
stop s
python3 "$here/patch-event.py" "$EXP/s/data/bin.000002" gtid-list 2 0-1-42
boot s 2>/dev/null
replicate r s
wait_gtid r 77-1-3 20
sleep 2   # the Gtid_list follows the last transaction
pos=$(q r "select @@gtid_slave_pos"); table=$(q r "select group_concat(concat_ws('-',domain_id,server_id,seq_no)) from mysql.gtid_slave_pos")
echo "R after the stream and the flagged Gtid_list: gtid_slave_pos=$pos mysql.gtid_slave_pos=$table binlog_state=$(q r 'select @@gtid_binlog_state')"
q r "show slave status\G" | grep -E 'Last_(IO|SQL)_Error:|Gtid_IO_Pos' || true
ok=1
case ",$pos," in *,0-1-42,*) echo "RESULT FLAG_IGN_GTIDS over the wire: sets gtid_slave_pos[0]";; *) echo "RESULT FLAG_IGN_GTIDS over the wire: ignored"; ok=0;; esac
# With SQL on the replica: drop the reserved domain from gtid_slave_pos and the binlog state.
q r "stop slave; set global gtid_slave_pos='0-1-42'"
q r "flush binary logs"
q r "purge binary logs to '$(q r "show master status" | cut -f1)'"
q r "flush binary logs delete_domain_id=(77)" || ok=0
echo "R after SQL cleanup: gtid_slave_pos=$(q r 'select @@gtid_slave_pos') binlog_state=$(q r 'select @@gtid_binlog_state')"
[ "$(q r 'select @@gtid_slave_pos')" = 0-1-42 ] && [ -z "$(q r 'select @@gtid_binlog_state')" ] || ok=0
stop s; stop r
[ $ok = 1 ] && echo "RESULT SQL cleanup: only the master's GTIDs" || { echo "RESULT: property fails"; exit 1; }
