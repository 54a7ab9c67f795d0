#!/bin/sh
# latency.sh -- connect->banner latency of smtpd and pop3d started per connection by a
# super-server (tcpserver, systemd-socket-activate --inetd), against banner.js (a bare node process
# that prints one line) under the same super-server. Goal (issue 2, item 9): ratio <= 1.25.
# Also shows --listen mode (no process start) for scale. LATENCY_N rounds (default 200); in each
# round the client connects to each program in turn (so load changes hit all alike), sends QUIT
# and waits for the close before the next connection: no two server processes overlap.
# Prints a Markdown table; measures only, asserts nothing.
# shellcheck source=bench/smtpd-pop3d/common.sh
. "$(dirname "$0")/common.sh"
need tcpserver "apt-get install ucspi-tcp"
need systemd-socket-activate "apt-get install systemd"
N=${LATENCY_N:-200}
postoffice "$WORK/po"

SMTPD="$NODE $ROOT/dist/smtpd.js -c $CFG"
POP3D="$NODE $ROOT/dist/pop3d.js -c $CFG"
BANNER="$NODE $B/banner.js"

# start SERVER PORT CMD...: CMD per connection under SERVER (or CMD --listen for "listen").
start() {
  server=$1 p=$2
  shift 2
  case $server in
    tcpserver) bg tcpserver -R -H -l 0 -c 40 127.0.0.1 "$p" "$@" ;;
    socket-activate) bg systemd-socket-activate --inetd -a -l "127.0.0.1:$p" "$@" ;;
    listen) bg "$@" --listen "127.0.0.1:$p" ;;
  esac
  waitport "$p"
}

rows=$WORK/latency.json
: >"$rows"
for server in tcpserver socket-activate; do
  pb=$(port) ps=$(port) pp=$(port)
  # shellcheck disable=SC2086
  start $server "$pb" $BANNER
  # shellcheck disable=SC2086
  start $server "$ps" $SMTPD
  # shellcheck disable=SC2086
  start $server "$pp" $POP3D
  sleep 0.5 # let the probe connections' processes finish
  $BENCH latency --tag server="$server" "$N" "banner.js=$pb" "smtpd=$ps:QUIT" "pop3d=$pp:QUIT" >>"$rows"
  stopall
done
ps=$(port) pp=$(port)
# shellcheck disable=SC2086
start listen "$ps" $SMTPD
# shellcheck disable=SC2086
start listen "$pp" $POP3D
$BENCH latency --tag server=listen "$N" "smtpd=$ps:QUIT" "pop3d=$pp:QUIT" >>"$rows"
stopall

# Add the ratio to the bare banner.js under the same super-server.
python3 -c '
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
base = {r["server"]: r["median"] for r in rows if r["program"] == "banner.js"}
for r in rows:
    r["ratio"] = "%.2f" % (r["median"] / base[r["server"]]) if r["server"] in base else "-"
    print(json.dumps(r))
' "$rows" | $BENCH table "connect→banner latency, ms ($N rounds; each round one connection to each program in turn; ratio = median / banner.js median under the same super-server; goal ≤ 1.25)" server program median p90 min max ratio
