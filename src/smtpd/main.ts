/**
 * smtpd — Outpost's SMTP server (RFC 5321 with PIPELINING, SIZE, 8BITMIME, ENHANCEDSTATUSCODES,
 * SMTPUTF8, CHUNKING, STARTTLS, AUTH PLAIN/LOGIN), one session per process under inetd, tcpserver
 * or systemd, or many with --listen / LISTEN_FDS. See smtpd(8).
 *
 * Start-up is kept small (a process per connection): the password hashing and TLS code load only
 * when a session uses them. A config that cannot be loaded in inetd mode is answered with
 * `421 4.3.5 <host> configuration error` and the sysexits code (78 or 66).
 */
import { runDaemon } from '../lib/daemon';
import { mailCfgSource } from '../mail/health';
import { configErrorSession, smtpSession } from './server';

runDaemon('smtpd', 'Outpost SMTP server (RFC 5321): one session on stdin/stdout, or --listen HOST:PORT', mailCfgSource, smtpSession, configErrorSession);
