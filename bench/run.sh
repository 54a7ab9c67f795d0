#!/bin/sh
# run.sh -- `make bench`: runs every benchmark in bench/ one after another and prints their tables
# (Markdown). A benchmark is bench/*.sh (except this file) or bench/*/run.sh; an executable one runs
# under its own #! line, any other under sh. Benchmarks measure and print; they never assert
# timings. One that fails is reported and the others still run; the exit status is then 1.
# NODE_EXTRA_CA_CERTS is unset (on Node 20 it adds ~50 ms to every node start).
unset NODE_EXTRA_CA_CERTS
cd "$(dirname "$0")/.." || exit 1
echo "# Outpost benchmarks — $(date -u +%Y-%m-%dT%H:%MZ), $(uname -sr), $(nproc) CPUs, node $(node --version)"
status=0
for b in bench/*.sh bench/*/run.sh; do
  if [ ! -f "$b" ] || [ "$b" = bench/run.sh ]; then continue; fi
  echo
  echo "## $b"
  if [ -x "$b" ]; then "./$b"; else sh "$b"; fi || {
    echo "$b: FAILED" >&2
    status=1
  }
done
exit $status
