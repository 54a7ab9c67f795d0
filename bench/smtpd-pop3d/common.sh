# shellcheck shell=sh disable=SC2034 # BENCH, CFG, MAILDIR are used by the scripts that source this
# common.sh -- sourced by the smtpd/pop3d benchmarks (bench/smtpd-pop3d/*.sh).
#
# Gives: $ROOT (the repository), $B (this directory), $NODE, $BENCH (python3 bench.py), $WORK (a
# temp dir removed at exit, with every process started through `bg` killed), and the functions
#   need TOOL HINT        exit 69 (EX_UNAVAILABLE) with an install hint when TOOL is missing
#   postoffice DIR [LINE...]   a post office in DIR: mail.cfg (0600) with alice@example.org / pw,
#                         network 127.0.0.0/8, login_delay 0, plus LINEs; sets $CFG and $MAILDIR.
#                         Its mail_owner is the user running the bench, or vmail when that is root
#                         (the daemons refuse to run mail as root; Dovecot's bench serves as vmail)
#   port                  prints a free TCP port on 127.0.0.1
#   bg CMD...             starts CMD in the background (stderr to $WORK/bg.log), remembers its pid
#   waitport PORT         waits (up to 10 s) until 127.0.0.1:PORT accepts connections
#   stopall               kills what bg started (also done at exit)
# NODE_EXTRA_CA_CERTS is unset: on Node 20 it adds ~50 ms to every process start (PEERS.md).
set -eu
unset NODE_EXTRA_CA_CERTS
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
B=$ROOT/bench/smtpd-pop3d
NODE=$(command -v node)
BENCH="python3 $B/bench.py"
cd "$ROOT"

need() {
  command -v "$1" >/dev/null 2>&1 || { echo "$(basename "$0"): $1 is missing; install it: $2" >&2; exit 69; }
}

if [ ! -f dist/smtpd.js ] || [ ! -f dist/pop3d.js ]; then node build.mjs smtpd pop3d; fi

WORK=$(mktemp -d /tmp/outpost-bench.XXXXXX)
PIDS=""
stopall() {
  for p in $PIDS; do kill "$p" 2>/dev/null || true; done
  for p in $PIDS; do wait "$p" 2>/dev/null || true; done
  PIDS=""
}
trap 'stopall; rm -rf "$WORK"' EXIT
trap 'exit 130' INT TERM

postoffice() {
  dir=$1; shift
  # The layout mailcfg init and user add make (smtpd and pop3d refuse to start without it).
  for d in mail queue/tmp queue/new queue/cur queue/state fetch run log tmp mail/example.org/alice/tmp mail/example.org/alice/new mail/example.org/alice/cur; do
    mkdir -p "$dir/spool/$d"
  done
  owner=$(id -un)
  [ "$(id -u)" != 0 ] || owner=vmail
  hash=$("$NODE" -e "const c=require('crypto');const s=c.randomBytes(16);c.scrypt('pw',s,32,{N:16384,r:8,p:1},(e,k)=>{if(e)throw e;console.log('scrypt\$16384\$8\$1\$'+s.toString('base64url')+'\$'+k.toString('base64url'))})")
  CFG=$dir/mail.cfg
  {
    echo "hostname mx.example.org"
    echo "spool $dir/spool"
    echo "mail_owner $owner"
    echo "log $dir/outpost.log"
    echo "login_delay 0"
    echo "domain example.org"
    echo "user alice@example.org $hash"
    echo "network 127.0.0.0/8"
    for l in "$@"; do echo "$l"; done
  } >"$CFG"
  chmod 600 "$CFG"
  [ "$owner" = "$(id -un)" ] || chown -R "$owner:" "$dir/spool"
  MAILDIR=$dir/spool/mail/example.org/alice
}

port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

bg() {
  "$@" 2>>"$WORK/bg.log" &
  PIDS="$PIDS $!"
}

waitport() {
  python3 - "$1" <<'EOF'
import socket, sys, time
for _ in range(200):
    try:
        socket.create_connection(("127.0.0.1", int(sys.argv[1]))).close()
        sys.exit(0)
    except OSError:
        time.sleep(0.05)
sys.exit("port %s never opened" % sys.argv[1])
EOF
}

# Counts regular files in a Maildir's new/ and cur/.
count_mail() {
  find "$1/new" "$1/cur" -type f 2>/dev/null | wc -l
}
