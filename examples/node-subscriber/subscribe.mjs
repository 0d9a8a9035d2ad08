// Subscribes to a hub channel with the real centrifuge npm client and prints publications.
//
//   cd examples/node-subscriber && npm install
//   HUB_TOKEN=<token printed by hub-server> node subscribe.mjs [channel]
//
// Then publish from another terminal:
//   curl -X POST -H 'X-API-Key: <api key>' -d '{"channel":"news","data":{"text":"hi"}}' \
//        http://127.0.0.1:8000/api/publish
import WebSocket from 'ws';
import { Centrifuge } from 'centrifuge';

const url = process.env.HUB_URL || 'ws://127.0.0.1:8000/connection/websocket';
const token = process.env.HUB_TOKEN;
const channel = process.argv[2] || process.env.HUB_CHANNEL || 'news';

if (!token) {
  console.error('HUB_TOKEN is not set: use the token hub-server printed at start,');
  console.error('or `hub-server gentoken -c config.json -u USER -q` with a config file.');
  process.exit(2);
}

// Node 20 has no global WebSocket: hand the client the `ws` implementation.
const client = new Centrifuge(url, { token, websocket: WebSocket });
client.on('connecting', (ctx) => console.log(`connecting (${ctx.code}: ${ctx.reason})`));
client.on('connected', (ctx) => console.log(`connected as client ${ctx.client}`));
client.on('disconnected', (ctx) => {
  console.log(`disconnected (${ctx.code}: ${ctx.reason})`);
  process.exitCode = 1;
});

const sub = client.newSubscription(channel);
sub.on('subscribed', (ctx) =>
  console.log(`subscribed to ${channel}${ctx.recovered ? ' (recovered missed publications)' : ''}`),
);
sub.on('publication', (ctx) =>
  console.log(`${channel} #${ctx.offset ?? '-'}: ${JSON.stringify(ctx.data)}`),
);
sub.on('error', (ctx) => console.error(`subscription error: ${ctx.error.message}`));
sub.subscribe();
client.connect();

process.on('SIGINT', () => {
  client.disconnect();
  process.exit(0);
});
