/**
 * The console with two drive pairs (system and data) in a real browser: the
 * overview lists both with links to each pair's explorer and actions; the
 * explorer reads the chosen pair's drives (the standby alone while the host
 * runs) and downloads from them; Actions start a job of the chosen pair; the
 * jobs page names each job's pair.
 * Screenshots land in test-output/console/.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Browser, Page } from 'playwright-core';
import { makeDaemon, waitFor, waitJob, type TestDaemon } from '../controller/support/harness.ts';
import { requireEnv, isRoot } from '../support/require.ts';

const CHROMIUM = '/usr/bin/chromium';
const ok = requireEnv('the console\'s browser tests with two pairs', { tools: [CHROMIUM, 'sfdisk', 'fls', 'icat', 'ifind'] });
const SHOTS = fileURLToPath(new URL('../../test-output/console/', import.meta.url));
const TWO_PAIRS = [
  { id: 'system', label: 'system drive', bays: ['A', 'B'] },
  { id: 'data', label: 'data drive', bays: ['C', 'D'] },
];

let d: TestDaemon;
let browser: Browser;
let page: Page;
const pageErrors: string[] = [];

test.before(async () => {
  if (!ok) return;
  mkdirSync(SHOTS, { recursive: true });
  d = await makeDaemon({ pairs: TWO_PAIRS, sim: { bridgeMiBps: 64 } });
  await waitFor(async () => {
    const s = (await d.api('GET', '/api/status')).body;
    return s.pairs.every((p: { standbyState: string }) => p.standbyState === 'consistent') && s.job === null && s.queued.length === 0 ? true : undefined;
  }, 90_000, 'both pairs cloned');
  const { chromium } = await import('playwright-core');
  browser = await chromium.launch({ executablePath: CHROMIUM, args: isRoot ? ['--no-sandbox'] : [] });
  const context = await browser.newContext({ viewport: { width: 1280, height: 860 }, acceptDownloads: true });
  context.on('weberror', (e) => pageErrors.push(e.error().message));
  page = await context.newPage();
  await page.goto(`${d.url}/`);
  await page.getByLabel('Admin password').fill(readFileSync(join(d.dir, 'admin-password'), 'utf8').trim());
  await page.keyboard.press('Enter');
  await page.getByRole('heading', { name: 'Overview' }).waitFor();
});
test.after(async () => {
  await browser?.close();
  await d?.stop();
});

test('the overview lists both pairs, each with its explorer and actions', async () => {
  if (!ok) return;
  const pairs = page.getByRole('region', { name: 'Drive pairs' });
  const system = pairs.locator('li[data-pair="system"]');
  const data = pairs.locator('li[data-pair="data"]');
  await system.getByText(/system drive \(boot\): bay A → bay B · consistent/).waitFor();
  await data.getByText(/data drive \(data\): bay C → bay D · consistent/).waitFor();
  assert.is(await data.getByRole('link', { name: 'explore' }).getAttribute('href'), '#/explorer?pair=data');
  assert.is(await data.getByRole('link', { name: 'actions' }).getAttribute('href'), '#/actions?pair=data');
  await page.screenshot({ path: join(SHOTS, 'pairs-overview.png'), fullPage: true });
});

test('the explorer reads the chosen pair: the data pair\'s standby while the host runs, and downloads from it', async () => {
  if (!ok) return;
  await page.getByRole('region', { name: 'Drive pairs' }).locator('li[data-pair="data"]').getByRole('link', { name: 'explore' }).click();
  await page.getByRole('heading', { name: 'Explorer' }).waitFor();
  assert.is(await page.getByLabel('Drive pair').inputValue(), 'data');
  await page.getByRole('columnheader', { name: /Standby \(bay D\)/ }).waitFor();
  await page.getByTestId('active-unavailable').getByText(/bay C\) cannot be read while the host is running/).waitFor();
  const projects = page.locator('.row[data-name="projects"]');
  await projects.waitFor();
  await projects.locator('.cell.standby').getByRole('link', { name: 'projects/' }).click();
  await page.locator('.crumbs').getByText('projects').waitFor();
  assert.match(page.url(), /pair=data/, 'the pair stays in the page\'s address');
  const link = page.getByRole('link', { name: 'download ledger.csv from the standby drive' });
  assert.match((await link.getAttribute('href'))!, /^\/api\/pairs\/data\/browse\/file\?/);
  const [download] = await Promise.all([page.waitForEvent('download'), link.click()]);
  const file = await download.path();
  assert.is(readFileSync(file!, 'utf8'), 'day,entries\nmon,12\ntue,9\n');
  await page.screenshot({ path: join(SHOTS, 'pairs-explorer-data.png'), fullPage: true });
  // Picking the system pair lists its drives instead.
  await page.getByLabel('Drive pair').selectOption('system');
  await page.getByRole('columnheader', { name: /Standby \(bay B\)/ }).waitFor();
  await page.locator('.row[data-name="EFI"]').waitFor();
});

test('Actions start a job of the chosen pair', async () => {
  if (!ok) return;
  await page.goto(`${d.url}/#/actions?pair=data`);
  await page.getByRole('region', { name: 'Sync' }).getByText(/of pair data drive \(bay C\)/).waitFor();
  await page.getByRole('button', { name: 'Start sync' }).click();
  await page.getByRole('heading', { name: 'Overview' }).waitFor();
  const job = await waitFor(async () => (await d.api('GET', '/api/jobs')).body.jobs.find((j: { kind: string; trigger: string }) => j.kind === 'sync' && j.trigger === 'api'), 10_000, 'the sync job');
  assert.is(job.pair, 'data');
  assert.is((await waitJob(d, job.id, 60_000)).state, 'done');
});

test('the jobs page names each job\'s pair, in the history and in the job\'s detail', async () => {
  if (!ok) return;
  const jobs = (await d.api('GET', '/api/jobs')).body.jobs as { id: string; kind: string; pair?: string }[];
  const ofData = jobs.find((j) => j.kind === 'sync' && j.pair === 'data')!;
  const ofSystem = jobs.find((j) => j.pair === 'system')!;
  assert.ok(ofData && ofSystem, JSON.stringify(jobs));
  await page.goto(`${d.url}/#/jobs`);
  await page.getByRole('heading', { name: 'History' }).waitFor();
  await page.getByRole('columnheader', { name: 'Pair' }).waitFor();
  assert.is(await page.locator(`tr[data-job="${ofData.id}"] [data-testid="pair"]`).textContent(), 'data drive');
  assert.is(await page.locator(`tr[data-job="${ofSystem.id}"] [data-testid="pair"]`).textContent(), 'system drive');
  await page.locator(`tr[data-job="${ofData.id}"]`).getByRole('link', { name: ofData.id }).click();
  const detail = page.getByTestId('job-pair');
  await detail.waitFor();
  assert.match((await detail.textContent())!, /^data drive \(data, bay C → bay D now\)/);
  assert.is(await detail.getByRole('link', { name: 'explore' }).getAttribute('href'), '#/explorer?pair=data');
  await page.screenshot({ path: join(SHOTS, 'pairs-jobs.png'), fullPage: true });
});

test('no page threw a script error', () => {
  assert.equal(pageErrors, []);
});

test.run();
