// The real centrifuge npm client through nginx (nginx/hub.conf) in front of two hub nodes:
// HUB_WS_URL and HUB_API_URL are nginx. Driven by hub-server/tests/nginx.rs, which kills -9
// the node this client is on between two steps; the files in HUB_SYNC_DIR say when.
import { afterEach, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { api, client, disconnectAll, once, sleep, token, unique } from './helpers.mjs';

const SYNC_DIR = process.env.HUB_SYNC_DIR;
if (!SYNC_DIR) throw new Error('HUB_SYNC_DIR must be set (hub-server/tests/nginx.rs sets it)');

afterEach(disconnectAll);

/** Tells the Rust side that step `name` is reached (writes `name`, holding `data`), then
 *  waits for its go-ahead (the file `name.ok`). */
async function step(name, data = '', ms = 30000) {
  const path = join(SYNC_DIR, name);
  await writeFile(`${path}.tmp`, data);
  await rename(`${path}.tmp`, path); // never seen half-written
  const deadline = Date.now() + ms;
  while (!existsSync(`${path}.ok`)) {
    if (Date.now() > deadline) throw new Error(`no go-ahead for step ${name} within ${ms} ms`);
    await sleep(50);
  }
}

test('through nginx, a client whose node is killed reconnects to another node and recovers', async () => {
  const channel = unique('news');
  // The reconnect waits at least 1.5 s, so the publications below are surely missed.
  const c = client({ token: token({ sub: unique('u') }), minReconnectDelay: 1500, maxReconnectDelay: 3000 });
  let connects = 0;
  c.on('connected', () => connects++);
  const sub = c.newSubscription(channel);
  const got = [];
  sub.on('publication', (ctx) => got.push([ctx.offset, ctx.data.n]));

  const subscribed = once(sub, 'subscribed');
  c.connect();
  sub.subscribe();
  const first = await subscribed;
  assert.equal(first.recoverable, true, 'without_namespace forces recovery');
  const published = once(sub, 'publication');
  const res = await api('publish', { channel, data: { n: 1 } }); // through nginx's /api
  assert.equal(res.result.offset, 1);
  await published;

  const lost = once(c, 'connecting', 30000);
  const resubscribed = once(sub, 'subscribed', 30000);
  // The Rust side kills our node and publishes n=2 and n=3 through nginx meanwhile.
  await step('subscribed', channel);
  await lost;
  const ctx = await resubscribed;
  assert.equal(ctx.wasRecovering, true);
  assert.equal(ctx.recovered, true, 'the other node recovers from the shared Redis history');
  assert.equal(connects, 2, 'one reconnect, through the same nginx address');
  await sleep(300); // nothing arrives twice late
  assert.deepEqual(got, [[1, 1], [2, 2], [3, 3]], 'each publication once, in order');

  // The Rust side checks which node holds us now before we leave.
  await step('recovered');
});
