#!/bin/sh
# pop3-dovecot.sh -- pop3d beside Dovecot's pop3 on one maildrop of 10,000 messages (~290 MB, the
# files of ../shared/corpus in turn) written as a foreign MDA writes them: LF line ends, Postfix
# virtual names without ,S=/,W= (issue 10 item 4). One whole session USER/PASS/STAT/UIDL/LIST/QUIT
# (python3 poplib, bench.py pop3), three servers:
#   pop3d-tcpserver  pop3d under tcpserver: one node process per connection (Node's start and a
#                    cold Argon2id verify in every session);
#   pop3d-listen     pop3d --listen 127.0.0.1:PORT: one resident process, sessions in-process
#                    (what a systemd socket with Accept=no, LISTEN_FDS, gives); WARMUP sessions
#                    (default 5) first, so its threadpool's malloc arenas have held the hash's
#                    19 MiB once — the state of a server that has been up for a while;
#   dovecot          Dovecot 2.3 with its own resident master and auth processes, one pop3
#                    process per connection (its default).
# Both pop3d are started as root and switch to mail_owner vmail. All serve the very same Maildir;
# first one session each (pop3d moves new/ -> cur/ and counts the sizes into pop3d.index, Dovecot
# builds dovecot.index*), then the three in turn, so a change in machine load hits all alike:
#   warm  POP3_N sessions each (median), everything in the page cache;
#   cold  COLD_N sessions each (median), `sync; echo 3 > /proc/sys/vm/drop_caches` before each
#         (needs root; without it the cold rows say "not permitted"); the indexes stay (and the
#         resident processes stay up: only the page cache is dropped).
# The password hash is a parameter: SCHEME=outpost (default: the `{ARGON2ID}` hash `mailcfg user
# passwd` writes, m=19456,t=2, and Dovecot verifies that same field), SCHEME=scrypt (the legacy
# `scrypt$` hash, which Dovecot cannot read: it gets SHA512-CRYPT), or a scheme of `doveadm pw -s`
# (ARGON2ID there means libsodium's m=65536,t=3: both verify that one hash). "hash" is one
# verification of pop3d's hash in node (median of 11); "no hash" is pop3d's median minus that.
# COUNT (10000) sets the size.
# Measures and prints a Markdown table; never asserts a timing.
# shellcheck source=bench/smtpd-pop3d/common.sh
. "$(dirname "$0")/common.sh"
need tcpserver "apt-get install ucspi-tcp"
need dovecot "apt-get install dovecot-core dovecot-pop3d"
N=${POP3_N:-11}
COLD_N=${COLD_N:-5}
COUNT=${COUNT:-10000}
SCHEME=${SCHEME:-outpost}
CORPUS=${CORPUS:-$ROOT/../shared/corpus}
[ -d "$CORPUS" ] || CORPUS=/work/shared/corpus

postoffice "$WORK/po"
case $SCHEME in
  scrypt) DHASH=$(doveadm pw -s SHA512-CRYPT -p pw) ;;
  outpost)
    [ -f dist/mailcfg.js ] || node build.mjs mailcfg
    echo pw | "$NODE" dist/mailcfg.js -c "$CFG" user passwd alice@example.org --password-stdin
    DHASH=$(sed -n 's/^user alice@example.org "*\([^"]*\)"*$/\1/p' "$CFG") ;;
  *)
    DHASH=$(doveadm pw -s "$SCHEME" -p pw)
    sed -i "s|^user alice@example.org .*|user alice@example.org $DHASH|" "$CFG" ;;
esac
$BENCH foreign "$MAILDIR" "$COUNT" "$CORPUS" >"$WORK/drop.json"
bytes=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["bytes"])' "$WORK/drop.json")

# Dovecot: its own base/state dirs in $WORK, mail as vmail (it refuses root), the same Maildir.
D=$WORK/dovecot
mkdir -p "$D/run" "$D/state"
chmod 755 "$WORK"
chown -R vmail:vmail "$WORK/po/spool/mail"
echo "alice@example.org:$DHASH::::::" >"$D/users"
dport=$(port)
cat >"$D/dovecot.conf" <<EOF
base_dir = $D/run
state_dir = $D/state
log_path = $D/dovecot.log
protocols = pop3
listen = 127.0.0.1
disable_plaintext_auth = no
ssl = no
mail_uid = vmail
mail_gid = vmail
first_valid_uid = 1
passdb {
  driver = passwd-file
  args = username_format=%u $D/users
}
userdb {
  driver = static
  args = home=$WORK/po/spool/mail/%d/%n mail=maildir:$WORK/po/spool/mail/%d/%n
}
service pop3-login {
  inet_listener pop3 {
    address = 127.0.0.1
    port = $dport
  }
  inet_listener pop3s {
    port = 0
  }
}
service anvil {
  chroot =
}
EOF
dovecot -c "$D/dovecot.conf"
trap 'doveadm -c "$D/dovecot.conf" stop 2>/dev/null; stopall; rm -rf "$WORK"' EXIT
pport=$(port)
bg tcpserver -R -H -l 0 127.0.0.1 "$pport" "$NODE" "$ROOT/dist/pop3d.js" -c "$CFG"
lport=$(port)
bg "$NODE" "$ROOT/dist/pop3d.js" -c "$CFG" --listen "127.0.0.1:$lport"
waitport "$pport"
waitport "$lport"
waitport "$dport"
WARMUP=${WARMUP:-5}
SERVERS="pop3d-tcpserver pop3d-listen dovecot"
portof() {
  case $1 in pop3d-tcpserver) echo "$pport" ;; pop3d-listen) echo "$lport" ;; *) echo "$dport" ;; esac
}

