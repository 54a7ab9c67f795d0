#!/usr/bin/env python3
"""bench.py -- the client side of the smtpd/pop3d benchmarks (bench/smtpd-pop3d/*.sh).

Measures only; never asserts a timing. Every subcommand talks to 127.0.0.1 and prints its result
on stdout as one line of JSON (the shell scripts turn those into Markdown tables). A protocol
error (a reply that is not 2xx / +OK) stops the run with exit status 1 and the reply on stderr.

  latency N NAME=PORT[:QUIT]...
                             N rounds of sequential connections, one to each target in turn:
                             connect() -> first banner line (ms); then QUIT (if given) and wait
                             for the server to close, so no two server processes overlap.
                             -> per target {"program","median","p90","min","max","n"}
  pop3 PORT USER PASS N      N sequential POP3 sessions USER/PASS/STAT/UIDL/LIST/QUIT (poplib);
                             wall time per session in ms, and the median of each phase.
                             -> {"first","median","p90","messages","banner","login",...}
  send PORT FROM TO BYTES    one message of about BYTES bytes (76-char lines) with smtplib.
                             -> {"seconds","bytes"}
  retr PORT USER PASS N      RETR N over a raw socket, the body counted and thrown away.
                             -> {"seconds","bytes"}
  maildrop DIR COUNT BYTES   writes COUNT messages of BYTES bytes (CRLF) into DIR/new with
                             Maildir names carrying ,S= and ,W= (as smtpd delivers them).
  foreign DIR COUNT CORPUS   writes COUNT messages into DIR/new as a foreign MDA stores them:
                             the files of CORPUS (../shared/corpus) in turn, LF line ends,
                             Postfix-virtual names without ,S=/,W= (pop3d must count them).
  table TITLE COLS...        reads JSON rows (objects) on stdin, prints a Markdown table of COLS.

Options before a subcommand's arguments: --tag KEY=VALUE (repeatable) adds KEY to the result
object, so the shell can label rows.
"""
import json
import os
import poplib
import smtplib
import socket
import statistics
import sys
import time


def fail(msg):
    sys.stderr.write(f"bench.py: {msg}\n")
    sys.exit(1)


def pct(samples, p):
    """The p-th percentile (nearest rank) of samples."""
    s = sorted(samples)
    k = max(0, min(len(s) - 1, int(round(p / 100.0 * len(s) + 0.5)) - 1))
    return s[k]


def summary(samples):
    return {
        "n": len(samples),
        "median": round(statistics.median(samples), 2),
        "p90": round(pct(samples, 90), 2),
        "min": round(min(samples), 2),
        "max": round(max(samples), 2),
    }


def banner_once(port, quit_cmd):
    """One connection: ms from connect() to the first banner line; then QUIT and wait for close."""
    t0 = time.perf_counter()
    s = socket.create_connection(("127.0.0.1", port))
    buf = b""
    while b"\n" not in buf:
        chunk = s.recv(4096)
        if not chunk:
            fail(f"port {port}: closed before a banner (got {buf!r})")
        buf += chunk
    ms = (time.perf_counter() - t0) * 1000.0
    if quit_cmd:
        s.sendall(quit_cmd.encode() + b"\r\n")
    while s.recv(4096):
        pass
    s.close()
    return ms


def latency(n, targets):
    """targets: NAME=PORT[:QUIT]... measured in turn, round after round (so a change in machine
    load hits every target alike). Returns one summary per target, with "program": NAME."""
    parsed = []
    for t in targets:
        name, _, rest = t.partition("=")
        port, _, quit_cmd = rest.partition(":")
        parsed.append((name, int(port), quit_cmd or None))
    samples = {name: [] for name, _, _ in parsed}
    for _ in range(n):
        for name, port, quit_cmd in parsed:
            samples[name].append(banner_once(port, quit_cmd))
    return [{"program": name, **summary(samples[name])} for name, _, _ in parsed]


def pop3(port, user, password, n):
    """n sessions; per session the wall time and its phases (banner, login, STAT, UIDL, LIST,
    QUIT) in ms. Median/p90 of the whole session are over sessions 2..n (the first is apart)."""
    phases = ("banner", "login", "stat", "uidl", "list", "quit")
    times, parts = [], {k: [] for k in phases}
    count = 0
    for _ in range(n):
        t = [time.perf_counter()]
        p = poplib.POP3("127.0.0.1", port)
        t.append(time.perf_counter())
        p.user(user)
        p.pass_(password)
        t.append(time.perf_counter())
        count, _size = p.stat()
        t.append(time.perf_counter())
        uidls = p.uidl()[1]
        t.append(time.perf_counter())
        lst = p.list()[1]
        t.append(time.perf_counter())
        p.quit()
        t.append(time.perf_counter())
        times.append((t[-1] - t[0]) * 1000.0)
        for i, k in enumerate(phases):
            parts[k].append((t[i + 1] - t[i]) * 1000.0)
        if len(uidls) != count or len(lst) != count:
            fail(f"STAT says {count} but UIDL gave {len(uidls)} and LIST {len(lst)} lines")
    out = summary(times[1:] if n > 1 else times)
    out["first"] = round(times[0], 2)
    out["messages"] = count
    for k in phases:
        out[k] = round(statistics.median(parts[k][1:] if n > 1 else parts[k]), 2)
    return out


