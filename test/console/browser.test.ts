/**
 * The operator console in a real browser: Debian's chromium driven by
 * playwright-core, against a daemon on the simulated rig. It logs in (with
 * the keyboard), sees both bays, browses to a changed file and sees its ≠,
 * sees a deleted file only in the standby's panel, downloads a folder and
 * compares it, restores a file, starts a sync and watches its progress, is
 * refused a failover without the typed confirmation, and cannot be made to
 * act from another site's page. Screenshots of every page land in
 * test-output/console/ (desktop and phone sizes).
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync, readdirSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { join } from 'node:path';
import type { AddressInfo } from 'node:net';
import { fileURLToPath } from 'node:url';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import { makeDaemon, idle, waitFor, waitJob, type TestDaemon } from '../controller/support/harness.ts';
import { requireEnv, isRoot } from '../support/require.ts';
import { imagePartitions, removeExt4File, tempDir, writeExt4File } from '../support/images.ts';

const CHROMIUM = '/usr/bin/chromium';
const ok = requireEnv('the console\'s browser tests', { tools: [CHROMIUM, 'debugfs', 'sfdisk', 'fls', 'icat', 'ifind', 'tar'] });
const SHOTS = fileURLToPath(new URL('../../test-output/console/', import.meta.url));
const tmp = tempDir('dpsr-console-');

let d: TestDaemon;
let browser: Browser;
let context: BrowserContext;
let page: Page;
let password: string;
/** Script errors of the console's pages: any fails the last test. */
const pageErrors: string[] = [];

async function shot(name: string, p: Page = page): Promise<void> {
  await p.screenshot({ path: join(SHOTS, `${name}.png`), fullPage: true });
}

async function status() {
  return (await d.api('GET', '/api/status')).body;
}

test.before(async () => {
  if (!ok) return;
  mkdirSync(SHOTS, { recursive: true });
  // A bridge of 16 MiB/s makes a sync of the 64 MiB drives take seconds: long enough to watch its progress.
  d = await makeDaemon({ sim: { bridgeMiBps: 16 } });
  await idle(d);
  await waitFor(async () => ((await status()).standbyState === 'consistent' ? true : undefined), 30_000, 'a consistent standby');
  password = readFileSync(join(d.dir, 'admin-password'), 'utf8').trim();
  const { chromium } = await import('playwright-core');
  // Root (CI, the appliance's build machine) needs chromium's sandbox off.
  browser = await chromium.launch({ executablePath: CHROMIUM, args: isRoot ? ['--no-sandbox'] : [] });
  context = await browser.newContext({ viewport: { width: 1280, height: 860 }, acceptDownloads: true });
  page = await context.newPage();
  context.on('weberror', (e) => pageErrors.push(e.error().message));
});
test.after(async () => {
  await browser?.close();
  await d?.stop();
});

test('the login refuses a wrong password and takes the right one, with the keyboard only', async () => {
  if (!ok) return;
  await page.goto(`${d.url}/`);
  await page.getByLabel('Admin password').waitFor();
  await shot('login');
  await page.keyboard.type('not-the-password');
  await page.keyboard.press('Enter');
  await page.getByRole('alert').filter({ hasText: 'the password is wrong' }).waitFor();
  await page.getByLabel('Admin password').fill('');
  await page.getByLabel('Admin password').focus();
  await page.keyboard.type(password);
  await page.keyboard.press('Enter');
  await page.getByRole('heading', { name: 'Overview' }).waitFor();
  const cookies = await context.cookies();
  const c = cookies.find((x) => x.name === 'dpsr_session');
  assert.ok(c, 'the session cookie is set');
  assert.is(c!.httpOnly, true);
  assert.is(c!.sameSite, 'Strict');
  assert.is(await page.evaluate(() => document.cookie), '', 'the page\'s script cannot read the session cookie');
});

test('the overview shows both bays with their roles, the standby\'s state and the last sync', async () => {
  if (!ok) return;
  const bayA = page.getByRole('region', { name: /Bay A/ });
  const bayB = page.getByRole('region', { name: /Bay B/ });
  await bayA.getByText('active (system drive)').waitFor();
  await bayB.getByText('standby (backup)').waitFor();
  await bayB.getByText('consistent: a complete backup').waitFor();
  assert.match(await page.getByTestId('last-sync').innerText(), /clone done .* ago/);
  await page.getByText('live', { exact: true }).waitFor();
  await shot('overview');
});

