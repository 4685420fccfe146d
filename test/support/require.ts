/**
 * Checks for what a test needs from the machine. In CI (CI=true) a missing
 * tool or privilege is a failure; elsewhere the test is skipped loudly.
 */
import { execFileSync } from 'node:child_process';

export function hasTool(name: string): boolean {
  try {
    execFileSync('sh', ['-c', `command -v ${name}`], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

/** Whether Debian's own python3 (where Debian's python3-* packages install) imports module `name`. */
export function hasPythonModule(name: string): boolean {
  try {
    execFileSync('/usr/bin/python3', ['-c', `import ${name}`], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

export const isRoot = typeof process.getuid === 'function' && process.getuid() === 0;
export const inCI = process.env.CI === 'true';

/**
 * Returns true when everything is there. When not: throws in CI, prints a
 * loud SKIP line (counted by the test runner) and returns false elsewhere.
 */
export function requireEnv(what: string, needs: { tools?: string[]; root?: boolean; pythonModules?: string[] }): boolean {
  const missing = (needs.tools ?? []).filter((t) => !hasTool(t));
  for (const m of needs.pythonModules ?? []) if (!hasPythonModule(m)) missing.push(`the Python module ${m} (Debian's /usr/bin/python3)`);
  if (needs.root && !isRoot) missing.push('root privileges');
  if (missing.length === 0) return true;
  const message = `${what} needs ${missing.join(', ')}`;
  if (inCI) throw new Error(`${message} (missing in CI: install it in .ci/run)`);
  console.log(`SKIP: ${message} — install it (see .ci/run) to run this test`);
  return false;
}
