// The real centrifuge npm client over wss:// and the server API over https://, against a
// hub-server terminating TLS itself (http_server.tls). Driven by hub-server/tests/tls.rs,
// which makes a self-signed certificate and passes it in NODE_EXTRA_CA_CERTS: certificate
// verification stays on.
import { afterEach, test } from 'node:test';
import assert from 'node:assert/strict';
import { rootCertificates } from 'node:tls';
import WebSocket from 'ws';
import { WS_URL, api, client, disconnectAll, once, token, unique } from './helpers.mjs';

afterEach(disconnectAll);

test('over wss, a client subscribes and receives a publication made through the API over https', async () => {
  assert.match(WS_URL, /^wss:\/\//);
  const channel = unique('tls');
  const c = client({ token: token({ sub: unique('u') }) });
  const sub = c.newSubscription(channel);
  const connected = once(c, 'connected');
  const subscribed = once(sub, 'subscribed');
  c.connect();
  sub.subscribe();
  const ctx = await connected;
  assert.equal(ctx.transport, 'websocket');
  await subscribed;

  const published = once(sub, 'publication');
  const res = await api('publish', { channel, data: { text: 'over wss' } });
  assert.ok(res.result, JSON.stringify(res));
  const p = await published;
  assert.deepEqual(p.data, { text: 'over wss' });
});

test('the certificate is verified: trusting only the public roots, the handshake fails', async () => {
  const ws = new WebSocket(WS_URL, { ca: rootCertificates });
  const err = await new Promise((resolve, reject) => {
    ws.on('open', () => reject(new Error('connected to a self-signed server without trusting it')));
    ws.on('error', resolve);
  });
  assert.match(err.code ?? '', /SELF_SIGNED|UNABLE_TO_VERIFY/, String(err));
});
