// The first hour of a new agency, in a real Chromium, with real pointer and keyboard events.
// Run by crates/clientflow/tests/it/browser_journey.rs, which starts the server and answers
// `MAIL <address> <path prefix>` lines on stdin with the link from that mail.
//
// On every page: no console error, no CSP violation, no horizontal overflow at 1,280 px and
// 390 px, no word of a table's header (or a permission's name) split across lines nor a figure over two,
// no serious or critical axe-core violation; one screenshot per step at each width.
import { createInterface } from 'node:readline';
import { createHmac } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { createRequire } from 'node:module';
import { chromium } from 'playwright-core';

const require = createRequire(import.meta.url);
const AXE = readFileSync(require.resolve('axe-core/axe.min.js'), 'utf8');
const BASE = process.env.BASE_URL;
const SHOTS = process.env.SCREENSHOTS;
const unique = Date.now().toString(36);
const PASSWORD = 'correct horse battery staple';
const problems = [];
// A form refused on purpose answers 422 (or 409): the browser logs that, and it is expected then.
let expectRefusal = false;
let step = 0;

const input = createInterface({ input: process.stdin });
const answers = [];
const waiting = [];
input.on('line', (l) => (waiting.length ? waiting.shift()(l) : answers.push(l)));
function mailLink(to, prefix) {
  console.log(`MAIL ${to} ${prefix}`);
  return new Promise((resolve) => (answers.length ? resolve(answers.shift()) : waiting.push(resolve)));
}

// A code of a time step not used before: the server refuses a replayed step.
let lastTotpStep = -1;
async function freshTotp(base32) {
  while (Math.floor(Date.now() / 1000 / 30) === lastTotpStep) await new Promise((r) => setTimeout(r, 500));
  lastTotpStep = Math.floor(Date.now() / 1000 / 30);
  return totp(base32);
}

function totp(base32) {
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
  let bits = '';
  for (const c of base32.replace(/[\s=]/g, '').toUpperCase()) bits += alphabet.indexOf(c).toString(2).padStart(5, '0');
  const key = Buffer.from(bits.match(/.{8}/g).map((b) => parseInt(b, 2)));
  const counter = Buffer.alloc(8);
  counter.writeBigUInt64BE(BigInt(Math.floor(Date.now() / 1000 / 30)));
  const h = createHmac('sha1', key).update(counter).digest();
  const o = h[h.length - 1] & 0xf;
  return String((h.readUInt32BE(o) & 0x7fffffff) % 1000000).padStart(6, '0');
}

async function watch(page, who) {
  await page.addInitScript(() => {
    window.__csp = [];
    document.addEventListener('securitypolicyviolation', (e) => window.__csp.push(`${e.violatedDirective} ${e.blockedURI}`));
  });
  page.on('console', (m) => {
    if (m.type() === 'error' && !(expectRefusal && /status of (409|422)/.test(m.text()))) problems.push(`${who} console error on ${page.url()}: ${m.text()}`);
  });
  page.on('pageerror', (e) => problems.push(`${who} script error on ${page.url()}: ${e.message}`));
}

// The checks every visited page gets, then its screenshot.
async function check(page, name) {
  step += 1;
  const url = page.url();
  await page.waitForLoadState('load');
  const csp = await page.evaluate(() => window.__csp || []);
  for (const v of csp) problems.push(`CSP violation on ${url}: ${v}`);
  await page.evaluate(AXE);
  for (const [w, h] of [[390, 844], [1280, 800]]) {
    await page.setViewportSize({ width: w, height: h });
    // Two frames: the page's own resize handlers (app.js's scrolling tables) have run.
    await page.evaluate(() => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r))));
    if (w === 390) await page.screenshot({ path: join(SHOTS, `${String(step).padStart(2, '0')}-${name}-390.png`), fullPage: true });
    // A table's headers and figures, and the names beside checkboxes (clients.read), keep their
    // words whole: a column too narrow for "Date" or "1,250.00" is a table to scroll
    // (.table-wrap), not "Dat" over "e".
    const split = await page.evaluate(() => {
      const found = [];
      for (const cell of document.querySelectorAll('th, td.num, label > code')) {
        const text = document.createTreeWalker(cell, NodeFilter.SHOW_TEXT);
        for (let node = text.nextNode(); node; node = text.nextNode()) {
          if (node.parentElement.closest('.sr-only')) continue;
          // Pieces between places a line may break anyway: spaces, hyphens, dashes, slashes; a
          // figure ("1h 30m", "1,250.00 EUR") is one piece.
          const pieces = cell.matches('td.num') ? /\S(?:[^]*\S)?/g : /[^\s\-\u2010-\u2014\/]+/g;
          for (const word of node.data.matchAll(pieces)) {
            const range = document.createRange();
            range.setStart(node, word.index);
            range.setEnd(node, word.index + word[0].length);
            const lines = new Set([...range.getClientRects()].filter((r) => r.width > 0).map((r) => Math.round(r.top)));
            if (lines.size > 1) found.push(`${cell.tagName.toLowerCase()} "${word[0]}"`);
          }
        }
      }
      return found;
    });
    if (split.length) problems.push(`words split across lines at ${w}px on ${url}: ${split.slice(0, 5).join(', ')}`);
    const over = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    if (over > 0) {
      const wide = await page.evaluate(() => [...document.querySelectorAll('body *')]
        .filter((e) => e.getBoundingClientRect().right > window.innerWidth + 1)
        .slice(0, 3).map((e) => `${e.tagName.toLowerCase()}.${e.className}`).join(', '));
      problems.push(`horizontal overflow of ${over}px at ${w}px on ${url} (${wide})`);
      await page.screenshot({ path: join(SHOTS, `${String(step).padStart(2, '0')}-${name}-overflow-${w}.png`), fullPage: true });
    }
    const result = await page.evaluate(() => window.axe.run(document, { resultTypes: ['violations'] }));
    for (const v of result.violations.filter((v) => ['serious', 'critical'].includes(v.impact))) {
      problems.push(`axe ${v.impact} ${v.id} at ${w}px on ${url}: ${v.help} — ${v.nodes.slice(0, 2).map((n) => n.target.join(' ')).join(' | ')}`);
    }
  }
  await page.screenshot({ path: join(SHOTS, `${String(step).padStart(2, '0')}-${name}.png`), fullPage: true });
  console.log(`step ${step} ${name}: ${url}`);
}

