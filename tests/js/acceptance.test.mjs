// The real centrifuge npm client (5.8.x, Node 20 + ws) against hub-server.
import { afterEach, test } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import { api, client, disconnectAll, once, sleep, token, unique, now, API_URL, WS_URL } from './helpers.mjs';

afterEach(disconnectAll);

test('connects with a JWT, subscribes, and receives a publication posted to /api/publish', async () => {
  const user = unique('u');
  const c = client({ token: token({ sub: user }) });
  const connected = once(c, 'connected');
  c.connect();
  const ctx = await connected;
  assert.ok(ctx.client, 'connected ctx carries the client id');
  const channel = unique('news');
  const sub = c.newSubscription(channel);
  const subscribed = once(sub, 'subscribed');
  sub.subscribe();
  await subscribed;
  const pub = once(sub, 'publication');
  const res = await api('publish', { channel, data: { text: 'hello' } });
  assert.equal(res.result.offset, 1);
  assert.ok(res.result.epoch);
  const p = await pub;
  assert.deepEqual(p.data, { text: 'hello' });
  assert.equal(p.offset, 1);
  c.disconnect();
});

test('client-side publish works where allowed and gets 103 where not', async () => {
  const user = unique('u');
  const c = client({ token: token({ sub: user, info: { name: 'Ann' } }) });
  c.connect();
  await once(c, 'connected');
  const chat = c.newSubscription(unique('chat:room'));
  chat.subscribe();
  await once(chat, 'subscribed');
  const got = once(chat, 'publication');
  await chat.publish({ text: 'from client' });
  const p = await got;
  assert.deepEqual(p.data, { text: 'from client' });
  assert.equal(p.info.user, user, 'publisher info is attached');
  assert.deepEqual(p.info.connInfo, { name: 'Ann' });

  const news = c.newSubscription(unique('news'));
  news.subscribe();
  await once(news, 'subscribed');
  await assert.rejects(news.publish({ text: 'nope' }), (e) => e.code === 103);
  c.disconnect();
});

test('presence and presence stats list every subscriber', async () => {
  const channel = unique('news');
  const clients = [];
  const subs = [];
  for (const user of [unique('a'), unique('b')]) {
    const c = client({ token: token({ sub: user }) });
    c.connect();
    await once(c, 'connected');
    const s = c.newSubscription(channel);
    s.subscribe();
    await once(s, 'subscribed');
    clients.push(c);
    subs.push(s);
  }
  const presence = await subs[0].presence();
  assert.equal(Object.keys(presence.clients).length, 2);
  for (const info of Object.values(presence.clients)) {
    assert.ok(info.user && info.client);
  }
  const stats = await subs[0].presenceStats();
  assert.deepEqual(stats, { numClients: 2, numUsers: 2 });
  const viaApi = await api('presence_stats', { channel });
  assert.deepEqual(viaApi.result, { num_clients: 2, num_users: 2 });
  clients.forEach((c) => c.disconnect());
});

test('history returns publications with limit, since and reverse', async () => {
  const channel = unique('news');
  for (let i = 1; i <= 5; i++) await api('publish', { channel, data: { i } });
  const c = client({ token: token({ sub: unique('u') }) });
  c.connect();
  await once(c, 'connected');
  const s = c.newSubscription(channel);
  s.subscribe();
  await once(s, 'subscribed');
  const all = await s.history({ limit: 10 });
  assert.deepEqual(all.publications.map((p) => p.data.i), [1, 2, 3, 4, 5]);
  assert.equal(all.offset, 5);
  assert.ok(all.epoch);
  const since = await s.history({ limit: 2, since: { offset: 2, epoch: all.epoch } });
  assert.deepEqual(since.publications.map((p) => p.offset), [3, 4]);
  const rev = await s.history({ limit: 2, reverse: true });
  assert.deepEqual(rev.publications.map((p) => p.offset), [5, 4]);
  await assert.rejects(s.history({ limit: 1, since: { offset: 1, epoch: 'wrong' } }), (e) => e.code === 112);
  c.disconnect();
});

test('rpc without a handler answers 104', async () => {
  const c = client({ token: token({ sub: unique('u') }) });
  c.connect();
  await once(c, 'connected');
  await assert.rejects(c.rpc('anything', { x: 1 }), (e) => e.code === 104);
  c.disconnect();
});

test('pings are answered over at least three intervals and the connection stays up', async () => {
  const user = unique('pinger');
  const c = client({ token: token({ sub: user }) });
  c.connect();
  const ctx = await once(c, 'connected');
  let dropped = 0;
  c.on('connecting', () => dropped++);
  await sleep(3600); // ping interval is 1 s in the test config
  assert.equal(dropped, 0, 'client never reconnected');
  assert.equal(c.state, 'connected');
  const metrics = await (await fetch(`${API_URL}/metrics`)).text();
  const pongs = metrics.split('\n').find((l) => l.startsWith('hub_commands_total{method="pong"}'));
  assert.ok(pongs && Number(pongs.split(' ').pop()) >= 3, `server counted pongs: ${pongs}`);
  assert.ok(ctx.client);
  c.disconnect();
});

