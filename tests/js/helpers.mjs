// Shared helpers for the acceptance tests: tokens, API calls, waiting for events.
import { createHmac } from 'node:crypto';
import WebSocket from 'ws';
import { Centrifuge } from 'centrifuge';

export const WS_URL = process.env.HUB_WS_URL;
export const API_URL = process.env.HUB_API_URL;
export const API_KEY = process.env.HUB_API_KEY;
export const SECRET = process.env.HUB_SECRET;

if (!WS_URL || !API_URL || !API_KEY || !SECRET) {
  throw new Error('HUB_WS_URL, HUB_API_URL, HUB_API_KEY and HUB_SECRET must be set (the Rust harness sets them)');
}

const b64url = (v) => Buffer.from(typeof v === 'string' ? v : JSON.stringify(v)).toString('base64url');

/** An HS256 JWT. */
export function token(claims, secret = SECRET) {
  const head = b64url({ alg: 'HS256', typ: 'JWT' });
  const body = b64url(claims);
  const sig = createHmac('sha256', secret).update(`${head}.${body}`).digest('base64url');
  return `${head}.${body}.${sig}`;
}

export const now = () => Math.floor(Date.now() / 1000);

/** Calls the server API; returns the parsed body. */
export async function api(method, params) {
  const res = await fetch(`${API_URL}/api/${method}`, {
    method: 'POST',
    headers: { 'X-API-Key': API_KEY, 'Content-Type': 'application/json' },
    body: JSON.stringify(params),
  });
  if (res.status !== 200) throw new Error(`api ${method}: HTTP ${res.status}`);
  return res.json();
}

const live = new Set();

/** A client with Node's `ws` (Node 20 has no global WebSocket). */
export function client(opts = {}) {
  const c = new Centrifuge(WS_URL, { websocket: WebSocket, ...opts });
  live.add(c);
  return c;
}

/** Disconnects every client made by `client()`, so a failed test leaves nothing running. */
export function disconnectAll() {
  for (const c of live) c.disconnect();
  live.clear();
}

/** Resolves with the next `event` of `emitter`, or rejects after `ms`. */
export function once(emitter, event, ms = 5000) {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`timeout waiting for ${event}`)), ms);
    emitter.once(event, (ctx) => {
      clearTimeout(t);
      resolve(ctx);
    });
  });
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Unique names so tests don't see each other's traffic. */
let n = 0;
export const unique = (prefix) => `${prefix}-${process.pid}-${Date.now()}-${n++}`;
