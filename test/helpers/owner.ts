/**
 * owner — a real unprivileged system user for the tests that run as root the way an install does
 * (mail_owner, mail.cfg(5)): made with useradd, removed with userdel afterwards.
 *
 * Needs root (CI runs the suite as root); a test run by another user fails saying so, never skips.
 */
import { execFileSync } from 'node:child_process';
import { lookupUser } from '../../src/lib/privilege';
import { requireTool } from './postoffice';

export interface SystemUser {
  name: string;
  uid: number;
  gid: number;
  /** userdel (when this helper made it). Never throws. */
  remove(): void;
}

/**
 * The system user `name` (`useradd -r -M -s /usr/sbin/nologin NAME`), made now unless a crashed
 * run left it. @throws when not root or useradd fails.
 */
export function makeSystemUser(name: string): SystemUser {
  if (process.getuid?.() !== 0) throw new Error(`this test needs root (it makes the user ${name} and runs the programs as root, as an install does); run the suite as root, as CI does`);
  if (!lookupUser(name)) execFileSync(requireTool('useradd'), ['-r', '-M', '-s', '/usr/sbin/nologin', name], { stdio: 'pipe' });
  const a = lookupUser(name);
  if (!a) throw new Error(`useradd ${name} made no /etc/passwd entry`);
  return {
    ...a,
    remove() {
      try {
        execFileSync('userdel', [name], { stdio: 'ignore' });
      } catch {
        /* already gone */
      }
    },
  };
}