rows=$WORK/rows.json
: >"$rows"
# The first session of each (pop3d: new/ -> cur/ and counting, then the index as the other pop3d
# wrote it; Dovecot: its index), recorded.
for s in $SERVERS; do
  $BENCH pop3 --tag server=$s --tag run=first "$(portof $s)" alice@example.org pw 1 >>"$rows"
done
# The resident pop3d's warm-up sessions (not counted).
$BENCH pop3 "$lport" alice@example.org pw "$WARMUP" >/dev/null

# Warm: the three in turn, so a change in machine load hits all alike.
for s in $SERVERS; do : >"$WORK/warm-$s"; done
i=0
while [ $i -lt "$N" ]; do
  for s in $SERVERS; do $BENCH pop3 "$(portof $s)" alice@example.org pw 1 >>"$WORK/warm-$s"; done
  i=$((i + 1))
done
# Cold: page cache dropped before every session.
for s in $SERVERS; do : >"$WORK/cold-$s"; done
cold=yes
i=0
while [ $i -lt "$COLD_N" ]; do
  for s in $SERVERS; do
    if sync && echo 3 >/proc/sys/vm/drop_caches 2>/dev/null; then :; else cold=no; fi
    $BENCH pop3 "$(portof $s)" alice@example.org pw 1 >>"$WORK/cold-$s"
  done
  i=$((i + 1))
done
hash=$(FIELD=$(sed -n 's/^user alice@example.org "*\([^"]*\)"*$/\1/p' "$CFG") "$NODE" -e '
const f = process.env.FIELD, t = [];
(async () => {
  const verify = f.startsWith("{ARGON2ID}") ? ((a) => () => a.verify(f.slice(10), "pw"))(require(process.cwd() + "/node_modules/argon2"))
    : f.startsWith("scrypt$") ? () => { const p = f.split("$"); require("crypto").scryptSync("pw", Buffer.from(p[4], "base64url"), 32, { N: +p[1], r: +p[2], p: +p[3] }); } : null;
  if (!verify) { console.log("n/a"); return; }
  for (let i = 0; i < 12; i++) { const t0 = process.hrtime.bigint(); await verify(); t.push(Number(process.hrtime.bigint() - t0) / 1e6); }
  t.shift(); t.sort((a, b) => a - b); console.log(t[5].toFixed(1));
})();')

load=$(cut -d' ' -f1-3 /proc/loadavg)
python3 - "$WORK" "$COUNT" "$bytes" "$SCHEME" "$hash" "$cold" "$N" "$COLD_N" "$WARMUP" "$load" <<'EOF'
import json, statistics, sys
work, count, nbytes, scheme, hash_ms, cold, n, cold_n, warmup, load = sys.argv[1:]
def med(path, key="median"):
    rows = [json.loads(l) for l in open(path) if l.strip()]
    return round(statistics.median(r[key] for r in rows), 1), rows
first = {json.loads(l)["server"]: json.loads(l) for l in open(f"{work}/rows.json") if l.strip()}
print(f"\n### POP3 USER+PASS+STAT+UIDL+LIST+QUIT, {count} foreign messages ({int(nbytes) / 1e6:.0f} MB, LF, no sizes in the names), ms per session\n")
print(f"pop3d under tcpserver (a process per connection) and pop3d --listen (resident, after {warmup} warm-up sessions) vs Dovecot 2.3 pop3; hash: pop3d {scheme}, Dovecot {'SHA512-CRYPT' if scheme == 'scrypt' else 'the same field'}; one pop3d {scheme} verification in a warm node process: {hash_ms} ms; load average at the end {load}\n")
print("| server | first session | warm (median of %s) | warm login | warm uidl | warm list | cold (median of %s) | warm, no hash | cold, no hash |" % (n, cold_n))
print("|---|---|---|---|---|---|---|---|---|")
for s in ("pop3d-tcpserver", "pop3d-listen", "dovecot"):
    w, wr = med(f"{work}/warm-{s}")
    c, _ = med(f"{work}/cold-{s}")
    phase = lambda k: round(statistics.median(r[k] for r in wr), 1)
    nohash = lambda v: round(v - float(hash_ms), 1) if s.startswith("pop3d") and hash_ms != "n/a" else ""
    cs = c if cold == "yes" else f"{c} (cache not dropped: not permitted)"
    print(f"| {s} | {first[s]['median']} | {w} | {phase('login')} | {phase('uidl')} | {phase('list')} | {cs} | {nohash(w)} | {nohash(c) if cold == 'yes' else ''} |")
EOF
left=$(count_mail "$MAILDIR")
[ "$left" -eq "$COUNT" ] || echo "pop3-dovecot.sh: $left messages in $MAILDIR, expected $COUNT" >&2
