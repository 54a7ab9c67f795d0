#!/bin/sh
# startpath.sh -- where the per-connection start time of smtpd and pop3d goes. Builds variants of
# both bundles in a temp dir (startpath.mjs: as is; proper-lockfile loaded lazily; node:tls,
# node:crypto, node:fs/promises loaded lazily; commander replaced by util.parseArgs; all three),
# then measures connect->banner of each under systemd-socket-activate --inetd, interleaved with
# banner.js (a bare node process that prints one line), STARTPATH_N rounds (default 100).
# The difference between a variant and "asis" is what that module costs on the start path.
# Also prints the bundle sizes and the number of Node built-in modules loaded by the banner.
# Measures only: dist/ and src/ are not touched.
# shellcheck source=bench/smtpd-pop3d/common.sh
. "$(dirname "$0")/common.sh"
need systemd-socket-activate "apt-get install systemd"
N=${STARTPATH_N:-100}
postoffice "$WORK/po"
"$NODE" "$B/startpath.mjs" "$WORK/variants"

# Built-in modules a program loads up to its exit after QUIT (beyond what node itself loads).
builtins() {
  printf 'QUIT\r\n' | "$NODE" -r "$B/modcount.js" "$@" 2>&1 >/dev/null | tail -n 1
}

targets=""
rows=$WORK/startpath.json
: >"$rows"
p=$(port)
bg systemd-socket-activate --inetd -a -l "127.0.0.1:$p" "$NODE" "$B/banner.js"
waitport "$p"
targets="banner.js=$p"
for d in smtpd pop3d; do
  for v in asis lazylock lazytls nocommander all; do
    f=$WORK/variants/$d-$v.js
    p=$(port)
    bg systemd-socket-activate --inetd -a -l "127.0.0.1:$p" "$NODE" "$f" -c "$CFG"
    waitport "$p"
    targets="$targets $d-$v=$p:QUIT"
    python3 -c 'import json,sys; print(json.dumps({"program":sys.argv[1],"bundle KB":round(int(sys.argv[2])/1024),"built-ins loaded":int(sys.argv[3])}))' \
      "$d-$v" "$(wc -c <"$f")" "$(builtins "$f" -c "$CFG")" >>"$WORK/sizes.json"
  done
done
sleep 0.5
# shellcheck disable=SC2086
$BENCH latency "$N" $targets >"$rows"
stopall

python3 -c '
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
sizes = {r["program"]: r for r in map(json.loads, open(sys.argv[2]))}
base = {r["program"]: r["median"] for r in rows}
for r in rows:
    d = r["program"].split("-")[0]
    r["ratio"] = "%.2f" % (r["median"] / base["banner.js"])
    r["saves ms"] = "%.1f" % (base[d + "-asis"] - r["median"]) if d + "-asis" in base else "-"
    r.update(sizes.get(r["program"], {}))
    print(json.dumps(r))
' "$rows" "$WORK/sizes.json" | $BENCH table "start path: connect→banner by bundle variant, ms (systemd-socket-activate --inetd, $N interleaved rounds; saves = asis median − variant median)" program median p90 min ratio "saves ms" "bundle KB" "built-ins loaded"
