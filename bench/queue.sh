#!/bin/bash
# queue.sh — benchmark: 100 queued corpus messages relayed over an emulated 256 kbit/s, 300 ms
# RTT link to smtp-sink, queue-run (1/4/8/12/16 connections) against a real Postfix relay flushing the
# same messages over the same link. Prints a table (link-seconds, completion, link bytes, ratio to
# Postfix) and the byte floor. Standalone: builds queue-run, bundles bench/queue-bench.ts.
#
#   bash bench/queue.sh            (from the repository root, as root; needs postfix installed)
#   QUEUE_BENCH_CONNS=4 bash bench/queue.sh     (only some connection counts)
#
# Exit status: 0 when the table was printed, 1 when a run failed, 77 when a peer is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
for t in smtp-sink postfix postqueue; do
  command -v "$t" >/dev/null || { echo "queue.sh: $t is missing; run: bash .ci/install-peers" >&2; exit 77; }
done
unset NODE_EXTRA_CA_CERTS
node build.mjs queue-run
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
npx esbuild bench/queue-bench.ts --bundle --platform=node --format=cjs --target=node20 \
  --external:nodemailer --log-level=warning --outfile="$out/queue-bench.js"
node "$out/queue-bench.js"
