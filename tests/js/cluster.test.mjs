// The real centrifuge npm client against two hub nodes joined by Redis: HUB_WS_URL and
// HUB_API_URL are node A, HUB_WS_URL_B and HUB_API_URL_B node B.
import { afterEach, test } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import { Centrifuge } from 'centrifuge';
import { API_KEY, client, disconnectAll, once, token, unique } from './helpers.mjs';

const WS_URL_B = process.env.HUB_WS_URL_B;
const API_URL_B = process.env.HUB_API_URL_B;
if (!WS_URL_B || !API_URL_B) throw new Error('HUB_WS_URL_B and HUB_API_URL_B must be set');

afterEach(disconnectAll);

async function apiB(method, params) {
  const res = await fetch(`${API_URL_B}/api/${method}`, {
    method: 'POST',
    headers: { 'X-API-Key': API_KEY, 'Content-Type': 'application/json' },
    body: JSON.stringify(params),
  });
  return res.json();
}

test('a client on node A receives what is published through the API of node B', async () => {
  const c = client({ token: token({ sub: unique('u') }) });
  c.connect();
  await once(c, 'connected');
  const channel = unique('news');
  const sub = c.newSubscription(channel);
  sub.subscribe();
  await once(sub, 'subscribed');
  for (let i = 1; i <= 3; i++) {
    const got = once(sub, 'publication');
    const res = await apiB('publish', { channel, data: { n: i } });
    assert.equal(res.result.offset, i);
    const p = await got;
    assert.deepEqual(p.data, { n: i });
    assert.equal(p.offset, i);
  }
  const presence = await apiB('presence', { channel });
  assert.equal(Object.keys(presence.result.presence).length, 1);
});

test('a client that moves from node A to node B recovers what it missed', async () => {
  const user = unique('u');
  const channel = unique('news');
  const a = client({ token: token({ sub: user }) });
  a.connect();
  await once(a, 'connected');
  const subA = a.newSubscription(channel);
  subA.subscribe();
  const subscribedA = await once(subA, 'subscribed');
  const epoch = subscribedA.streamPosition.epoch;
  assert.ok(epoch, 'the subscription is positioned in a stream');
  const first = once(subA, 'publication');
  await apiB('publish', { channel, data: { n: 1 } });
  const p1 = await first;
  a.disconnect();
  await apiB('publish', { channel, data: { n: 2 } });
  await apiB('publish', { channel, data: { n: 3 } });

  const b = new Centrifuge(WS_URL_B, { websocket: WebSocket, token: token({ sub: user }) });
  try {
    b.connect();
    await once(b, 'connected');
    const subB = b.newSubscription(channel, { since: { offset: p1.offset, epoch } });
    const got = [];
    subB.on('publication', (ctx) => got.push(ctx.data.n));
    const subscribed = once(subB, 'subscribed');
    subB.subscribe();
    const ctx = await subscribed;
    assert.equal(ctx.wasRecovering, true);
    assert.equal(ctx.recovered, true);
    await new Promise((r) => setTimeout(r, 200));
    assert.deepEqual(got, [2, 3]);
  } finally {
    b.disconnect();
  }
});
