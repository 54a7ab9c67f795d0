#!/bin/sh
# rss.sh -- peak resident memory of smtpd receiving one message (python3 smtplib) and of pop3d
# sending it (RETR over a raw socket), for messages of 0 (a session that only says QUIT), 10 MB
# and 100 MB: flat in message size means streaming. Goal (issue 2, item 9): <= 80 MB.
#   inetd:  the daemon per connection under tcpserver, run by `/usr/bin/time -f %M` (max RSS of
#           that process, read after it exits);
#   listen: one --listen process per row; VmHWM from /proc/PID/status after the session;
#   inetd-ofs: as inetd, with `node --optimize-for-size` (smaller V8 young generation: dead
#           read buffers are collected sooner), for the 100 MB message only.
# Each row uses a fresh post office (message_size_limit 200M), so the maildrop holds exactly the
# one message. Prints a Markdown table (MB = 2^20 bytes).
# shellcheck source=bench/smtpd-pop3d/common.sh
. "$(dirname "$0")/common.sh"
need tcpserver "apt-get install ucspi-tcp"
[ -x /usr/bin/time ] || { echo "rss.sh: /usr/bin/time is missing; install it: apt-get install time" >&2; exit 69; }

rows=$WORK/rss.json
: >"$rows"
n=0
# one DAEMON MODE BYTES
one() {
  daemon=$1 mode=$2 bytes=$3
  n=$((n + 1))
  postoffice "$WORK/po$n" "message_size_limit 200M"
  if [ "$daemon" = pop3d ] && [ "$bytes" -gt 0 ]; then
    # Put the message in with smtpd first (a --listen one, not measured).
    ps=$(port)
    bg "$NODE" "$ROOT/dist/smtpd.js" -c "$CFG" --listen "127.0.0.1:$ps"
    waitport "$ps"
    $BENCH send "$ps" sender@bench.example alice@example.org "$bytes" >/dev/null
    stopall
  fi
  p=$(port)
  out=$WORK/time$n
  case $mode in
    inetd) bg tcpserver -R -H -l 0 127.0.0.1 "$p" /usr/bin/time -f %M -o "$out" "$NODE" "$ROOT/dist/$daemon.js" -c "$CFG" ;;
    inetd-ofs) bg tcpserver -R -H -l 0 127.0.0.1 "$p" /usr/bin/time -f %M -o "$out" "$NODE" --optimize-for-size "$ROOT/dist/$daemon.js" -c "$CFG" ;;
    listen) bg "$NODE" "$ROOT/dist/$daemon.js" -c "$CFG" --listen "127.0.0.1:$p" ;;
  esac
  pid=${PIDS##* }
  waitport "$p"
  sleep 0.5
  rm -f "$out" # the probe connection's process
  if [ "$bytes" -eq 0 ]; then
    quit=QUIT
    res=$($BENCH latency 1 "x=$p:$quit" | python3 -c 'import json,sys; print(json.dumps({"seconds": round(json.load(sys.stdin)["median"] / 1000, 3), "bytes": 0}))')
  elif [ "$daemon" = smtpd ]; then
    res=$($BENCH send "$p" sender@bench.example alice@example.org "$bytes")
  else
    res=$($BENCH retr "$p" alice@example.org pw 1)
  fi
  if [ "$mode" = listen ]; then
    kb=$(awk '/^VmHWM:/ {print $2}' "/proc/$pid/status")
  else
    i=0
    while [ ! -s "$out" ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
    kb=$(tail -n 1 "$out")
  fi
  stopall
  python3 -c 'import json,sys; a=sys.argv; r=json.loads(a[4]); print(json.dumps({"daemon":a[1],"mode":a[2],"message":a[3],"bytes":r["bytes"],"seconds":r["seconds"],"peak RSS MB":round(int(a[5])/1024,1)}))' \
    "$daemon" "$mode" "$((bytes / 1000000)) MB" "$res" "$kb" >>"$rows"
}

for daemon in smtpd pop3d; do
  for mode in inetd listen; do
    for bytes in 0 10000000 100000000; do one "$daemon" "$mode" "$bytes"; done
  done
  one "$daemon" inetd-ofs 100000000
done

$BENCH table "peak RSS of one session, by message size (goal ≤ 80 MB; inetd = tcpserver + /usr/bin/time -f %M, listen = VmHWM, inetd-ofs = inetd with node --optimize-for-size)" daemon mode message bytes seconds "peak RSS MB" <"$rows"
