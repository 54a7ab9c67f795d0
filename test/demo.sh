#!/bin/sh
# demo.sh — a whole Outpost post office in ./demo, in about two seconds, without root and without
# touching the system: `make demo` runs it from the repository root (after `make` built dist/).
#
# It creates ./demo (mail.cfg, spool, a self-signed certificate) with mailcfg, adds the mailboxes
# alice@demo.example and bob@demo.example, starts smtpd and pop3d with --listen on free ports of
# 127.0.0.1, sends a message from alice to bob with curl smtp:// (STARTTLS, AUTH as alice), reads
# it back with curl pop3:// as bob, and prints every command, the SMTP/POP3 dialogue and where
# the message landed. The daemons are stopped on every exit path (trap).
# Re-runnable: ./demo is removed first. Needs node 20, curl and openssl (on every fresh machine).
# Exit status: 0 when the message went through; 1 (with the step that failed) otherwise.
set -eu

cd "$(dirname "$0")/.."
ROOT=$(pwd)
DEMO=$ROOT/demo
CFG=$DEMO/mail.cfg
unset NODE_EXTRA_CA_CERTS || true   # slows every node start; nothing here needs it

# Bold headings only on a terminal, and not when NO_COLOR is set (no-color.org) or TERM=dumb.
if [ -t 1 ] && [ -z "${NO_COLOR:-}" ] && [ "${TERM:-dumb}" != dumb ]; then
  BOLD=$(printf '\033[1m') PLAIN=$(printf '\033[0m')
else
  BOLD= PLAIN=
fi
say() { printf '\n%s==> %s%s\n' "$BOLD" "$*" "$PLAIN"; }
run() { printf '$ %s\n' "$*"; "$@"; }
fail() { printf '\ndemo: FAILED: %s\n' "$*" >&2; exit 1; }

for tool in node curl openssl; do
  command -v "$tool" >/dev/null 2>&1 || fail "$tool is not installed"
done
for p in mailcfg smtpd pop3d; do
  [ -f "dist/$p.js" ] || fail "dist/$p.js is missing; run \"make demo\" (it builds first) or \"make\""
done

SMTPD_PID=
POP3D_PID=
stop() {
  for pid in $SMTPD_PID $POP3D_PID; do kill "$pid" 2>/dev/null || true; done
  for pid in $SMTPD_PID $POP3D_PID; do wait "$pid" 2>/dev/null || true; done
}
trap stop EXIT
trap 'exit 1' INT TERM HUP

# A TCP port on 127.0.0.1 that is free now.
free_port() {
  node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'
}
# Waits up to 10 s until 127.0.0.1:$1 listens (read from /proc/net/tcp, so no probe connection
# reaches the daemon) or the daemon $2 died.
wait_listen() {
  hex=$(printf '%04X' "$1")
  i=0
  while [ $i -lt 500 ]; do
    kill -0 "$2" 2>/dev/null || return 1
    if [ -r /proc/net/tcp ]; then
      awk -v p=":$hex" 'NR > 1 && substr($2, length($2) - 4) == p && $4 == "0A" { found = 1 } END { exit !found }' /proc/net/tcp && return 0
    else
      sleep 1 && return 0
    fi
    sleep 0.02
    i=$((i + 1))
  done
  return 1
}
# Shows curl -v's protocol lines: "> " what the client sent, "< " what the server replied.
transcript() {
  grep -E '^[<>] ' "$1" | tr -d '\r' | sed -e 's/^> /   C: /' -e 's/^< /   S: /' |
    sed -E 's/^(   C: ([A-Za-z0-9+\/]{16,}=*|AUTH PLAIN [A-Za-z0-9+\/]+=*))$/\1   <- base64 of user and password (RFC 4616)/'
}

say "1. A post office in ./demo (mail.cfg + spool), made with mailcfg"
rm -rf "$DEMO"
mkdir -p "$DEMO"
# The demo's spool is yours, whoever you are (as root, init would otherwise want the user outpost).
run node bin/mailcfg.js -c "$CFG" init --hostname mail.demo.example --domain demo.example --spool "$DEMO/spool" --owner "$(id -un)" || fail "mailcfg init"
echo "   (alice's password is alice-pw, bob's is bob-pw; --password-stdin reads one line)"
printf 'alice-pw\n' | run node bin/mailcfg.js -c "$CFG" user add alice@demo.example --password-stdin || fail "mailcfg user add alice"
printf 'bob-pw\n' | run node bin/mailcfg.js -c "$CFG" user add bob@demo.example --password-stdin || fail "mailcfg user add bob"
echo "   Every domain needs a postmaster (RFC 5321 4.5.1); alice reads its mail:"
run node bin/mailcfg.js -c "$CFG" alias add postmaster@demo.example alice@demo.example || fail "mailcfg alias add"
echo "   A self-signed certificate for STARTTLS/STLS:"
printf '$ openssl req -x509 -newkey rsa:2048 -nodes -subj /CN=localhost ... -keyout demo/key.pem -out demo/cert.pem\n'
openssl req -x509 -newkey rsa:2048 -nodes -keyout "$DEMO/key.pem" -out "$DEMO/cert.pem" -days 30 \
  -subj /CN=localhost -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" >/dev/null 2>&1 || fail "openssl req"
chmod 600 "$DEMO/key.pem"
run node bin/mailcfg.js -c "$CFG" set tls_cert "$DEMO/cert.pem" || fail "mailcfg set tls_cert"
run node bin/mailcfg.js -c "$CFG" set tls_key "$DEMO/key.pem" || fail "mailcfg set tls_key"
run node bin/mailcfg.js -c "$CFG" check || fail "mailcfg check"

