#!/bin/sh
# load.sh -- SMTP load into smtpd with Postfix's smtp-source: 10 parallel sessions x 200 messages
# (2 KB bodies, one recipient, each session one connection: smtp-source -d), with smtpd per
# connection under `tcpserver -c 20` and as one `--listen` process. Also the same 2000 messages
# with a new connection per message (no -d): under tcpserver that is 2000 smtpd process starts.
# After each run the Maildir must hold exactly 2000 new messages (and none left in tmp/), or the
# row says MISMATCH. Prints a Markdown table (messages/s = 2000 / smtp-source wall time).
# shellcheck source=bench/smtpd-pop3d/common.sh
. "$(dirname "$0")/common.sh"
need smtp-source "apt-get install postfix (smtp-source is in /usr/sbin)"
need tcpserver "apt-get install ucspi-tcp"
SESSIONS=10
PER=200
TOTAL=$((SESSIONS * PER))

rows=$WORK/load.json
: >"$rows"
# one SERVER MODE: a fresh post office, smtpd under SERVER, smtp-source in MODE (-d or "").
one() {
  server=$1 mode=$2
  postoffice "$WORK/po-$server$mode"
  p=$(port)
  case $server in
    tcpserver) bg tcpserver -R -H -l 0 -c 20 127.0.0.1 "$p" "$NODE" "$ROOT/dist/smtpd.js" -c "$CFG" ;;
    listen) bg "$NODE" "$ROOT/dist/smtpd.js" -c "$CFG" --listen "127.0.0.1:$p" ;;
  esac
  waitport "$p"
  sleep 0.3
  t0=$(date +%s.%N)
  # shellcheck disable=SC2086
  smtp-source -s $SESSIONS -m $TOTAL -l 2048 $mode -M bench.example -f sender@bench.example -t alice@example.org "127.0.0.1:$p"
  t1=$(date +%s.%N)
  stopall
  got=$(find "$MAILDIR/new" -type f | wc -l)
  tmp=$(find "$MAILDIR/tmp" -type f | wc -l)
  check=ok
  [ "$got" -eq "$TOTAL" ] && [ "$tmp" -eq 0 ] || check=MISMATCH
  if [ "$mode" = -d ]; then conns="$SESSIONS connections x $PER messages"; else conns="$TOTAL connections x 1 message"; fi
  python3 -c 'import json,sys; a=sys.argv; s=float(a[3])-float(a[2]); print(json.dumps({"server":a[1],"connections":a[7],"seconds":round(s,2),"messages/s":round(int(a[4])/s,1),"in Maildir":int(a[5]),"check":a[6]}))' \
    "$server" "$t0" "$t1" "$TOTAL" "$got" "$check" "$conns" >>"$rows"
}

one tcpserver -d
one listen -d
one tcpserver ""
one listen ""

$BENCH table "smtp-source into smtpd: $TOTAL messages of 2 KB, $SESSIONS parallel sessions (tcpserver -c 20)" server connections seconds messages/s "in Maildir" check <"$rows"
