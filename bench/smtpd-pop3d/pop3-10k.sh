#!/bin/sh
# pop3-10k.sh -- one POP3 session USER/PASS/STAT/UIDL/LIST/QUIT (python3 poplib) on a maildrop of
# 10,000 messages (2 KB each, written straight into new/ with ,S=/,W= names as smtpd delivers
# them), with pop3d per connection under tcpserver and as one --listen process. POP3_N sessions
# (default 21) one after another; the first session also moves the 10,000 files new/ -> cur/, so
# it is shown apart and the median/p90 are over the rest. The password check (scrypt, ~50 ms of
# CPU by design) is part of every session. "tcpserver-D" is tcpserver -D (TCP_NODELAY set on the
# socket before pop3d starts): it shows what Nagle's algorithm costs the multi-line replies.
# The same sessions on an empty maildrop follow, for scale. Prints a Markdown table.
# shellcheck source=bench/smtpd-pop3d/common.sh
. "$(dirname "$0")/common.sh"
need tcpserver "apt-get install ucspi-tcp"
N=${POP3_N:-21}
COUNT=10000

rows=$WORK/pop3.json
: >"$rows"
for count in $COUNT 0; do for server in tcpserver tcpserver-D listen; do
  postoffice "$WORK/po-$server-$count"
  $BENCH maildrop "$MAILDIR" "$count" 2048 >/dev/null
  p=$(port)
  case $server in
    tcpserver) bg tcpserver -R -H -l 0 127.0.0.1 "$p" "$NODE" "$ROOT/dist/pop3d.js" -c "$CFG" ;;
    tcpserver-D) bg tcpserver -D -R -H -l 0 127.0.0.1 "$p" "$NODE" "$ROOT/dist/pop3d.js" -c "$CFG" ;;
    listen) bg "$NODE" "$ROOT/dist/pop3d.js" -c "$CFG" --listen "127.0.0.1:$p" ;;
  esac
  waitport "$p"
  sleep 0.3
  $BENCH pop3 --tag server=$server "$p" alice@example.org pw "$N" >>"$rows"
  stopall
  left=$(count_mail "$MAILDIR")
  [ "$left" -eq "$count" ] || echo "pop3-10k.sh: $left messages left in $MAILDIR, expected $count" >&2
done; done

$BENCH table "POP3 USER+PASS+STAT+UIDL+LIST+QUIT on a $COUNT-message (and an empty) maildrop, ms per session (first session apart; median/p90 of the next $((N - 1)))" server messages first median p90 min max banner login stat uidl list quit <"$rows"