test('while the host runs the explorer shows the standby alone, and the active panel says why and what to do', async () => {
  if (!ok) return;
  assert.is((await status()).host.power, 'on');
  // Through the keyboard: Tab from the top of the page to the Explorer link, then Enter.
  await page.goto(`${d.url}/#/overview`);
  await page.getByRole('heading', { name: 'Overview' }).waitFor();
  for (let i = 0; i < 10 && (await page.evaluate(() => document.activeElement?.textContent)) !== 'Explorer'; i++) await page.keyboard.press('Tab');
  await page.keyboard.press('Enter');
  await page.getByRole('heading', { name: 'Explorer' }).waitFor();
  const note = page.getByTestId('active-unavailable');
  await note.getByText(/Not shown: the active drive \(bay A\) cannot be read while the host is running/).waitFor();
  await note.getByText(/What to do: .*shut it down/).waitFor();
  await page.getByRole('button', { name: 'Shut the host down' }).waitFor();
  // The standby's folders are listed, not compared, and open like the side-by-side ones.
  await page.goto(`${d.url}/#/explorer?partition=2&path=/`);
  await page.getByRole('status').filter({ hasText: /entries on the standby \(not compared\)/ }).waitFor();
  const etc = page.locator('.row[data-name="etc"]');
  assert.is(await etc.getAttribute('data-state'), 'unknown');
  assert.is(await etc.locator('.cell.active.empty').count(), 1, 'nothing in the active panel');
  await etc.locator('.cell.standby').getByRole('link', { name: 'etc/' }).click();
  await page.locator('.row[data-name="hostname"] .cell.standby').waitFor();
  assert.is((await page.locator('.row[data-name="hostname"] .mark').innerText()).trim(), '', 'no mark: nothing was compared');
  await shot('explorer-standby-only');
});

test('with the host off, a changed file has its ≠ and a deleted file shows only in the standby panel', async () => {
  if (!ok) return;
  assert.is((await d.api('POST', '/api/sim/host/power', { power: 'off' })).status, 200);
  await waitFor(async () => ((await status()).host.power === 'off' ? true : undefined), 10_000, 'host off');
  const active = imagePartitions((await status()).drives.A.path);
  writeExt4File(active, 1, '/etc/hostname', 'renamed-host\n', tmp);
  writeExt4File(active, 1, '/etc/motd', 'new on the active drive\n', tmp);
  removeExt4File(active, 1, '/etc/os-release', tmp);

  await page.goto(`${d.url}/#/explorer?partition=2&path=/`);
  await page.getByRole('link', { name: 'etc/', exact: true }).first().click();
  await page.locator('.crumbs').getByText('etc').waitFor();
  const changed = page.locator('.row[data-name="hostname"]');
  await changed.waitFor();
  assert.is(await changed.getAttribute('data-state'), 'changed');
  assert.is((await changed.locator('.mark').innerText()).trim(), '≠');
  assert.ok(await changed.locator('.cell.active').getByText('hostname').isVisible());
  assert.ok(await changed.locator('.cell.standby').getByText('hostname').isVisible());

  const deleted = page.locator('.row[data-name="os-release"]');
  assert.is(await deleted.getAttribute('data-state'), 'only-standby');
  assert.is(await deleted.locator('.cell.active.empty').count(), 1, 'nothing in the active panel');
  assert.ok(await deleted.locator('.cell.standby').getByText('os-release').isVisible(), 'there in the standby panel');
  assert.ok(await deleted.getByRole('button', { name: 'restore os-release from the standby' }).isVisible());

  const added = page.locator('.row[data-name="motd"]');
  assert.is(await added.getAttribute('data-state'), 'only-active');
  assert.is(await added.locator('.cell.standby.empty').count(), 1);

  // The whole-tree walk from the root finds the same three, with links to their folder.
  await page.goto(`${d.url}/#/explorer?partition=2&path=/`);
  // Before it, a folder on both drives is not called the same: its contents are not compared.
  const etc = page.locator('.row[data-name="etc"]');
  await etc.waitFor();
  assert.is(await etc.getAttribute('data-contents'), 'not-compared');
  assert.is((await etc.locator('.mark').innerText()).trim(), '?');
  await page.getByRole('button', { name: 'Find all differences' }).click();
  await page.getByRole('status').filter({ hasText: /^3 differences/ }).waitFor({ timeout: 30_000 });
  const walk = page.locator('ul.walk-rows li');
  assert.equal(await walk.evaluateAll((lis) => lis.map((li) => [li.getAttribute('data-state'), li.querySelector('a')!.textContent])), [
    ['changed', '/etc/hostname'],
    ['only-active', '/etc/motd'],
    ['only-standby', '/etc/os-release'],
  ]);
  // The finished walk marks the folder whose contents differ, and offers to restore it.
  await page.locator('.row[data-name="etc"][data-contents="differ"]').waitFor();
  assert.is((await etc.locator('.mark').innerText()).trim(), '≠');
  assert.ok(await etc.getByRole('button', { name: 'restore etc from the standby' }).isVisible());
  await shot('explorer-walk');
  await walk.first().getByRole('link').click();
  await page.locator('.crumbs').getByText('etc').waitFor();
  await page.locator('.row[data-name="hostname"]').waitFor();
  await shot('explorer');
  const phone = await context.newPage();
  await phone.setViewportSize({ width: 390, height: 844 });
  await phone.goto(page.url());
  await phone.locator('.row[data-name="hostname"]').waitFor();
  await shot('explorer-phone', phone);
  await phone.goto(`${d.url}/#/overview`);
  await phone.getByRole('region', { name: /Bay B/ }).waitFor();
  await shot('overview-phone', phone);
  await phone.close();
});

