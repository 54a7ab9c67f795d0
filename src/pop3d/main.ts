/**
 * pop3d — the Outpost POP3 server (RFC 1939, 2449, 2595, 5034), one session per process under
 * inetd/tcpserver/systemd Accept=yes, or many with --listen / LISTEN_FDS (mail.cfg reread for the
 * next connection when it changed: lib/daemon.ts configReloader). See pop3d(8).
 *
 * The start path loads only the daemon skeleton, mail.cfg and this program's own small modules;
 * TLS files are read on the first STLS. A mail.cfg that cannot be loaded under inetd gets
 * "-ERR [SYS/TEMP] configuration error" and exit status 78 (EX_CONFIG) or 66 (EX_NOINPUT).
 */
import { runDaemon } from '../lib/daemon';
import { mailCfgSource } from '../mail/health';
import { pop3Session, refuseSession } from './serve';

runDaemon('pop3d', 'POP3 server (RFC 1939) for the Outpost mailboxes', mailCfgSource, pop3Session, refuseSession);