test('after a 3001 close the client reconnects and recovers what it missed, once and in order', async () => {
  const user = unique('rec');
  const channel = unique('news');
  const c = client({ token: token({ sub: user }), minReconnectDelay: 1000, maxReconnectDelay: 1500 });
  c.connect();
  await once(c, 'connected');
  const s = c.newSubscription(channel);
  const seen = [];
  s.on('publication', (p) => seen.push(p.data.n));
  s.subscribe();
  const first = await once(s, 'subscribed');
  assert.equal(first.recoverable, true);
  await api('publish', { channel, data: { n: 1 } });
  while (seen.length < 1) await sleep(10);

  const connecting = once(c, 'connecting');
  await api('disconnect', { user, disconnect: { code: 3001, reason: 'shutdown' } });
  const why = await connecting;
  assert.equal(why.code, 3001);
  for (let n = 2; n <= 4; n++) await api('publish', { channel, data: { n } });
  const again = await once(s, 'subscribed', 8000);
  assert.equal(again.wasRecovering, true);
  assert.equal(again.recovered, true);
  assert.equal(again.hasRecoveredPublications, true);
  await api('publish', { channel, data: { n: 5 } });
  const deadline = Date.now() + 3000;
  while (seen.length < 5 && Date.now() < deadline) await sleep(10);
  await sleep(200);
  assert.deepEqual(seen, [1, 2, 3, 4, 5]);
  c.disconnect();
});

test('an invalid token closes with 3500 and the client does not reconnect', async () => {
  const c = client({ token: token({ sub: 'x' }, 'wrong-secret') });
  let reconnecting = 0;
  const disconnected = once(c, 'disconnected');
  c.connect();
  const ctx = await disconnected;
  assert.equal(ctx.code, 3500);
  c.on('connecting', () => reconnecting++);
  await sleep(1500);
  assert.equal(reconnecting, 0);
  assert.equal(c.state, 'disconnected');
});

test('an expiring token is refreshed and the connection stays up', async () => {
  const user = unique('exp');
  let refreshed = 0;
  const c = client({
    token: token({ sub: user, exp: now() + 2 }),
    getToken: async () => {
      refreshed++;
      return token({ sub: user, exp: now() + 60 });
    },
  });
  c.connect();
  await once(c, 'connected');
  let dropped = 0;
  c.on('connecting', () => dropped++);
  await sleep(4500); // past exp + the 1 s expired_close_delay of the test config
  assert.ok(refreshed >= 1, 'client refreshed its token');
  assert.equal(dropped, 0);
  assert.equal(c.state, 'connected');
  c.disconnect();
});

test('a connection whose token expired and is not refreshed is closed with 3005', async () => {
  const user = unique('exp2');
  const c = client({ token: token({ sub: user, exp: now() + 1 }), getToken: async () => { throw new Error('no'); } });
  const codes = [];
  c.on('connecting', (ctx) => codes.push(ctx.code));
  c.on('disconnected', (ctx) => codes.push(ctx.code));
  c.connect();
  await once(c, 'connected');
  const stats = await api('info', {});
  assert.ok(stats.result.nodes[0].num_clients >= 1);
  const deadline = Date.now() + 5000;
  while (!codes.includes(3005) && Date.now() < deadline) await sleep(50);
  c.disconnect();
  assert.ok(codes.includes(3005), `server closed with 3005; client saw ${codes}`);
});

test('permessage-deflate is negotiated exactly when the server enables it, and large messages flow both ways', async () => {
  const expected = process.env.HUB_COMPRESSION === '1';
  const ws = new WebSocket(WS_URL, { perMessageDeflate: true });
  await new Promise((resolve, reject) => {
    ws.once('open', resolve);
    ws.once('error', reject);
  });
  assert.equal(ws.extensions.includes('permessage-deflate'), expected, `extensions: ${ws.extensions}`);
  const replies = [];
  ws.on('message', (m) => {
    for (const line of m.toString().split('\n')) if (line) replies.push(JSON.parse(line));
  });
  const waitFor = async (pred) => {
    const deadline = Date.now() + 5000;
    while (Date.now() < deadline) {
      const r = replies.find(pred);
      if (r) return r;
      await sleep(10);
    }
    throw new Error(`no reply matched; got ${JSON.stringify(replies)}`);
  };
  const channel = unique('chat:big');
  const text = 'lorem ipsum dolor sit amet '.repeat(400);
  ws.send(JSON.stringify({ id: 1, connect: { token: token({ sub: unique('z') }), data: { pad: text } } }));
  await waitFor((r) => r.id === 1 && r.connect);
  ws.send(JSON.stringify({ id: 2, subscribe: { channel } }));
  await waitFor((r) => r.id === 2 && r.subscribe);
  ws.send(JSON.stringify({ id: 3, publish: { channel, data: { text } } }));
  await waitFor((r) => r.id === 3 && r.publish);
  const pub = await waitFor((r) => r.push && r.push.pub);
  assert.equal(pub.push.pub.data.text, text);
  ws.close();
});