test('a folder downloads from the standby as a tar holding what the standby holds', async () => {
  if (!ok) return;
  await page.goto(`${d.url}/#/explorer?partition=2&path=/`);
  const link = page.getByRole('link', { name: 'download the folder etc from the standby drive as tar' });
  const [download] = await Promise.all([page.waitForEvent('download'), link.click()]);
  assert.is(download.suggestedFilename(), 'etc.tar');
  const file = join(tmp, 'etc.tar');
  await download.saveAs(file);
  const out = join(tmp, 'etc-out');
  mkdirSync(out);
  execFileSync('tar', ['-xf', file, '-C', out]);
  const root = readdirSync(out).includes('etc') ? join(out, 'etc') : out;
  const names = readdirSync(root).sort();
  const listing = (await d.api('GET', '/api/browse?partition=2&path=/etc')).body.rows.filter((r: { standby?: unknown }) => r.standby).map((r: { name: string }) => r.name).sort();
  assert.equal(names, listing, 'the archive holds the standby\'s side of the folder (with the deleted file, without the new one)');
  for (const n of names) {
    const r = await fetch(`${d.url}/api/browse/file?side=standby&partition=2&path=/etc/${n}`, { headers: { authorization: `Bearer ${d.token}` } });
    assert.ok(Buffer.from(await r.arrayBuffer()).equals(readFileSync(join(root, n))), `${n} has the standby's bytes`);
  }
  assert.is(readFileSync(join(root, 'hostname'), 'utf8'), 'dpsr-sim-host\n');
});

test('Restore brings the standby\'s version of a file back onto the active drive', async () => {
  if (!ok) return;
  if (!isRoot) {
    console.log('SKIP: restoring files onto the active drive mounts its partition: run as root to test the Restore button end to end');
    return;
  }
  await page.goto(`${d.url}/#/explorer?partition=2&path=/etc`);
  await page.getByRole('button', { name: 'restore hostname from the standby' }).click();
  const dialog = page.getByRole('dialog', { name: 'Restore onto the active drive?' });
  await dialog.getByText('/etc/hostname').waitFor();
  await shot('explorer-restore-dialog');
  await dialog.getByRole('button', { name: 'Restore', exact: true }).click();
  const started = page.getByRole('status').filter({ hasText: 'Restore started' });
  await started.waitFor();
  const id = (await started.getByRole('link').innerText()).replace(/^job /, '');
  const job = await waitJob(d, id, 60_000);
  assert.is(job.state, 'done', JSON.stringify(job.error));
  const r = await fetch(`${d.url}/api/browse/file?side=active&partition=2&path=/etc/hostname`, { headers: { authorization: `Bearer ${d.token}` } });
  assert.is(await r.text(), 'dpsr-sim-host\n', 'the active drive holds the backup\'s version again');
  // The explorer reads both drives again when the job ends.
  await page.locator('.row[data-name="hostname"][data-state="same"]').waitFor();
  assert.is((await page.locator('.row[data-name="hostname"] .mark').innerText()).trim(), '', 'the ≠ is gone');
  assert.is(await page.locator('.row[data-name="os-release"]').getAttribute('data-state'), 'only-standby', 'the other difference stays');
  await shot('explorer-after-restore');
});

