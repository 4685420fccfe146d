/**
 * The console's HTTPS certificate: self-signed, made by openssl at the first
 * start with HTTPS (`api.httpsListen`), kept in `<state>/tls/` (key 0600) and
 * reused afterwards, as PiKVM does out of the box. An operator who has a
 * certificate of their own replaces the two files.
 */
import { execFileSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, readFileSync, renameSync, rmSync } from 'node:fs';
import { hostname } from 'node:os';
import { isIP } from 'node:net';
import { join } from 'node:path';
import { DeviceError } from '../../src/errors.ts';

export interface TlsFiles {
  key: string;
  cert: string;
  keyFile: string;
  certFile: string;
  /** Made now (true) or found from an earlier start. */
  created: boolean;
}

/** The names the certificate is made out to: this machine's name, localhost, and the listen address when it is a specific one. */
export function certificateNames(listenHost: string): string[] {
  const names = new Set(['DNS:localhost', 'IP:127.0.0.1', 'IP:::1']);
  const h = hostname();
  if (h && /^[A-Za-z0-9.-]+$/.test(h)) names.add(`DNS:${h}`);
  const host = listenHost.replace(/^\[|\]$/g, '');
  if (host && host !== '0.0.0.0' && host !== '::') names.add(isIP(host) ? `IP:${host}` : `DNS:${host}`);
  return [...names];
}

/**
 * The key and certificate in `<stateDir>/tls`, made with openssl (an EC
 * P-256 key, ten years) when absent.
 * @throws DeviceError openssl is missing or fails.
 */
export function ensureTlsCertificate(stateDir: string, listenHost: string): TlsFiles {
  const dir = join(stateDir, 'tls');
  const keyFile = join(dir, 'key.pem');
  const certFile = join(dir, 'cert.pem');
  let created = false;
  if (!existsSync(keyFile) || !existsSync(certFile)) {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    // Made under temporary names and renamed: a crash half-way leaves no key without its certificate.
    const tmpKey = `${keyFile}.new`;
    const tmpCert = `${certFile}.new`;
    const h = hostname();
    try {
      execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', tmpKey, '-out', tmpCert, '-days', '3650', '-subj', `/O=dpsr/CN=${/^[A-Za-z0-9.-]+$/.test(h) ? h : 'dpsr'}`, '-addext', `subjectAltName=${certificateNames(listenHost).join(',')}`], { stdio: 'pipe' });
      chmodSync(tmpKey, 0o600);
      renameSync(tmpCert, certFile);
      renameSync(tmpKey, keyFile);
    } catch (e) {
      rmSync(tmpKey, { force: true });
      rmSync(tmpCert, { force: true });
      const err = e as NodeJS.ErrnoException & { stderr?: Buffer };
      throw new DeviceError(err.code === 'ENOENT' ? 'openssl is not installed: it makes the console\'s HTTPS certificate' : `openssl could not make the HTTPS certificate: ${err.stderr?.toString().trim() || err.message}`, {
        hint: err.code === 'ENOENT' ? 'install it (apt-get install openssl, or scripts/install-tools.sh), or put key.pem and cert.pem of your own in ' + dir : `put key.pem and cert.pem of your own in ${dir}, or leave api.httpsListen out`,
      });
    }
    created = true;
  }
  return { key: readFileSync(keyFile, 'utf8'), cert: readFileSync(certFile, 'utf8'), keyFile, certFile, created };
}