async function type(page, selector, text) {
  await page.locator(selector).click();
  await page.keyboard.type(text);
}

async function expectText(page, text) {
  await page.getByText(text, { exact: false }).first().waitFor({ timeout: 10000 });
}

const browser = await chromium.launch({ executablePath: process.env.CHROMIUM, args: ['--no-sandbox', '--disable-dev-shm-usage'] });
try {
  const ctx = await browser.newContext({ ignoreHTTPSErrors: true, viewport: { width: 1280, height: 800 } });
  const page = await ctx.newPage();
  await watch(page, 'owner');
  page.on('dialog', (d) => d.accept());
  const owner = `owner-${unique}@example.com`;

  // The front door and sign-up: one click, one Enter.
  await page.goto(BASE + '/');
  await check(page, 'home');
  await page.getByRole('link', { name: 'Sign up' }).first().click();
  await page.waitForURL('**/signup');
  await check(page, 'signup');
  await type(page, 'input[name=email]', owner);
  await type(page, 'input[name=display_name]', 'Olivia Owner');
  await type(page, 'input[name=password]', PASSWORD);
  await page.keyboard.press('Enter');
  await page.waitForURL('**/signup/check-email', { timeout: 30000 });
  await check(page, 'check-email');

  // Verify from the mail; sign in lands on getting started.
  await page.goto(await mailLink(owner, '/verify-email'));
  await check(page, 'verify');
  await page.getByRole('button').first().click();
  await page.waitForURL('**/app', { timeout: 15000 });
  await check(page, 'onboarding');
  await type(page, '#org-name', `Studio ${unique}`);
  await page.getByRole('button', { name: 'Create organization' }).click();
  await page.waitForURL(/\/o\/[a-z0-9-]+$/);
  const slug = new URL(page.url()).pathname.split('/')[2];
  await expectText(page, 'Organization created');
  await check(page, 'org-home');

  // A client, the overview's first step.
  await page.getByRole('region', { name: 'Get started' }).getByRole('link', { name: 'Add your first client' }).click();
  await page.waitForURL(/\/clients$/);
  await check(page, 'clients-empty');
  await page.goto(`${BASE}/o/${slug}/clients/new`);
  await type(page, 'input[name=name]', 'Acme Corp');
  await page.keyboard.press('Enter');
  await page.waitForURL(/\/clients\/[0-9a-f-]{36}$/);
  await expectText(page, 'Client added');
  await check(page, 'client');

  // Invite a Member; they create their account from the mail and land in the organization.
  const member = `member-${unique}@example.com`;
  await page.goto(`${BASE}/o/${slug}/members`);
  await type(page, '#invite-email', member);
  await page.getByRole('button', { name: 'Send invitation' }).click();
  await expectText(page, 'Invitation sent');
  await check(page, 'invited');
  const mctx = await browser.newContext({ ignoreHTTPSErrors: true, viewport: { width: 1280, height: 800 } });
  const mpage = await mctx.newPage();
  await watch(mpage, 'member');
  await mpage.goto(await mailLink(member, '/invitations/accept'));
  await check(mpage, 'invitation');
  await type(mpage, 'input[name=display_name]', 'Max Member');
  await type(mpage, 'input[name=password]', PASSWORD);
  await mpage.getByRole('button', { name: /accept/i }).first().click();
  await mpage.waitForURL(new RegExp(`/o/${slug}`), { timeout: 15000 });
  await check(mpage, 'member-home');

  // Someone invited who signs up on their own, not from the mail's link, finds the invitation
  // waiting on getting started (next to "Create organization") and accepts it with one click.
  const joiner = `joiner-${unique}@example.com`;
  await page.goto(`${BASE}/o/${slug}/members`);
  await type(page, '#invite-email', joiner);
  await page.getByRole('button', { name: 'Send invitation' }).click();
  await expectText(page, 'Invitation sent');
  const jctx = await browser.newContext({ ignoreHTTPSErrors: true, viewport: { width: 390, height: 844 } });
  const jpage = await jctx.newPage();
  await watch(jpage, 'joiner');
  await jpage.goto(BASE + '/signup');
  await type(jpage, 'input[name=email]', joiner);
  await type(jpage, 'input[name=display_name]', 'Jo Joiner');
  await type(jpage, 'input[name=password]', PASSWORD);
  await jpage.keyboard.press('Enter');
  await jpage.waitForURL('**/signup/check-email', { timeout: 30000 });
  await jpage.goto(await mailLink(joiner, '/verify-email'));
  await jpage.getByRole('button').first().click();
  await jpage.waitForURL('**/app', { timeout: 15000 });
  await expectText(jpage, 'Invitations waiting for you');
  await expectText(jpage, 'Create your organization');
  await check(jpage, 'onboarding-invited');
  await jpage.setViewportSize({ width: 390, height: 844 });
  await jpage.getByRole('button', { name: `Accept the invitation to Studio ${unique}` }).click();
  await jpage.waitForURL(new RegExp(`/o/${slug}$`), { timeout: 15000 });
  await expectText(jpage, 'Invitation accepted');
  await check(jpage, 'joined');
  await jctx.close();

  // The organization switcher: a menu in the navigation, by pointer and by keyboard.
  await page.goto(`${BASE}/o/${slug}`);
  const switcher = page.locator('details.switcher');
  await switcher.locator('summary').click();
  await switcher.getByRole('link', { name: 'Create organization' }).waitFor({ state: 'visible' });
  if ((await switcher.locator('a[aria-current]').count()) !== 1) problems.push('the switcher does not mark the current organization');
  await check(page, 'switcher-open');
  await page.keyboard.press('Escape');
  if ((await switcher.getAttribute('open')) !== null) problems.push('Escape does not close the switcher');
  await switcher.locator('summary').focus();
  await page.keyboard.press('Enter');
  if ((await switcher.getAttribute('open')) === null) problems.push('Enter does not open the switcher');
  await page.locator('main h1').first().click();
  if ((await switcher.getAttribute('open')) !== null) problems.push('a click outside does not close the switcher');
  // At 390 px the navigation collapses into a menu; the switcher stays.
  await page.setViewportSize({ width: 390, height: 844 });
  const menu = page.locator('details.menu.narrow');
  if (!(await menu.isVisible())) problems.push('no navigation menu at 390 px');
  if (await page.locator('ul.links.wide').isVisible()) problems.push('the wide navigation shows at 390 px');
  if (!(await switcher.isVisible())) problems.push('no switcher at 390 px');
  await menu.locator('summary').click();
  await menu.getByRole('link', { name: 'Projects' }).waitFor({ state: 'visible' });
  const navOver = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  if (navOver > 0) problems.push(`the open navigation menu overflows by ${navOver}px at 390 px`);
  step += 1;
  await page.screenshot({ path: join(SHOTS, `${String(step).padStart(2, '0')}-nav-menu-390.png`) });
  await menu.getByRole('link', { name: 'Projects' }).click();
  await page.waitForURL(/\/projects$/);
  await page.setViewportSize({ width: 1280, height: 800 });

  // A project for the client, with tasks added in place.
  await page.goto(`${BASE}/o/${slug}/projects/new`);
  await check(page, 'project-new');
  await type(page, 'input[name=name]', 'Website relaunch');
  // A refused form: the message next to the field, the field marked, what was typed kept.
  await type(page, 'input[name=budget]', 'lots');
  expectRefusal = true;
  await page.getByRole('button', { name: /create/i }).click();
  await page.locator('#project-form-budget-error').waitFor();
  if ((await page.locator('input[name=budget]').getAttribute('aria-invalid')) !== 'true') problems.push('the refused budget is not marked invalid');
  if ((await page.locator('input[name=budget]').getAttribute('aria-describedby')) !== 'project-form-budget-error') problems.push('the refused budget does not point at its message');
  if ((await page.locator('input[name=name]').inputValue()) !== 'Website relaunch') problems.push('the refused project form lost the name typed');
  if ((await page.locator('input[name=budget]').inputValue()) !== 'lots') problems.push('the refused project form lost the budget typed');
  await check(page, 'project-refused');
  expectRefusal = false;
  await page.locator('input[name=budget]').click();
  await page.keyboard.press('Control+A');
  await page.keyboard.type('2000');
  await page.locator('select[name=client_id]').selectOption({ label: 'Acme Corp' });
  await page.getByRole('button', { name: /create/i }).click();
  await page.waitForURL(/\/projects\/[0-9a-f-]{36}$/);
  const projectUrl = page.url();
  await check(page, 'board-empty');
  const firstColumn = page.locator('[data-column]').first();
  for (const title of ['Wireframes', 'Copy deck', 'Launch checklist']) {
    await firstColumn.locator('input[name=title]').click();
    await page.keyboard.type(title);
    await page.keyboard.press('Enter');
    await expectText(page, 'Task added');
  }
  await check(page, 'board');

  // Drag a card to Done with the mouse; the counts follow; the card stays there after reload.
  const card = page.locator('[data-card]', { hasText: 'Wireframes' });
  const done = page.locator('[data-column]').last();
  const from = await card.boundingBox();
  const to = await done.boundingBox();
  await page.mouse.move(from.x + 10, from.y + from.height - 6);
  await page.mouse.down();
  await page.mouse.move(from.x + 40, from.y + 30, { steps: 5 });
  await page.mouse.move(to.x + to.width / 2, to.y + 40, { steps: 10 });
  await page.mouse.up();
  await done.locator('[data-card]', { hasText: 'Wireframes' }).waitFor();
  const counts = await page.locator('[data-count]').allTextContents();
  if (counts.join(',') !== '2,0,1') problems.push(`column counts after the drag: ${counts}`);
  // The header's progress follows the move without a reload.
  await page.locator('[data-progress]', { hasText: '1 of 3 tasks done' }).waitFor({ timeout: 5000 })
    .catch(() => problems.push('the header did not say "1 of 3 tasks done" after the drag'));
  // The keyboard: Alt+ArrowRight moves the focused card one column on.
  await page.locator('[data-card]', { hasText: 'Copy deck' }).focus();
  await page.keyboard.press('Alt+ArrowRight');
  await page.waitForTimeout(500);
  await page.reload();
  const after = await page.locator('[data-count]').allTextContents();
  if (after.join(',') !== '1,1,1') problems.push(`column counts after reload: ${after}`);
  await check(page, 'board-moved');
  await page.getByRole('link', { name: 'List', exact: true }).click();
  await page.waitForURL('**/list');
  await expectText(page, 'Done');
  await check(page, 'list-tab');
  // Narrowed to the open tasks, with the pointer and the keyboard: the one in Done goes.
  await page.getByLabel('Only open tasks').check();
  await page.getByRole('button', { name: 'Filter', exact: true }).press('Enter');
  await page.waitForURL(/\/list\?(.*&)?open=1$/);
  await expectText(page, 'Copy deck');
  if (await page.getByRole('link', { name: 'Wireframes', exact: true }).count() !== 0) problems.push('the open tasks still list the done "Wireframes"');
  await check(page, 'list-open');

  // A comment on the task.
  await page.goto(projectUrl);
  await page.getByRole('link', { name: 'Wireframes', exact: true }).click();
  await page.waitForURL(/\/tasks\//);
  await check(page, 'task');
  await page.locator('textarea[name=body]').click();
  await page.keyboard.type('Approved by the client.');
  await page.getByRole('button', { name: /comment/i }).click();
  await expectText(page, 'Approved by the client.');
  await check(page, 'commented');

  // Time, on the project's Time tab, against a task picked by name.
  await page.goto(projectUrl + '/time');
  await check(page, 'time-empty');
  await type(page, 'input[name=minutes]', '90');
  await page.locator('select[name=task_id]').selectOption({ label: 'Wireframes' });
  await page.getByRole('button', { name: 'Record time' }).click();
  await expectText(page, 'Time recorded');
  await check(page, 'time');

  // A file, shared with the client.
  await page.goto(projectUrl + '/files');
  await page.locator('input[type=file]').setInputFiles({ name: 'brief.txt', mimeType: 'text/plain', buffer: Buffer.from('The brief.') });
  await page.locator('input[name=shared_with_client]').check();
  await page.getByRole('button', { name: 'Upload' }).click();
  await expectText(page, 'brief.txt');
  await check(page, 'files');

  // An invoice for the client.
  await page.goto(projectUrl + '/invoices');
  await check(page, 'invoices-tab');
  await page.getByRole('link', { name: /New invoice/ }).click();
  await page.waitForURL(/\/invoices\/new/);
  await check(page, 'invoice-new');
  await page.getByRole('button', { name: /create|save/i }).first().click();
  await page.waitForURL(/\/invoices\/[0-9a-f-]{36}/);
  await check(page, 'invoice');

  // A Client user, picked by the client's name; they land in the portal.
  const clientUser = `client-${unique}@example.com`;
  await page.goto(`${BASE}/o/${slug}/members`);
  await type(page, '#invite-email', clientUser);
  await page.locator('#invite-role').selectOption('client');
  expectRefusal = true;
  await page.getByRole('button', { name: 'Send invitation' }).click();
  await expectText(page, 'choose the client');
  if ((await page.locator('#invite-email').inputValue()) !== clientUser) problems.push('the refused invitation lost the email typed');
  await check(page, 'invite-error');
  expectRefusal = false;
  await page.locator('#invite-client').selectOption({ label: 'Acme Corp' });
  await page.getByRole('button', { name: 'Send invitation' }).click();
  await expectText(page, 'Invitation sent');
  const cctx = await browser.newContext({ ignoreHTTPSErrors: true, viewport: { width: 1280, height: 800 } });
  const cpage = await cctx.newPage();
  await watch(cpage, 'client');
  await cpage.goto(await mailLink(clientUser, '/invitations/accept'));
  await type(cpage, 'input[name=password]', PASSWORD);
  await cpage.getByRole('button', { name: /accept/i }).first().click();
  await cpage.waitForURL(new RegExp(`/portal/${slug}`), { timeout: 15000 });
  await check(cpage, 'portal');
  await cpage.goto(BASE + '/app');
  await cpage.waitForURL(new RegExp(`/portal/${slug}`));

  // Two-factor for the owner.
  await page.goto(`${BASE}/account/security`);
  await check(page, 'account');
  await page.getByRole('link', { name: /Turn on two-factor/ }).click();
  await check(page, 'two-factor-setup');
  const secret = (await page.locator('code').first().textContent()).trim();
  await type(page, 'input[name=code]', await freshTotp(secret));
  await type(page, 'input[name=current_password]', PASSWORD);
  await page.getByRole('button', { name: 'Turn on' }).click();
  await page.waitForLoadState('load');
  await check(page, 'two-factor-on');

  // The audit log: names, not ids.
  await page.goto(`${BASE}/o/${slug}/audit`);
  await check(page, 'audit');
  const audit = await page.locator('main').textContent();
  if (!audit.includes('Olivia Owner') && !audit.includes(owner)) problems.push('the audit log does not name the owner');

  // Where a returning person lands: the organization they last used.
  await page.goto(BASE + '/app');
  await page.waitForURL(new RegExp(`/o/${slug}$`));
  await check(page, 'back-home');
  // The overview: the first steps are taken, and the project is there with its open tasks.
  if (await page.getByRole('heading', { name: 'Get started' }).count()) problems.push('the overview still shows its first steps');
  const active = page.getByRole('region', { name: 'Active projects' });
  if (!(await active.getByRole('link', { name: 'Website relaunch' }).count())) problems.push('the overview does not list the project');
  if (!/\d+ open/.test(await active.textContent())) problems.push('the overview does not count the open tasks');

  // An API key: a security change, confirmed with the password typed in.
  await page.goto(`${BASE}/o/${slug}/settings/api-keys`);
  await check(page, 'api-keys');
  await type(page, 'input[name=name]', 'Reporting');
  await type(page, 'input[name=current_password]', PASSWORD);
  await page.getByRole('button', { name: 'Create key' }).click();
  await page.waitForLoadState('load');
  await expectText(page, 'cf_live_');
  await check(page, 'api-key-created');

  // Billing (off on a self-hosted installation: the page says so) and the security settings.
  await page.goto(`${BASE}/o/${slug}/settings/billing`);
  await check(page, 'billing');
  await page.goto(`${BASE}/o/${slug}/settings/security`);
  await check(page, 'security-settings');

  // The trust pages, found from the footer of any page.
  await page.locator('footer').getByRole('link', { name: 'Security' }).click();
  await page.waitForURL(`${BASE}/security`);
  await check(page, 'security-page');
  await page.locator('footer').getByRole('link', { name: 'Sub-processors' }).click();
  await page.waitForURL(`${BASE}/legal/subprocessors`);
  await check(page, 'subprocessors');
  await page.locator('footer').getByRole('link', { name: 'Report a vulnerability' }).click();
  await page.waitForURL(`${BASE}/security/report`);
  await check(page, 'report-form');

  // ---- The daily work: search from the keyboard, My work, a notification read ----
  // `/` focuses the header's search box from anywhere on a page; Enter searches.
  await page.goto(`${BASE}/o/${slug}`);
  await page.locator('body').click({ position: { x: 5, y: 300 } });
  await page.keyboard.press('/');
  if (!(await page.evaluate(() => document.activeElement && document.activeElement.hasAttribute('data-search-shortcut')))) {
    problems.push('the / shortcut did not focus the search box');
  }
  await page.keyboard.type('Copy');
  await page.keyboard.press('Enter');
  await page.waitForURL(/\/search\?q=Copy/);
  await expectText(page, 'Copy deck');
  await check(page, 'search');
  // Ctrl+K too, from the results page.
  await page.locator('h1').click();
  await page.keyboard.press('Control+K');
  if (!(await page.evaluate(() => document.activeElement && document.activeElement.hasAttribute('data-search-shortcut')))) {
    problems.push('Ctrl+K did not focus the search box');
  }
  await page.locator('main').getByRole('link', { name: 'Copy deck' }).click();
  await page.waitForURL(/\/tasks\//);
  // The owner takes the task on; it shows in My work.
  await page.locator('fieldset', { hasText: 'Assignees' }).getByLabel('Olivia Owner', { exact: true }).check();
  await page.locator('input[name=due_date]').fill(new Date().toISOString().slice(0, 10));
  await page.locator('input[name=estimate_minutes]').fill('45h');
  await page.getByRole('button', { name: 'Save' }).click();
  await expectText(page, 'Task saved');
  await page.getByRole('link', { name: 'My work' }).first().click();
  await page.waitForURL('**/my-work');
  await expectText(page, 'Copy deck');
  await check(page, 'my-work');
  // The team's schedule, from My work: the same task on its day, with who is on it.
  await page.getByRole('link', { name: "The team's schedule" }).click();
  await page.waitForURL('**/schedule');
  const day = await page.locator('.schedule-day', { hasText: 'Copy deck' }).innerText().catch(() => '');
  if (!day.includes('Olivia Owner')) problems.push(`the schedule shows the task due today as ${JSON.stringify(day)}`);
  await check(page, 'schedule');
  await page.getByRole('link', { name: 'Only mine', exact: true }).click();
  await page.waitForURL(/mine=1$/);
  await expectText(page, 'Copy deck');
  // Who has room, from the schedule: the owner's 45-hour task due this week is more than her 40
  // hours; she gives herself 50, typed with the keyboard, and nobody is over any more.
  await page.getByRole('link', { name: 'Workload: who has room in the coming weeks' }).click();
  await page.waitForURL(/\/workload$/);
  await expectText(page, 'Over by 5h');
  // What makes it up: the cell opens on its tasks.
  await page.locator('summary', { hasText: /^1 task/ }).click();
  await page.getByRole('link', { name: 'Copy deck', exact: true }).waitFor();
  await check(page, 'workload');
  await page.locator('summary', { hasText: 'the hours of Olivia Owner' }).click();
  await page.getByRole('textbox', { name: 'Hours a week' }).click();
  await page.keyboard.press('ControlOrMeta+A');
  // A word is refused, naming the field; her form stays open on what she typed.
  await page.keyboard.type('fifty');
  expectRefusal = true;
  await page.keyboard.press('Enter');
  await page.waitForLoadState('load');
  await expectText(page, 'must be a duration like 1:30');
  if ((await page.getByRole('textbox', { name: 'Hours a week' }).inputValue()) !== 'fifty') problems.push('the refused hours were not kept');
  await check(page, 'workload-refused');
  expectRefusal = false;
  await page.getByRole('textbox', { name: 'Hours a week' }).click();
  await page.keyboard.press('ControlOrMeta+A');
  await page.keyboard.type('50');
  await page.keyboard.press('Enter');
  await page.waitForURL(/\/workload\?week=/);
  await expectText(page, 'Hours a week saved.');
  await expectText(page, '50h');
  await expectText(page, 'Nobody is over their hours in these weeks.');
  await check(page, 'workload-hours');
  await page.goto(`${BASE}/o/${slug}/schedule?mine=1`);
  // The client accepting the invitation told the owner: the count in the navigation, the inbox,
  // and the count going down once read.
  const unreadBefore = Number((await page.locator('[data-unread]').first().textContent()).replace(/\D/g, '') || '0');
  if (unreadBefore < 1) problems.push(`no unread notification shown (${unreadBefore})`);
  await page.locator('a.inbox-link').click();
  await page.waitForURL('**/notifications');
  await expectText(page, 'Max Member accepted your invitation');
  // Nothing stands in for a body the notification doesn't have.
  if (await page.locator('ul.inbox .notes').count()) problems.push('the inbox shows a body no invitation notification has');
  await check(page, 'notifications');
  await page.getByRole('button', { name: 'Mark read' }).first().click();
  await expectText(page, 'Marked read');
  const unreadAfter = Number(((await page.locator('[data-unread]').count()) ? await page.locator('[data-unread]').first().textContent() : '0').replace(/\D/g, '') || '0');
  if (unreadAfter !== unreadBefore - 1) problems.push(`unread count after reading: ${unreadBefore} → ${unreadAfter}`);
  await check(page, 'notification-read');
  await page.getByRole('link', { name: 'Preferences' }).click();
  await page.waitForURL('**/notifications/preferences');
  await check(page, 'notification-preferences');
  // ---- end of the daily work ----
  // ==== Time tracking and invoices from time: a timer started and stopped on the project, the
  // week and the totals, a draft invoice filled from the project's billable time, sent, and
  // opened by the client in the portal. ====
  {
    // The organization's invoicing settings, found from the settings tabs.
    await page.goto(`${BASE}/o/${slug}/settings`);
    await page.getByRole('link', { name: 'Invoicing', exact: true }).click();
    await page.waitForURL(/\/settings\/invoicing$/);
    await page.getByLabel('Default hourly rate').fill('120.50');
    await page.getByLabel('Payment terms (days)').fill('14');
    await page.getByRole('button', { name: 'Save invoicing settings' }).click();
    await page.waitForLoadState('load');
    await expectText(page, 'Invoicing settings saved.');
    await check(page, 'invoicing-settings');
    await page.goto(projectUrl + '/time');
    await page.getByRole('button', { name: 'Start timer' }).click();
    await page.waitForURL(/\/time#timer$/);
    await expectText(page, 'Timer running');
    await check(page, 'timer-running');
    await page.getByRole('button', { name: 'Stop timer' }).click();
    await page.waitForURL(/\/time#timer$/);
    await check(page, 'timer-stopped');
    // The Wireframes entry took longer than typed: corrected on its own page, reached from its
    // row, with the keyboard; the tab says so and shows the new time.
    await page.getByRole('link', { name: /^Edit 1h 30m on / }).click();
    await page.waitForURL(/\/time\/[0-9a-f-]{36}\/edit$/);
    await expectText(page, 'Edit time entry');
    await page.locator('input[name=minutes]').fill('');
    await type(page, 'input[name=minutes]', '1:45');
    await type(page, 'input[name=note]', 'Second round of wireframes');
    await check(page, 'time-edit');
    await page.keyboard.press('Enter');
    await page.waitForURL(/\/time$/);
    await expectText(page, 'Time entry saved.');
    await expectText(page, '1h 45m');
    await page.goto(`${BASE}/o/${slug}/time`);
    await page.getByRole('link', { name: 'Week', exact: true }).click();
    await page.waitForURL(/\/time\/week/);
    await expectText(page, 'Your week');
    await check(page, 'time-week');
    await page.getByRole('link', { name: 'Totals per project and client' }).click();
    await page.waitForURL(/\/time\/report/);
    await check(page, 'time-report');
    // Weekly approval: Max joins the project and records time (not billable); the owner finds
    // Max's week awaiting approval from the Time page and approves it as it is shown; Max's
    // entry then says Approved and offers no Edit.
    await page.goto(projectUrl + '/people');
    await page.getByLabel('Person').selectOption({ label: 'Max Member (Member)' });
    await page.getByRole('button', { name: 'Add to project' }).click();
    await page.waitForLoadState('load');
    await mpage.goto(projectUrl + '/time');
    await mpage.getByRole('textbox', { name: 'Time', exact: true }).click();
    await mpage.keyboard.type('2:00');
    await mpage.getByRole('textbox', { name: 'Note', exact: true }).click();
    await mpage.keyboard.type('Design review');
    await mpage.locator('select[name=billable]').selectOption('no');
    await mpage.getByRole('button', { name: 'Record time' }).click();
    await mpage.waitForURL(/\/time$/);
    await page.goto(`${BASE}/o/${slug}/time`);
    await page.getByRole('link', { name: 'Approvals', exact: true }).click();
    await page.waitForURL(/\/time\/approvals$/);
    await expectText(page, 'Max Member');
    await check(page, 'time-approvals');
    await page.getByRole('link', { name: 'Max Member', exact: true }).click();
    await page.waitForURL(/\/time\/week\?/);
    await expectText(page, 'Awaiting approval: 1 entry (2h).');
    await page.getByRole('button', { name: 'Approve this week' }).click();
    await page.waitForURL(/#approval$/);
    await expectText(page, 'Week approved.');
    await expectText(page, 'Approved: 1 entry (2h), last by Olivia Owner');
    await check(page, 'time-approved');
    await mpage.goto(projectUrl + '/time');
    await expectText(mpage, 'Approved');
    if (await mpage.getByRole('link', { name: /^Edit 2h on / }).count()) problems.push('approved time still offers Edit');
    // What the project cost beyond time: an expense from the project's Expenses tab, typed with
    // the keyboard; a comma as the decimal mark is refused, naming the field, and kept.
    await page.goto(projectUrl);
    await page.getByRole('link', { name: 'Expenses', exact: true }).click();
    await page.waitForURL(/\/expenses$/);
    await check(page, 'expenses-empty');
    await type(page, 'input[name=category]', 'Printing');
    await type(page, 'input[name=amount]', '120,50');
    await type(page, 'input[name=note]', 'Proofs of the brochure');
    expectRefusal = true;
    await page.keyboard.press('Enter');
    await page.waitForLoadState('load');
    await expectText(page, 'must be a number with at most 2 decimals');
    await check(page, 'expense-refused');
    expectRefusal = false;
    await page.locator('input[name=amount]').fill('120.50');
    await page.getByRole('button', { name: 'Record expense' }).click();
    await page.waitForURL(/\/expenses$/);
    await expectText(page, 'Expense recorded.');
    await expectText(page, 'Proofs of the brochure');
    await check(page, 'expenses');
    // Its receipt, a file of the project (the brief stands in for it), attached from its row.
    await page.getByRole('combobox', { name: /^Receipt for Printing/ }).selectOption({ label: 'brief.txt' });
    await page.getByRole('button', { name: 'Attach receipt' }).click();
    await page.waitForURL(/\/expenses$/);
    await expectText(page, 'Receipt saved.');
    await page.getByRole('link', { name: 'Receipt', exact: true }).waitFor();
    await check(page, 'expense-receipt');
    // A mistyped amount is corrected on the expense's own page, reached from its row.
    await page.getByRole('link', { name: /^Edit Printing/ }).click();
    await page.waitForURL(/\/expenses\/[0-9a-f-]{36}\/edit$/);
    await expectText(page, 'Edit expense');
    await page.locator('input[name=amount]').fill('');
    await type(page, 'input[name=amount]', '125.00');
    await check(page, 'expense-edit');
    await page.getByRole('button', { name: 'Save' }).click();
    await page.waitForURL(/\/expenses$/);
    await expectText(page, 'Expense saved.');
    await expectText(page, '125.00 USD');
    // The budget counts the billable expenses too once the project says so, on its edit page.
    await page.getByRole('link', { name: 'Edit project' }).click();
    await page.waitForURL(/\/edit$/);
    await page.getByRole('checkbox', { name: /^Count billable expenses against the budget/ }).check();
    await page.getByRole('button', { name: 'Save' }).click();
    await page.waitForLoadState('load');
    await expectText(page, 'and its billable expenses (125.00 of it)');
    await check(page, 'budget-with-expenses');
    // The month's expenses across projects, found from the Time page.
    await page.goto(`${BASE}/o/${slug}/time`);
    await page.getByRole('link', { name: 'Expenses', exact: true }).click();
    await page.waitForURL(/\/time\/expenses$/);
    await expectText(page, 'Per category');
    await expectText(page, 'Proofs of the brochure');
    await check(page, 'expense-report');
    // What waits to be billed, per client, found from the invoices page.
    await page.goto(`${BASE}/o/${slug}/invoices`);
    await page.getByRole('link', { name: 'To invoice', exact: true }).click();
    await page.waitForURL(/\/invoices\/uninvoiced$/);
    await expectText(page, '125.00 USD (1 expense)');
    await page.getByRole('link', { name: 'Acme Corp', exact: true }).waitFor();
    await check(page, 'to-invoice');
    await page.goto(projectUrl + '/invoices');
    await page.getByRole('link', { name: /New invoice/ }).click();
    await page.waitForURL(/\/invoices\/new/);
    await page.getByRole('button', { name: /create|save/i }).first().click();
    await page.waitForURL(/\/invoices\/[0-9a-f-]{36}$/);
    // Time recorded before the default rate was set is offered at today's rate.
    await expectText(page, "120.50 (today's rate)");
    await check(page, 'invoice-add-time');
    // On a phone the entries' table is wider than the screen: it scrolls sideways in its wrap,
    // and the keyboard reaches that wrap (after the filters, before the first entry) and
    // scrolls it with the arrow keys.
    await page.setViewportSize({ width: 390, height: 844 });
    const entries = page.locator('.table-wrap', { has: page.locator('input[name="entry"]') });
    await page.waitForFunction(() => document.querySelector('.table-wrap[data-scrolls] input[name="entry"]') !== null, null, { timeout: 5000 })
      .catch(() => problems.push('the time entries\' table does not scroll at 390 px (or is not marked as scrolling)'));
    if ((await entries.getAttribute('tabindex')) === '0') {
      await page.locator('input[name="approved_only"]').focus();
      await page.keyboard.press('Tab');
      const focused = await entries.evaluate((wrap) => document.activeElement === wrap);
      if (!focused) problems.push('Tab from the filters does not reach the scrolling table of time entries');
      const label = await entries.getAttribute('aria-label');
      if (label !== 'Add time (table)') problems.push(`the scrolling table of time entries is named ${JSON.stringify(label)}`);
      for (let i = 0; i < 5; i += 1) await page.keyboard.press('ArrowRight');
      // Keyboard scrolling is animated: the offset grows over a few frames.
      await page.waitForFunction((wrap) => wrap.scrollLeft > 0, await entries.elementHandle(), { timeout: 3000 })
        .catch(() => problems.push('the arrow keys do not scroll the focused table of time entries'));
    }
    await page.setViewportSize({ width: 1280, height: 800 });
    await page.getByRole('button', { name: 'Add time to invoice' }).click();
    await page.waitForLoadState('load');
    await expectText(page, 'Wireframes');
    await expectText(page, '120.50');
    await check(page, 'invoice-from-time');
    // The expense goes on the same draft, a line of its own.
    await page.getByRole('checkbox', { name: /^Bill Printing/ }).check();
    await page.getByRole('button', { name: 'Add expenses to invoice' }).click();
    await page.waitForLoadState('load');
    await expectText(page, 'Expenses added to the invoice.');
    await expectText(page, 'Printing — ');
    await check(page, 'invoice-with-expense');
    await page.getByRole('button', { name: 'Send', exact: true }).click();
    await page.waitForLoadState('load');
    await expectText(page, 'INV-');
    await check(page, 'invoice-sent');
    const invoiceId = page.url().match(/invoices\/([0-9a-f-]{36})/)[1];
    // The client pays part of it: recorded with the keyboard, and what is left follows.
    await page.getByLabel(/^Amount/).click();
    await page.keyboard.press('Control+A');
    await page.keyboard.type('20');
    await page.keyboard.press('Enter');
    await page.waitForURL(/#payments$/);
    await expectText(page, 'still owed');
    await expectText(page, 'Balance due');
    await check(page, 'invoice-part-paid');
    // On a phone the invoice's lines fit the screen: each line a block, its figures labelled.
    await page.setViewportSize({ width: 390, height: 844 });
    const linesFit = await page.locator('table.lines').evaluate((t) => t.parentElement.scrollWidth <= t.parentElement.clientWidth);
    if (!linesFit) problems.push("the invoice's lines are wider than a phone's screen");
    await page.setViewportSize({ width: 1280, height: 800 });
    // The money received this month, found from the invoices list.
    await page.goto(`${BASE}/o/${slug}/invoices`);
    await page.getByRole('link', { name: 'Payments received', exact: true }).click();
    await page.waitForURL(/\/invoices\/payments$/);
    await expectText(page, 'in 1 payment from');
    await check(page, 'payments-received');
    // Next month's invoice starts as a copy of this one: a draft issued today, opened at once.
    await page.goto(`${BASE}/o/${slug}/invoices/${invoiceId}`);
    await page.getByRole('button', { name: 'Duplicate', exact: true }).click();
    await page.waitForURL((url) => /\/invoices\/[0-9a-f-]{36}$/.test(url.pathname) && !url.pathname.endsWith(invoiceId));
    await expectText(page, 'Copied as a new draft');
    await expectText(page, 'Wireframes');
    await check(page, 'invoice-duplicated');
    // The copy becomes the retainer's monthly invoice: repeated from next month, each copy
    // sent to the client. Set up with the keyboard; the list of repeats, found from the invoices.
    await page.getByLabel('Every', { exact: true }).fill('1');
    await page.getByRole('checkbox', { name: /Send each copy to the client/ }).focus();
    await page.keyboard.press('Space');
    await page.getByRole('button', { name: 'Repeat this invoice' }).press('Enter');
    await page.waitForURL(/#repeat$/);
    await expectText(page, 'Repeat set up');
    await expectText(page, 'A copy every month, counted from');
    await expectText(page, 'sent to the client by email');
    await check(page, 'invoice-repeating');
    // The client asks for fortnightly invoices instead: the schedule is changed in place, from
    // its next copy on.
    await page.getByText('Change the schedule', { exact: true }).click();
    await page.locator('details.repeat-change input[name=every]').fill('2');
    await page.locator('details.repeat-change select[name=unit]').selectOption('week');
    await page.getByRole('button', { name: 'Save the schedule' }).click();
    await page.waitForURL(/#repeat$/);
    await expectText(page, 'Schedule saved.');
    await expectText(page, 'A copy every 2 weeks, counted from');
    await check(page, 'repeat-changed');
    await page.goto(`${BASE}/o/${slug}/invoices`);
    await page.getByRole('link', { name: 'Repeating invoices', exact: true }).click();
    await page.waitForURL(/\/invoices\/repeating$/);
    await expectText(page, 'Running');
    await check(page, 'repeating-invoices');
    // The client's page says what it owes now.
    await page.goto(`${BASE}/o/${slug}/clients`);
    await page.getByRole('link', { name: 'Acme Corp', exact: true }).click();
    await page.waitForURL(/\/clients\/[0-9a-f-]{36}$/);
    await expectText(page, 'owed on 1 sent invoice');
    await check(page, 'client-money');
    // Its statement: this month's invoice and part payment, each with the balance after it.
    await page.getByRole('link', { name: 'Statement', exact: true }).click();
    await page.waitForURL(/\/clients\/[0-9a-f-]{36}\/statement$/);
    await expectText(page, 'Balance brought forward');
    await expectText(page, 'Payment for INV-');
    await check(page, 'client-statement');
    // Mailing it needs the client's billing email, which Acme Corp has not given: the page says so.
    expectRefusal = true;
    await page.getByRole('button', { name: 'Email this statement to the client' }).click();
    await page.waitForLoadState('load');
    await expectText(page, "This client has no billing email: add one on the client's page first.");
    expectRefusal = false;
    await check(page, 'statement-not-mailed');
    // Printed, it is the statement alone: no navigation, no range form, no buttons.
    await page.emulateMedia({ media: 'print' });
    for (const hidden of ['header.top', 'form.filters', '[data-print]', 'text=browser\'s Print command', 'text=Email this statement', 'footer.bottom']) {
      if (await page.locator(hidden).first().isVisible()) problems.push(`printing the statement shows ${hidden}`);
    }
    if (!(await page.getByText('Balance brought forward').isVisible())) problems.push('printing the statement hides the statement');
    await page.emulateMedia({ media: 'screen' });
    // The project's budget shows what its billable time has used, from the projects list too.
    await page.goto(`${BASE}/o/${slug}/projects`);
    await expectText(page, '% used');
    await check(page, 'projects');
    await page.getByRole('link', { name: 'Website relaunch' }).click();
    await page.waitForURL(/\/projects\/[0-9a-f-]{36}$/);
    const budget = (await page.locator('#budget').innerText()).replace(/\s+/g, ' ');
    if (!/^Budget [A-Z]{3} 2000\.00: \d+\.\d\d used \(\d+%\), \d+\.\d\d left\./.test(budget)) {
      problems.push(`the project's budget reads ${JSON.stringify(budget)}`);
    }
    await check(page, 'project-budget');
    // The next engagement starts as a copy of this one: the board and its tasks, dates moved.
    await page.getByRole('link', { name: 'Copy project', exact: true }).click();
    await page.waitForURL(/\/copy$/);
    await expectText(page, 'stay with this project');
    await check(page, 'project-copy');
    await page.getByLabel('Name').fill('Spring campaign');
    await page.getByLabel('Start date').fill('2027-03-01');
    await page.getByRole('button', { name: 'Copy project' }).press('Enter');
    await page.waitForURL(/\/projects\/[0-9a-f-]{36}$/);
    await expectText(page, 'Project copied.');
    await expectText(page, 'Starts 2027-03-01');
    await expectText(page, 'Wireframes');
    await check(page, 'project-copied');
    await cpage.goto(`${BASE}/portal/${slug}`);
    await cpage.getByRole('link', { name: /INV-/ }).first().click();
    await cpage.waitForURL(new RegExp(`/portal/${slug}/invoices/${invoiceId}`));
    await expectText(cpage, 'Balance due');
    await check(cpage, 'portal-invoice');
    // The client's statement, from the portal's home: what it owes after each invoice and payment.
    await cpage.goto(`${BASE}/portal/${slug}`);
    await cpage.getByRole('link', { name: 'Statement', exact: true }).click();
    await cpage.waitForURL(new RegExp(`/portal/${slug}/statement$`));
    await expectText(cpage, 'Balance brought forward');
    await check(cpage, 'portal-statement');
    await cpage.goto(`${BASE}/portal/${slug}/invoices/${invoiceId}`);
    // The client downloads the invoice as a PDF: a real download, and a PDF of this invoice.
    const [download] = await Promise.all([
      cpage.waitForEvent('download'),
      cpage.getByRole('link', { name: 'Download PDF' }).click(),
    ]);
    const pdfPath = await download.path();
    const pdf = (await import('node:fs')).readFileSync(pdfPath);
    if (pdf.subarray(0, 5).toString('latin1') !== '%PDF-') {
      problems.push(`the portal's "Download PDF" gave no PDF (${download.suggestedFilename()})`);
    }
    if (!/^invoice-INV-\d{4}-\d{4}\.pdf$/.test(download.suggestedFilename())) {
      problems.push(`the portal's PDF is named ${download.suggestedFilename()}`);
    }
    if (!pdf.toString('latin1').includes('INV-')) {
      problems.push('the portal\'s PDF does not show the invoice number');
    }
  }
  // ==== The owners' control of their data: an export started from the settings tabs (with the
  // password and a second-factor code), the organization's deletion page reached from billing,
  // and the person's own account deletion on the account page. Nothing is deleted. ====
  {
    await page.goto(`${BASE}/o/${slug}/settings`);
    await page.getByRole('link', { name: 'Data export', exact: true }).click();
    await page.waitForURL(/\/settings\/export$/);
    await check(page, 'export');
    await type(page, 'input[name=current_password]', PASSWORD);
    await type(page, 'input[name=code]', await freshTotp(secret));
    await page.getByRole('button', { name: 'Export all data' }).click();
    await page.waitForLoadState('load');
    await expectText(page, 'Recent exports');
    await check(page, 'export-started');
    await page.getByRole('link', { name: 'Billing', exact: true }).click();
    await page.waitForURL(/\/settings\/billing$/);
    await page.getByRole('link', { name: /Delete this organization/ }).click();
    await page.waitForURL(/\/settings\/deletion$/);
    await expectText(page, 'Delete this organization');
    await check(page, 'organization-deletion');
    await page.goto(`${BASE}/account/security`);
    await expectText(page, 'Delete my account');
    await check(page, 'account-deletion');
  }
} catch (e) {
  problems.push(`the journey stopped: ${e.stack || e}`);
} finally {
  await browser.close();
}
if (problems.length) {
  console.log(`FAILED with ${problems.length} problem(s):`);
  for (const p of problems) console.log(' - ' + p);
  process.exit(1);
}
console.log(`journey passed: ${step} pages checked`);
process.exit(0);
