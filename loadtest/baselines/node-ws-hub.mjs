// A minimal fan-out server on Node's `ws`, speaking just enough of the Centrifugo client
// protocol (connect, subscribe, publications) and the /api/publish call for `loadtest
// fanout` and `loadtest idle`: the baseline our hub is compared with in BENCHMARKS.md.
// No auth, no history, no pings. One process, one thread.
//
//   cd loadtest/baselines && npm install && node node-ws-hub.mjs [port]
import http from 'node:http';
import { WebSocketServer } from 'ws';

const port = Number(process.argv[2] || 8000);
const channels = new Map(); // channel -> Set<ws>
let n = 0;

const server = http.createServer((req, res) => {
  if (req.method === 'POST' && req.url === '/api/info') {
    res.writeHead(200, { 'content-type': 'application/json' }).end('{"result":{"nodes":[]}}');
    return;
  }
  if (req.method !== 'POST' || req.url !== '/api/publish') {
    res.writeHead(404).end();
    return;
  }
  let body = '';
  req.on('data', (c) => (body += c));
  req.on('end', () => {
    const { channel, data } = JSON.parse(body);
    const frame = JSON.stringify({ push: { channel, pub: { data } } });
    for (const ws of channels.get(channel) || []) ws.send(frame);
    res.writeHead(200, { 'content-type': 'application/json' }).end('{"result":{}}');
  });
});

const wss = new WebSocketServer({ server, path: '/connection/websocket', perMessageDeflate: false });
wss.on('connection', (ws) => {
  const mine = [];
  ws.on('message', (msg) => {
    const replies = [];
    for (const line of msg.toString().split('\n')) {
      if (!line) continue;
      const cmd = JSON.parse(line);
      if (cmd.connect) replies.push({ id: cmd.id, connect: { client: `c${n++}`, version: 'node-ws', ping: 0 } });
      else if (cmd.subscribe) {
        const ch = cmd.subscribe.channel;
        if (!channels.has(ch)) channels.set(ch, new Set());
        channels.get(ch).add(ws);
        mine.push(ch);
        replies.push({ id: cmd.id, subscribe: {} });
      }
    }
    if (replies.length) ws.send(replies.map((r) => JSON.stringify(r)).join('\n'));
  });
  ws.on('close', () => mine.forEach((ch) => channels.get(ch)?.delete(ws)));
});

server.listen(port, '127.0.0.1', () => console.log(`node ws baseline on 127.0.0.1:${port}`));