test('a sync started from Actions shows its progress live on the overview, then the new last sync', async () => {
  if (!ok) return;
  await page.goto(`${d.url}/#/actions`);
  await page.getByRole('button', { name: 'Start sync' }).click();
  await page.getByRole('heading', { name: 'Overview' }).waitFor();
  const bar = page.getByRole('progressbar', { name: 'sync progress' });
  await bar.waitFor({ timeout: 20_000 });
  const seen: number[] = [];
  const job = (await status()).job;
  assert.is(job?.kind, 'sync');
  await shot('overview-sync-running');
  while ((await bar.count()) > 0) {
    const v = Number(await bar.getAttribute('aria-valuenow').catch(() => null));
    if (Number.isFinite(v)) seen.push(v);
    await page.waitForTimeout(100);
  }
  assert.ok(seen.some((v) => v > 0 && v < 100), `progress moved between 0 and 100 while the sync ran (saw ${seen.join(', ')})`);
  await page.getByTestId('last-sync').getByText(/^sync done/).waitFor();
  const done = await waitJob(d, job.id);
  assert.is(done.state, 'done');
  await page.goto(`${d.url}/#/explorer?partition=2&path=/etc`);
  await page.locator('.row[data-name="hostname"]').waitFor();
  assert.is(await page.locator('.row[data-state="changed"]').count(), 0, 'no ≠ after the sync');
  assert.is(await page.locator('.row[data-name="os-release"]').count(), 0, 'the deletion reached the backup');
});

test('a failover is refused without the typed confirmation, and nothing moves', async () => {
  if (!ok) return;
  const before = await status();
  await page.goto(`${d.url}/#/actions`);
  const failover = page.getByRole('region', { name: 'Failover' });
  await failover.getByRole('button', { name: 'Fail over to the standby' }).click();
  await failover.getByRole('alert').filter({ hasText: 'Not started: type failover to confirm.' }).waitFor();
  // Another text reaches the daemon, which refuses it naming the phrase (the page is not the only guard).
  await failover.getByLabel(/to confirm/).fill('FAILOVER');
  await failover.getByRole('button', { name: 'Fail over to the standby' }).click();
  await failover.getByRole('alert').filter({ hasText: 'confirm is "FAILOVER"; allowed: "failover"' }).waitFor();
  await shot('actions');
  const after = await status();
  assert.is(after.active, before.active);
  assert.is(after.bootBay, before.bootBay);
  assert.is(after.failover.failovers, before.failover.failovers);
  assert.is(after.job, null);
});

test('the jobs page lists the history and shows a job\'s log', async () => {
  if (!ok) return;
  await page.goto(`${d.url}/#/jobs`);
  const rows = page.locator('table.list tbody tr');
  await rows.first().waitFor();
  assert.match(await rows.first().innerText(), /sync\s+done/);
  await rows.first().getByRole('link').click();
  await page.getByRole('heading', { name: /Job \d+: sync/ }).waitFor();
  await page.locator('ol.log').getByText('sync done').waitFor();
  await shot('jobs');
});

test('a running job is cancelled from its page', async () => {
  if (!ok) return;
  const r = await d.api('POST', '/api/verify', {});
  assert.is(r.status, 202);
  await page.goto(`${d.url}/#/jobs?id=${r.body.id}`);
  await page.getByRole('heading', { name: new RegExp(`Job ${r.body.id}: verify`) }).waitFor();
  await page.getByRole('button', { name: 'Cancel job' }).click();
  const job = await waitJob(d, r.body.id);
  assert.is(job.state, 'cancelled');
  await page.getByRole('heading', { name: new RegExp(`Job ${r.body.id}: verify cancelled`) }).waitFor();
});

test('the settings page shows the config and links to the metrics and the API description', async () => {
  if (!ok) return;
  await page.goto(`${d.url}/#/settings`);
  await page.getByRole('link', { name: 'Metrics' }).waitFor();
  assert.is(await page.getByRole('link', { name: 'Metrics' }).getAttribute('href'), '/metrics');
  assert.ok(await page.getByText('Node-RED editor').first().isVisible());
  assert.ok(await page.getByText(join(d.dir, 'admin-password')).first().isVisible());
  await shot('settings');
  const metrics = await page.request.get(`${d.url}/metrics`);
  assert.is(metrics.status(), 200, 'the session opens the metrics link');
});

