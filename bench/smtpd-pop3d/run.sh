#!/bin/sh
# run.sh -- the local post office benchmarks (issue 2, item 9), each printing a Markdown table:
#   latency.sh   connect→banner under tcpserver / systemd-socket-activate vs a bare node process
#   startpath.sh what each eagerly loaded module costs on that start path (bundle variants)
#   load.sh      smtp-source 10 × 200 messages into smtpd (tcpserver -c 20, --listen)
#   pop3-10k.sh  POP3 login+STAT+UIDL+LIST+QUIT on a 10,000-message maildrop
#   rss.sh       peak RSS of smtpd and pop3d for 0, 10 MB and 100 MB messages
#   pop3-dovecot.sh  pop3d vs Dovecot pop3 on 10,000 foreign (LF) messages, warm and cold
# Results and their discussion: bench/RESULTS.md.
dir=$(dirname "$0")
status=0
for b in latency startpath load pop3-10k rss pop3-dovecot; do
  sh "$dir/$b.sh" || { echo "$dir/$b.sh: FAILED" >&2; status=1; }
done
exit $status
