import { mkdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { CreateAliasCommand, UpdateAliasCommand } from '@aws-sdk/client-kms';
import { CreateBucketCommand } from '@aws-sdk/client-s3';
import { chromium, type Browser, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startStack, type Stack } from './harness.js';
import { createKey, seedSseObjects } from './seed.js';

/**
 * The browser: `CHROMIUM_PATH` when set (with the usual headless flags), else the headless
 * Chromium that `@sparticuz/chromium` ships inside its npm package (with its own flags), so
 * `npm ci && npm test` needs nothing from outside the npm registry.
 */
async function browserLaunch(): Promise<{ executablePath: string; args: string[] }> {
  const own = process.env['CHROMIUM_PATH'];
  if (own) return { executablePath: own, args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--no-first-run', '--disable-sync', '--disable-dev-shm-usage'] };
  const { default: bundled } = await import('@sparticuz/chromium');
  return { executablePath: await bundled.executablePath(), args: bundled.args };
}
const SCREENSHOT = fileURLToPath(new URL('../artifacts/status-page.png', import.meta.url));
const ITEMS = 2000;

const valueOf = async (page: Page, testid: string) => Number(await page.getByTestId(testid).getAttribute('aria-valuenow'));

describe('the status page in headless Chromium during a running migration', () => {
  let stack: Stack;
  let browser: Browser;
  let oldKey: string;

  beforeAll(async () => {
    stack = await startStack({ workers: 2 });
    oldKey = await createKey(stack.kms, 'status page: old');
    await stack.kms.send(new CreateAliasCommand({ AliasName: 'alias/e2e-page', TargetKeyId: oldKey }));
    await seedSseObjects(stack.s3, 'e2e-status-page', 'alias/e2e-page', ITEMS, { size: 64 });
    await stack.s3.send(new CreateBucketCommand({ Bucket: 'e2e-status-audit' }));
    const newKey = await createKey(stack.kms, 'status page: new');
    await stack.kms.send(new UpdateAliasCommand({ AliasName: 'alias/e2e-page', TargetKeyId: newKey }));
    // Slow S3 down so the migration lasts long enough for the page to watch it move.
    stack.aws.controls.setLatency('s3:UpdateObjectEncryption', { fixedMs: 40 });
    stack.aws.controls.setLatency('s3:HeadObject', { fixedMs: 5 });
    browser = await chromium.launch(await browserLaunch());
  }, 180_000);

  afterAll(async () => {
    await browser?.close();
    await stack?.stop();
  });

  it('signs in with ?token=, shows the bar moving and the gate turning ready, and keeps a screenshot', async () => {
    const m = await stack.api.create({
      sources: [{ name: 'objects', kind: 's3-sse-kms', bucket: 'e2e-status-page', strategy: 'update-encryption' }],
      from: [oldKey],
      to: 'alias/e2e-page',
      options: { batchSize: 25, concurrency: 2 },
      auditBucket: 'e2e-status-audit',
    });
    const context = await browser.newContext({ viewport: { width: 1360, height: 1050 } });
    const page = await context.newPage();
    const pageErrors: string[] = [];
    page.on('pageerror', (err) => pageErrors.push(err.message));
    page.on('console', (msg) => {
      if (msg.type() === 'error') pageErrors.push(msg.text());
    });

    await page.goto(`${stack.apiUrl}/?token=${stack.token}`);
    expect(page.url()).toBe(`${stack.apiUrl}/`);
    const cookies = await context.cookies();
    expect(cookies).toEqual([expect.objectContaining({ name: 'rekey_token', httpOnly: true, sameSite: 'Strict', path: '/' })]);
    expect(await page.content()).not.toContain(stack.token);

    await page.getByTestId(`migration-${m.id}`).click();
    await expect.poll(() => page.getByTestId('migration-id').textContent(), { timeout: 15_000 }).toBe(m.id);
    await page.getByTestId('live').and(page.locator('[data-mode="sse"]')).waitFor({ timeout: 15_000 });

    const bar = page.getByTestId('progress-objects');
    await expect.poll(async () => Number(await bar.getAttribute('aria-valuemax')), { timeout: 60_000 }).toBeGreaterThan(0);
    const first = await valueOf(page, 'progress-objects');
    expect(first).toBeLessThan(ITEMS);
    await expect.poll(() => valueOf(page, 'progress-objects'), { timeout: 60_000, interval: 250 }).toBeGreaterThan(first);

    await page.getByTestId('gate-status').and(page.locator('[data-ready="true"]')).waitFor({ timeout: 180_000 });
    // The gate is computed on read; the coordinator moves the state to ready on its next tick.
    await expect.poll(() => page.getByTestId('state').textContent(), { timeout: 15_000 }).toBe('ready');
    for (const c of ['enumeration-complete', 'no-batches-pending', 'no-unacknowledged-failures', 'verify-clean', 'old-key-quiet']) {
      expect(await page.getByTestId(`gate-${c}`).getAttribute('data-ok'), c).toBe('true');
    }
    expect(await valueOf(page, 'progress-objects')).toBe(ITEMS);
    expect(await page.getByTestId('outcome-reencrypted').textContent()).toBe(ITEMS.toLocaleString('en-US'));
    await expect.poll(() => page.getByTestId('audit-entry').allTextContents(), { timeout: 10_000 }).toEqual(
      expect.arrayContaining([expect.stringContaining('migration.created')]),
    );
    expect(await page.getByTestId('throughput-chart').locator('path').count()).toBe(2);
    // The coordinator copies the log to auditBucket while the migration runs.
    await expect.poll(() => page.getByTestId('audit-copy').textContent(), { timeout: 15_000 }).toMatch(
      new RegExp(`^audit copy: s3://e2e-status-audit/rekey/audit/${m.id}\\.jsonl, \\d+ entr(y|ies) at `),
    );
    expect(pageErrors).toEqual([]);

    mkdirSync(fileURLToPath(new URL('../artifacts/', import.meta.url)), { recursive: true });
    await page.screenshot({ path: SCREENSHOT, fullPage: true });
    await context.close();
  }, 300_000);
});
