// banner.js -- the reference for latency.sh: a bare node process that prints one line and exits.
process.stdout.write("220 banner.js ready\r\n");
