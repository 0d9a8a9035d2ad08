// The Protobuf build of the real centrifuge npm client (centrifuge/build/protobuf, Node 20 +
// ws, subprotocol `centrifuge-protobuf`) against hub-server: the same sequence as the JSON
// acceptance suite, with payloads as bytes; and JSON and Protobuf subscribers of one channel.
import { afterEach, test } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import { Centrifuge as ProtobufCentrifuge } from 'centrifuge/build/protobuf';
import { API_URL, WS_URL, api, client, disconnectAll, once, sleep, token, unique } from './helpers.mjs';

const live = new Set();
afterEach(() => {
  for (const c of live) c.disconnect();
  live.clear();
  disconnectAll();
});

/** A Protobuf client. */
function pbClient(opts = {}) {
  const c = new ProtobufCentrifuge(WS_URL, { websocket: WebSocket, ...opts });
  live.add(c);
  return c;
}

const enc = (v) => new TextEncoder().encode(JSON.stringify(v));
const dec = (bytes) => JSON.parse(new TextDecoder().decode(bytes));

test('protobuf: connect, subscribe, publish through the API and from the client', async () => {
  const user = unique('pb');
  const c = pbClient({ token: token({ sub: user }) });
  c.connect();
  const ctx = await once(c, 'connected');
  assert.ok(ctx.client);
  assert.equal(ctx.transport, 'websocket');
  const channel = unique('chat:pb');
  const s = c.newSubscription(channel);
  s.subscribe();
  await once(s, 'subscribed');
  // A JSON payload published through the API arrives as its UTF-8 bytes.
  let got = once(s, 'publication');
  await api('publish', { channel, data: { text: 'hello' } });
  let p = await got;
  assert.ok(p.data instanceof Uint8Array);
  assert.deepEqual(dec(p.data), { text: 'hello' });
  // Binary data published as b64data arrives as the same raw bytes.
  const raw = Uint8Array.from([0, 1, 2, 250, 255]);
  got = once(s, 'publication');
  await api('publish', { channel, b64data: Buffer.from(raw).toString('base64') });
  p = await got;
  assert.deepEqual(Array.from(p.data), Array.from(raw));
  // A client publish (bytes) reaches the subscriber with the publisher's info.
  got = once(s, 'publication');
  await s.publish(enc({ from: 'client' }));
  p = await got;
  assert.deepEqual(dec(p.data), { from: 'client' });
  assert.equal(p.info.user, user);
});

test('protobuf: presence, presence stats and history', async () => {
  const channel = unique('news');
  for (let i = 1; i <= 3; i++) await api('publish', { channel, data: { i } });
  const c = pbClient({ token: token({ sub: unique('u') }) });
  c.connect();
  await once(c, 'connected');
  const s = c.newSubscription(channel);
  s.subscribe();
  await once(s, 'subscribed');
  const presence = await s.presence();
  assert.equal(Object.keys(presence.clients).length, 1);
  assert.deepEqual(await s.presenceStats(), { numClients: 1, numUsers: 1 });
  const h = await s.history({ limit: 10 });
  assert.deepEqual(h.publications.map((p) => dec(p.data).i), [1, 2, 3]);
  assert.equal(h.offset, 3);
  const rev = await s.history({ limit: 2, reverse: true });
  assert.deepEqual(rev.publications.map((p) => p.offset), [3, 2]);
  await assert.rejects(s.history({ limit: 1, since: { offset: 1, epoch: 'wrong' } }), (e) => e.code === 112);
});

test('protobuf: pings are answered with 0x00 and the connection stays up', async () => {
  const c = pbClient({ token: token({ sub: unique('pinger') }) });
  c.connect();
  await once(c, 'connected');
  let dropped = 0;
  c.on('connecting', () => dropped++);
  await sleep(2600); // ping interval is 1 s in the test config
  assert.equal(dropped, 0);
  assert.equal(c.state, 'connected');
});

test('protobuf: after a 3001 close the client reconnects and recovers what it missed', async () => {
  const user = unique('rec');
  const channel = unique('news');
  const c = pbClient({ token: token({ sub: user }), minReconnectDelay: 500, maxReconnectDelay: 1000 });
  c.connect();
  await once(c, 'connected');
  const s = c.newSubscription(channel);
  const seen = [];
  s.on('publication', (p) => seen.push(dec(p.data).n));
  s.subscribe();
  await once(s, 'subscribed');
  await api('publish', { channel, data: { n: 1 } });
  while (seen.length < 1) await sleep(10);
  const connecting = once(c, 'connecting');
  await api('disconnect', { user, disconnect: { code: 3001, reason: 'shutdown' } });
  assert.equal((await connecting).code, 3001);
  for (let n = 2; n <= 4; n++) await api('publish', { channel, data: { n } });
  const again = await once(s, 'subscribed', 8000);
  assert.equal(again.wasRecovering, true);
  assert.equal(again.recovered, true);
  await api('publish', { channel, data: { n: 5 } });
  const deadline = Date.now() + 3000;
  while (seen.length < 5 && Date.now() < deadline) await sleep(10);
  assert.deepEqual(seen, [1, 2, 3, 4, 5]);
});

test('JSON and protobuf subscribers of one channel each receive every publication', async () => {
  const channel = unique('mixed');
  const j = client({ token: token({ sub: unique('json') }) });
  const b = pbClient({ token: token({ sub: unique('pb') }) });
  j.connect();
  b.connect();
  await Promise.all([once(j, 'connected'), once(b, 'connected')]);
  const sj = j.newSubscription(channel);
  const sb = b.newSubscription(channel);
  const fromJson = [];
  const fromPb = [];
  sj.on('publication', (p) => fromJson.push(p.data.n));
  sb.on('publication', (p) => fromPb.push(dec(p.data).n));
  sj.subscribe();
  sb.subscribe();
  await Promise.all([once(sj, 'subscribed'), once(sb, 'subscribed')]);
  for (let n = 1; n <= 20; n++) await api('publish', { channel, data: { n } });
  const deadline = Date.now() + 3000;
  while ((fromJson.length < 20 || fromPb.length < 20) && Date.now() < deadline) await sleep(10);
  const all = Array.from({ length: 20 }, (_, i) => i + 1);
  assert.deepEqual(fromJson, all);
  assert.deepEqual(fromPb, all);
});

test('binary data on a channel closes its JSON subscribers with 3506, protobuf ones receive it', async () => {
  const channel = unique('bin');
  const j = client({ token: token({ sub: unique('json') }) });
  const b = pbClient({ token: token({ sub: unique('pb') }) });
  j.connect();
  b.connect();
  await Promise.all([once(j, 'connected'), once(b, 'connected')]);
  const sj = j.newSubscription(channel);
  const sb = b.newSubscription(channel);
  sj.subscribe();
  sb.subscribe();
  await Promise.all([once(sj, 'subscribed'), once(sb, 'subscribed')]);
  const closed = once(j, 'disconnected');
  const got = once(sb, 'publication');
  await api('publish', { channel, b64data: Buffer.from([0xff, 0x00, 0x10]).toString('base64') });
  assert.deepEqual(Array.from((await got).data), [0xff, 0x00, 0x10]);
  assert.equal((await closed).code, 3506);
  // The server is fine: a new JSON client still works.
  const k = client({ token: token({ sub: unique('json2') }) });
  k.connect();
  await once(k, 'connected');
  assert.ok((await (await fetch(`${API_URL}/health`)).text()).length > 0);
});
