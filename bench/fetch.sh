#!/bin/sh
# fetch.sh -- benchmark: Outpost fetch (POP3, IMAP+COMPRESS) vs fetchmail (POP3, IMAP) pulling the
# corpus (188 messages < 150 KB) from a throw-away Dovecot through the link proxy at 256 kbit/s and
# 300 ms RTT (BENCH_RATE=bytes/s, BENCH_RTT=ms to change). Prints a Markdown table. Standalone:
# builds dist/fetch.js and bundles bench/fetch.ts itself. Needs root (Dovecot) and the peers of
# .ci/install-peers (dovecot-core, dovecot-pop3d, dovecot-imapd, fetchmail). Takes ~4 minutes.
# "sh bench/fetch.sh idle": a run that finds nothing on a 3,000-message mailbox (~3 minutes;
# BENCH_CLIENTS=Outpost for ours only, BENCH_TRACE=1 for every chunk through the link, timed).
set -e
unset NODE_EXTRA_CA_CERTS
cd "$(dirname "$0")/.."
node build.mjs fetch
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
node_modules/.bin/esbuild bench/fetch.ts --bundle --platform=node --format=cjs --target=node20 --external:imapflow --log-level=warning --outfile="$out/fetch-bench.js"
node "$out/fetch-bench.js" "$@"