test('a page of another site cannot make the console act, though the browser holds its session', async () => {
  if (!ok) return;
  const jobs = (await d.api('GET', '/api/jobs')).body.jobs.length;
  // Another port of the same host: another origin but the same site, so SameSite does not hold the cookie back.
  const evil: Server = createServer((_req, res) => {
    res.writeHead(200, { 'content-type': 'text/html' });
    res.end(`<form id=f method=POST action="${d.url}/api/verify" enctype="text/plain"><input name='{"a":"' value='"}'></form>
      <script>fetch(${JSON.stringify(`${d.url}/api/sync`)}, { method: 'POST', mode: 'no-cors', credentials: 'include', body: '{}' }).finally(() => document.getElementById('f').submit());</script>`);
  });
  await new Promise<void>((r) => evil.listen(0, '127.0.0.1', () => r()));
  try {
    const other = await context.newPage();
    const answer = other.waitForResponse((r) => r.url() === `${d.url}/api/verify`);
    await other.goto(`http://127.0.0.1:${(evil.address() as AddressInfo).port}/`);
    const res = await answer;
    assert.is(res.status(), 403);
    assert.match(await res.text(), /another site|not from this console/);
    await other.close();
  } finally {
    evil.close();
  }
  assert.is((await d.api('GET', '/api/jobs')).body.jobs.length, jobs, 'neither the sync nor the verify started');
});

test('a hot standby drive shows live on the overview: its health and the alert, without a reload', async () => {
  if (!ok) return;
  await page.goto(`${d.url}/#/overview`);
  const bayB = page.getByRole('region', { name: /Bay B/ });
  await bayB.getByText(/^ok · \d+ °C/).waitFor();
  assert.is((await d.api('POST', '/api/sim/drive/B/smart', { temperatureC: 70 })).status, 200);
  await bayB.getByText(/70 °C/).waitFor();
  assert.match((await bayB.locator('dd.bad').allInnerTexts()).join(' '), /70 °C/, 'the health shows as bad');
  await page.getByRole('region', { name: 'Alerts' }).getByText(/70/).first().waitFor();
  await shot('overview-alert');
  assert.is((await d.api('POST', '/api/sim/drive/B/smart', { temperatureC: 35 })).status, 200);
});

test('after a failover the overview says which bay the host left, that its copy dates from the failover, and that re-protect makes it the standby again', async () => {
  if (!ok) return;
  const before = await status();
  await page.goto(`${d.url}/#/actions`);
  const failover = page.getByRole('region', { name: 'Failover' });
  await failover.getByLabel(/to confirm/).fill('failover');
  await failover.getByRole('button', { name: 'Fail over to the standby' }).click();
  const after = await waitFor(async () => {
    const s = await status();
    return s.active !== before.active && !s.failover.switching ? s : undefined;
  }, 60_000, 'the failover to finish');
  const left = before.active as string;
  await page.goto(`${d.url}/#/overview`);
  const notice = page.getByRole('region', { name: 'After a failover' });
  await notice.getByText(`Bay ${left} is marked failed after a failover away from it; the host runs from bay ${after.active} now`).waitFor();
  assert.ok(await notice.getByRole('link', { name: 'Re-protect' }).isVisible());
  await page.getByRole('region', { name: new RegExp(`Bay ${left}`) }).getByText(`as of the failover (bay ${left} is marked failed)`, { exact: false }).waitFor();
  await page.getByRole('region', { name: 'Host' }).getByText(`no target: bay ${left} is marked failed until re-protect`).waitFor();
  await shot('overview-after-failover');
});

test('logging out ends the session', async () => {
  if (!ok) return;
  await page.goto(`${d.url}/#/overview`);
  await page.getByRole('button', { name: 'Log out' }).click();
  await page.getByLabel('Admin password').waitFor();
  const r = await page.request.get(`${d.url}/api/status`);
  assert.is(r.status(), 401);
});

test('no page of the console threw a script error', () => {
  if (!ok) return;
  assert.equal(pageErrors, []);
});

test.run();