say "2. smtpd and pop3d listening on 127.0.0.1 (in production inetd or systemd start them per connection)"
SMTP_PORT=$(free_port)
POP3_PORT=$(free_port)
printf '$ node bin/smtpd.js -c demo/mail.cfg --listen 127.0.0.1:%s &\n' "$SMTP_PORT"
node bin/smtpd.js -c "$CFG" --listen "127.0.0.1:$SMTP_PORT" 2>"$DEMO/smtpd.stderr" &
SMTPD_PID=$!
printf '$ node bin/pop3d.js -c demo/mail.cfg --listen 127.0.0.1:%s &\n' "$POP3_PORT"
node bin/pop3d.js -c "$CFG" --listen "127.0.0.1:$POP3_PORT" 2>"$DEMO/pop3d.stderr" &
POP3D_PID=$!
wait_listen "$SMTP_PORT" "$SMTPD_PID" || fail "smtpd did not start: $(cat "$DEMO/smtpd.stderr")"
wait_listen "$POP3_PORT" "$POP3D_PID" || fail "pop3d did not start: $(cat "$DEMO/pop3d.stderr")"
echo "   smtpd (pid $SMTPD_PID) on port $SMTP_PORT, pop3d (pid $POP3D_PID) on port $POP3_PORT"

say "3. alice sends a message to bob with curl smtp:// (STARTTLS required, AUTH as alice)"
cat >"$DEMO/message.txt" <<EOF
From: Alice <alice@demo.example>
To: Bob <bob@demo.example>
Subject: Hello from the Outpost demo
Date: $(LC_ALL=C date -R 2>/dev/null || LC_ALL=C date)
Message-ID: <demo.$$@demo.example>

Hi Bob,

this message went from curl to smtpd, into your Maildir, and back out through pop3d.

Alice
EOF
printf '$ curl --ssl-reqd --cacert demo/cert.pem --user alice@demo.example:alice-pw \\\n    --mail-from alice@demo.example --mail-rcpt bob@demo.example \\\n    --upload-file demo/message.txt smtp://127.0.0.1:%s/client.demo.example\n' "$SMTP_PORT"
curl -sS -v --ssl-reqd --cacert "$DEMO/cert.pem" --user alice@demo.example:alice-pw \
  --mail-from alice@demo.example --mail-rcpt bob@demo.example \
  --upload-file "$DEMO/message.txt" "smtp://127.0.0.1:$SMTP_PORT/client.demo.example" 2>"$DEMO/curl-smtp.log" ||
  { transcript "$DEMO/curl-smtp.log"; fail "curl smtp:// (see demo/curl-smtp.log)"; }
transcript "$DEMO/curl-smtp.log"

say "4. Where the message landed (Maildir: written to tmp/, fsynced, renamed into new/)"
MAILDIR=$DEMO/spool/mail/demo.example/bob
FILES=$(ls "$MAILDIR/new")
if [ -z "$FILES" ] || [ "$(echo "$FILES" | wc -l)" -ne 1 ]; then fail "expected one file in $MAILDIR/new, found: $FILES"; fi
echo "   demo/spool/mail/demo.example/bob/new/$FILES"
echo "   (S= and W= in the name are its size in bytes; the file holds the message as sent on the"
echo "    wire, CRLF line ends, with smtpd's trace headers on top:)"
sed -n '1,/^\r*$/p' "$MAILDIR/new/$FILES" | tr -d '\r' | sed 's/^/   | /'

say "5. bob reads it with curl pop3:// (STLS required): LIST, then RETR 1"
printf '$ curl --ssl-reqd --cacert demo/cert.pem --user bob@demo.example:bob-pw pop3://127.0.0.1:%s/\n' "$POP3_PORT"
LIST=$(curl -sS -v --ssl-reqd --cacert "$DEMO/cert.pem" --user bob@demo.example:bob-pw "pop3://127.0.0.1:$POP3_PORT/" 2>"$DEMO/curl-list.log") ||
  { transcript "$DEMO/curl-list.log"; fail "curl pop3:// LIST (see demo/curl-list.log)"; }
transcript "$DEMO/curl-list.log"
echo "   LIST says: $(echo "$LIST" | tr -d '\r')"
printf '$ curl --ssl-reqd --cacert demo/cert.pem --user bob@demo.example:bob-pw pop3://127.0.0.1:%s/1\n' "$POP3_PORT"
curl -sS -v --ssl-reqd --cacert "$DEMO/cert.pem" --user bob@demo.example:bob-pw "pop3://127.0.0.1:$POP3_PORT/1" \
  >"$DEMO/retrieved.eml" 2>"$DEMO/curl-retr.log" || { transcript "$DEMO/curl-retr.log"; fail "curl pop3:// RETR (see demo/curl-retr.log)"; }
transcript "$DEMO/curl-retr.log"
echo "   The message bob received (demo/retrieved.eml):"
tr -d '\r' <"$DEMO/retrieved.eml" | sed 's/^/   | /'
grep -q '^Subject: Hello from the Outpost demo' "$DEMO/retrieved.eml" || fail "the retrieved message is not the one alice sent"
STORED=$(find "$MAILDIR/new" "$MAILDIR/cur" -type f)
cmp -s "$DEMO/retrieved.eml" "$STORED" || fail "RETR did not return the stored bytes ($STORED)"
echo "   Byte for byte what is stored in the Maildir; POP3 kept it (no DELE): $(find "$MAILDIR/new" "$MAILDIR/cur" -type f | wc -l) message(s) in bob's Maildir."

say "6. Done: the daemons' log is demo/spool/log/outpost.log"
if [ -f "$DEMO/spool/log/outpost.log" ]; then tail -n 8 "$DEMO/spool/log/outpost.log" | sed 's/^/   /'; fi
echo
echo "demo: OK — a message went alice → smtpd → Maildir → pop3d → bob. Stopping the daemons."
