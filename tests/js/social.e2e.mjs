// The social-app page end to end in headless Chromium (playwright-core driving Debian's
// /usr/bin/chromium): two browser contexts are two users.
//
//   node social.e2e.mjs <base-url> <artifact-dir>
//
// Both sign up through the page; A finds B by name prefix and befriends; B sees the request
// live and approves; A posts and B's open feed shows it without a reload; a post made of
// markup shows as text and runs nothing; A opens a dialog with B and writes; B sees the
// unread badge live, opens the chat, the badge clears; B replies and A sees it live.
// A screenshot after each step goes to <artifact-dir>. Exits non-zero on any failure.

import { mkdirSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const [base, artifacts] = process.argv.slice(2);
if (!base || !artifacts) {
  console.error('usage: node social.e2e.mjs <base-url> <artifact-dir>');
  process.exit(2);
}
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
if (!existsSync(CHROMIUM)) {
  console.error(`FAIL: ${CHROMIUM} not found (scripts/test.sh installs Debian's chromium)`);
  process.exit(2);
}
mkdirSync(artifacts, { recursive: true });

const WAIT = 15_000; // every wait is bounded
const tag = Math.random().toString(36).slice(2, 7);
const users = {
  a: { first: 'Alice', last: 'Anders', email: `alice.${tag}@e2e.test`, city: 'Lisbon', interests: 'music, chess' },
  b: { first: 'Boris', last: 'Brandt', email: `boris.${tag}@e2e.test`, city: 'Berlin', interests: 'hiking' },
};

let step = 0;
let current = 'start';
const problems = []; // page errors and CSP violations, per page
const t0 = Date.now();

function log(msg) {
  console.log(`[${((Date.now() - t0) / 1000).toFixed(1)}s] ${msg}`);
}

const sel = (test, extra = '') => `[data-test="${test}"]${extra}`;

async function shot(page, name) {
  const file = join(artifacts, name);
  await page.screenshot({ path: file, fullPage: true });
  return file;
}

// One named step; a screenshot of `pages` (name -> page) when it is done.
async function stepDo(name, pages, fn) {
  current = name;
  step += 1;
  const n = String(step).padStart(2, '0');
  log(`step ${n}: ${name}`);
  await fn();
  const entries = Object.entries(pages);
  for (const [who, page] of entries) {
    await shot(page, entries.length === 1 ? `${n}-${name}.png` : `${n}-${name}-${who}.png`);
  }
  if (problems.length) throw new Error(`page problems: ${problems.join(' | ')}`);
}

function watch(page, who) {
  page.on('pageerror', (e) => problems.push(`${who}: page error: ${e.message}`));
  page.on('console', (m) => {
    const text = m.text();
    if (/Content Security Policy|Refused to/i.test(text)) problems.push(`${who}: CSP: ${text}`);
    else if (m.type() === 'error' && !/Failed to load resource.*401/.test(text)) console.log(`  (${who} console.error) ${text}`);
  });
  page.on('dialog', (d) => d.accept()); // confirm() of "remove friend"
}

async function signUp(page, u) {
  await page.goto(base, { waitUntil: 'domcontentloaded' });
  await page.locator(sel('signup-form')).waitFor({ state: 'visible' });
  await page.fill(sel('signup-first'), u.first);
  await page.fill(sel('signup-last'), u.last);
  await page.fill(sel('signup-email'), u.email);
  await page.fill(sel('signup-password'), 'correct horse battery');
  await page.fill(sel('signup-birthday'), '1990-04-12');
  await page.fill(sel('signup-city'), u.city);
  await page.fill(sel('signup-interests'), u.interests);
  if (u === users.a) await shot(page, '00-sign-up-form.png');
  await page.click(sel('signup-submit'));
  await page.locator(sel('app')).waitFor({ state: 'visible' });
  const name = await page.locator(sel('me-name')).textContent();
  if (name !== `${u.first} ${u.last}`) throw new Error(`signed in as "${name}", expected ${u.first} ${u.last}`);
  await page.locator(sel('live-status', '[data-state="live"]')).waitFor();
  u.id = await page.evaluate(() => fetch('/api/me', { credentials: 'same-origin' }).then((r) => r.json()).then((d) => d.user.id));
}

const browser = await chromium.launch({
  executablePath: CHROMIUM,
  args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'],
  timeout: 60_000,
});
const ctxA = await browser.newContext({ viewport: { width: 1400, height: 900 } });
const ctxB = await browser.newContext({ viewport: { width: 1400, height: 900 } });
ctxA.setDefaultTimeout(WAIT);
ctxB.setDefaultTimeout(WAIT);
const a = await ctxA.newPage();
const b = await ctxB.newPage();
watch(a, 'A');
watch(b, 'B');

let failed = false;
try {
  await stepDo('signed-up', { a, b }, async () => {
    await signUp(a, users.a);
    await signUp(b, users.b);
    const headers = await a.evaluate(() => fetch('/').then((r) => r.headers.get('content-security-policy')));
    if (!/script-src 'self'/.test(headers || '')) throw new Error(`no CSP on the page: ${headers}`);
  });

  await stepDo('request-sent', { a }, async () => {
    await a.fill(sel('search-input'), users.b.first.slice(0, 3));
    await a.click(sel('search-submit'));
    const row = a.locator(sel('search-results')).locator(sel('person', `[data-user-id="${users.b.id}"]`));
    await row.waitFor();
    await row.locator(sel('befriend')).click();
    await row.locator(sel('relation')).filter({ hasText: 'request sent' }).waitFor();
    await a.locator(sel('outgoing-list')).locator(`[data-user-id="${users.b.id}"]`).waitFor();
  });

  await stepDo('approved', { a, b }, async () => {
    // B never reloads: the request arrives live.
    const req = b.locator(sel('requests-list')).locator(sel('request', `[data-user-id="${users.a.id}"]`));
    await req.waitFor();
    await b.locator(sel('requests-count')).filter({ hasText: '1' }).waitFor();
    await req.locator(sel('approve')).click();
    await b.locator(sel('friends-list')).locator(sel('friend', `[data-user-id="${users.a.id}"]`)).waitFor();
    // A learns of the friendship live.
    await a.locator(sel('friends-list')).locator(sel('friend', `[data-user-id="${users.b.id}"]`)).waitFor();
    await a.locator(sel('outgoing-list')).locator(`[data-user-id="${users.b.id}"]`).waitFor({ state: 'detached' });
  });

  const hello = `Hello from Alice! First live post (${tag}).`;
  await stepDo('post-live', { b }, async () => {
    await b.evaluate(() => { window.__sameDocument = 'yes'; });
    await a.fill(sel('post-text'), hello);
    await a.click(sel('post-submit'));
    await a.locator(sel('feed-list')).locator(sel('post-text')).first().filter({ hasText: hello }).waitFor();
    const first = b.locator(sel('feed-list')).locator(sel('post')).first();
    await first.locator(sel('post-text')).filter({ hasText: hello }).waitFor();
    const author = await first.locator(sel('post-author')).textContent();
    if (author !== `${users.a.first} ${users.a.last}`) throw new Error(`post author shown as "${author}"`);
    const same = await b.evaluate(() => window.__sameDocument);
    if (same !== 'yes') throw new Error("B's page was reloaded: the post did not arrive live");
  });

  const evil = '<img src=x onerror="window.__xss=1">';
  await stepDo('xss-as-text', { b }, async () => {
    await a.fill(sel('post-text'), evil);
    await a.click(sel('post-submit'));
    for (const [who, page] of [['A', a], ['B', b]]) {
      const first = page.locator(sel('feed-list')).locator(sel('post')).first();
      await first.locator(sel('post-text')).filter({ hasText: 'onerror' }).waitFor();
      const text = await first.locator(sel('post-text')).textContent();
      if (text !== evil) throw new Error(`${who}: the markup post shows as "${text}", expected the literal text`);
    }
    await b.waitForTimeout(500); // give a (wrongly) created <img> the time to fail and fire
    for (const [who, page] of [['A', a], ['B', b]]) {
      const imgs = await page.locator('[data-test="feed-list"] img').count();
      const xss = await page.evaluate(() => window.__xss);
      if (imgs !== 0 || xss !== undefined) throw new Error(`${who}: XSS: ${imgs} <img> in the feed, window.__xss=${xss}`);
    }
  });

  const msg1 = `Hi Boris, it's Alice (${tag})`;
  let chatId;
  await stepDo('message-sent', { a }, async () => {
    const friend = a.locator(sel('friends-list')).locator(sel('friend', `[data-user-id="${users.b.id}"]`));
    await friend.locator(sel('message')).click();
    await a.locator(sel('chat-view')).waitFor({ state: 'visible' });
    chatId = await a.locator(sel('chat-view')).getAttribute('data-chat-id');
    if (!chatId) throw new Error('the chat view has no chat id');
    await a.fill(sel('message-text'), msg1);
    await a.click(sel('message-send'));
    await a.locator(sel('messages')).locator(sel('message-body')).filter({ hasText: msg1 }).waitFor();
  });

  await stepDo('unread-badge', { b }, async () => {
    const chat = b.locator(sel('chats-list')).locator(sel('chat', `[data-chat-id="${chatId}"]`));
    await chat.waitFor();
    const badge = chat.locator(sel('unread-badge'));
    await badge.filter({ hasText: /^1$/ }).waitFor({ state: 'visible' });
  });

  await stepDo('chat-open', { b }, async () => {
    const chat = b.locator(sel('chats-list')).locator(sel('chat', `[data-chat-id="${chatId}"]`));
    await chat.click();
    await b.locator(sel('chat-view', `[data-chat-id="${chatId}"]`)).waitFor({ state: 'visible' });
    await b.locator(sel('messages')).locator(sel('message-body')).filter({ hasText: msg1 }).waitFor();
    await b.locator(sel('chats-list')).locator(sel('chat', `[data-chat-id="${chatId}"]`))
      .locator(sel('unread-badge')).waitFor({ state: 'hidden' });
    // Read on the server too.
    await b.waitForFunction(async (id) => {
      const r = await fetch('/api/chats', { credentials: 'same-origin' }).then((x) => x.json());
      const c = r.chats.find((x) => x.id === id);
      return c && c.unread === 0;
    }, chatId, { timeout: WAIT, polling: 250 });
  });

  const msg2 = `Hey Alice! Got it <b>live</b> (${tag})`;
  await stepDo('reply-live', { a, b }, async () => {
    await b.fill(sel('message-text'), msg2);
    await b.click(sel('message-send'));
    await b.locator(sel('messages')).locator(sel('message-body')).filter({ hasText: msg2 }).waitFor();
    const got = a.locator(sel('messages')).locator(sel('message-body')).filter({ hasText: msg2 });
    await got.waitFor();
    const text = await got.textContent();
    if (text !== msg2) throw new Error(`A shows the reply as "${text}"`);
    // Ordered by seq, and A's open chat carries no unread badge.
    const seqs = await a.locator(sel('messages')).locator(sel('message-item')).evaluateAll((els) => els.map((e) => Number(e.dataset.seq)));
    if (seqs.join(',') !== '1,2') throw new Error(`A's messages in order ${seqs.join(',')}, expected 1,2`);
    await a.locator(sel('chats-list')).locator(sel('chat', `[data-chat-id="${chatId}"]`))
      .locator(sel('unread-badge')).waitFor({ state: 'hidden' });
  });

  log(`PASS: ${step} steps; screenshots in ${artifacts}`);
} catch (e) {
  failed = true;
  console.error(`FAIL at step "${current}": ${e && e.message ? e.message : e}`);
  for (const [who, page] of [['a', a], ['b', b]]) {
    try { await shot(page, `failure-${who}.png`); } catch (_) { /* the page is gone */ }
  }
  console.error(`screenshots in ${artifacts}`);
} finally {
  await browser.close().catch(() => {});
}
process.exit(failed ? 1 : 0);