def body_lines(nbytes):
    """About nbytes of message text: 76 printable characters + CRLF per line."""
    line = (b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ" * 2)[:76] + b"\r\n"
    return line * max(1, nbytes // len(line))


def send(port, sender, rcpt, nbytes):
    msg = b"From: <%s>\r\nTo: <%s>\r\nSubject: bench %d bytes\r\n\r\n" % (sender.encode(), rcpt.encode(), nbytes)
    msg += body_lines(nbytes)
    t0 = time.perf_counter()
    with smtplib.SMTP("127.0.0.1", port, timeout=600) as s:
        s.ehlo("bench.example")
        s.sendmail(sender, [rcpt], msg)
    return {"seconds": round(time.perf_counter() - t0, 3), "bytes": len(msg)}


def retr(port, user, password, which):
    s = socket.create_connection(("127.0.0.1", port))
    f = s.makefile("rb", buffering=1 << 16)

    def expect_ok():
        line = f.readline()
        if not line.startswith(b"+OK"):
            fail(f"RETR bench: {line!r}")
        return line

    t0 = time.perf_counter()
    expect_ok()
    for cmd in (f"USER {user}", f"PASS {password}", f"RETR {which}"):
        s.sendall(cmd.encode() + b"\r\n")
        expect_ok()
    total = 0
    while True:
        line = f.readline()
        if not line:
            fail("RETR bench: connection closed in the middle of the message")
        if line == b".\r\n":
            break
        total += len(line)
    seconds = time.perf_counter() - t0
    s.sendall(b"QUIT\r\n")
    expect_ok()
    s.close()
    return {"seconds": round(seconds, 3), "bytes": total}


def maildrop(d, count, nbytes):
    for sub in ("tmp", "new", "cur"):
        os.makedirs(os.path.join(d, sub), mode=0o700, exist_ok=True)
    now = int(time.time())
    for i in range(count):
        msg = b"From: <bench@example.org>\r\nSubject: message %d\r\n\r\n" % i
        msg += body_lines(max(0, nbytes - len(msg)))
        name = "%d.M%06dP%dQ%d.bench.example,S=%d,W=%d" % (now, i % 1000000, os.getpid(), i + 1, len(msg), len(msg))
        with open(os.path.join(d, "new", name), "wb") as fh:
            fh.write(msg)
    return {"messages": count, "dir": d}


def foreign(d, count, corpus):
    for sub in ("tmp", "new", "cur"):
        os.makedirs(os.path.join(d, sub), mode=0o700, exist_ok=True)
    names = sorted(f for f in os.listdir(corpus) if os.path.isfile(os.path.join(corpus, f)) and f != "MANIFEST.tsv")
    msgs = []
    for f in names:
        with open(os.path.join(corpus, f), "rb") as fh:
            msgs.append(fh.read().replace(b"\r\n", b"\n"))
    now = int(time.time()) - count
    total = 0
    for i in range(count):
        m = msgs[i % len(msgs)]
        name = "%d.V801I%xM%d.bench.example" % (now + i, i + 1, i % 1000000)
        with open(os.path.join(d, "new", name), "wb") as fh:
            fh.write(m)
        total += len(m)
    return {"messages": count, "bytes": total, "dir": d}


def table(title, cols):
    rows = [json.loads(l) for l in sys.stdin if l.strip()]
    print(f"\n### {title}\n")
    print("| " + " | ".join(cols) + " |")
    print("|" + "|".join("---" for _ in cols) + "|")
    for r in rows:
        print("| " + " | ".join(str(r.get(c, "")) for c in cols) + " |")
    return None


def main(argv):
    if len(argv) < 2:
        fail(__doc__)
    cmd, a = argv[1], argv[2:]
    tags = {}
    while len(a) >= 2 and a[0] == "--tag":
        k, _, v = a[1].partition("=")
        tags[k] = v
        a = a[2:]
    if cmd == "latency":
        res = latency(int(a[0]), a[1:])
    elif cmd == "pop3":
        res = pop3(int(a[0]), a[1], a[2], int(a[3]))
    elif cmd == "send":
        res = send(int(a[0]), a[1], a[2], int(a[3]))
    elif cmd == "retr":
        res = retr(int(a[0]), a[1], a[2], int(a[3]))
    elif cmd == "maildrop":
        res = maildrop(a[0], int(a[1]), int(a[2]))
    elif cmd == "foreign":
        res = foreign(a[0], int(a[1]), a[2])
    elif cmd == "table":
        res = table(a[0], a[1:])
    else:
        fail(f"unknown subcommand {cmd}")
    for r in res if isinstance(res, list) else [res] if res is not None else []:
        print(json.dumps({**tags, **r}))


if __name__ == "__main__":
    try:
        main(sys.argv)
    except (OSError, smtplib.SMTPException, poplib.error_proto) as e:
        fail(f"{type(e).__name__}: {e}")
