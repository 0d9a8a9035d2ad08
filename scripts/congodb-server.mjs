// Starts CongoDB (installed by scripts/congodb.sh) on 127.0.0.1:<port>, in memory.
//
//   node scripts/congodb-server.mjs <port> [--exit-with-stdin]
//
// Prints `congodb listening on mongodb://127.0.0.1:<port>` once it accepts connections. Stops
// on SIGINT/SIGTERM, and with --exit-with-stdin also when its stdin closes (the test that
// started it died without killing it). The install directory is $CONGODB_DIR, default
// ~/.cache/hub/congodb.
import os from 'node:os';
import path from 'node:path';
import { existsSync } from 'node:fs';
import { pathToFileURL } from 'node:url';

const port = Number(process.argv[2]);
if (!Number.isInteger(port) || port <= 0 || port > 65535) {
  console.error('usage: node scripts/congodb-server.mjs <port> [--exit-with-stdin]');
  process.exit(2);
}
const dir = process.env.CONGODB_DIR || path.join(os.homedir(), '.cache', 'hub', 'congodb');
const entry = path.join(dir, 'smartmongo', 'dist_ts', 'congodb', 'index.js');
if (!existsSync(entry)) {
  console.error(`CongoDB is not installed in ${dir}: run scripts/congodb.sh`);
  process.exit(3);
}

const { CongoServer } = await import(pathToFileURL(entry).href);
const server = new CongoServer({ port, host: '127.0.0.1' });
try {
  await server.start();
} catch (e) {
  console.error(`congodb could not listen on 127.0.0.1:${port}: ${e && e.message ? e.message : e}`);
  process.exit(1);
}
console.log(`congodb listening on ${server.getConnectionUri()}`);

let stopping = false;
const stop = async () => {
  if (stopping) return;
  stopping = true;
  try {
    await server.stop();
  } finally {
    process.exit(0);
  }
};
process.on('SIGINT', stop);
process.on('SIGTERM', stop);
if (process.argv.includes('--exit-with-stdin')) {
  process.stdin.on('end', stop);
  process.stdin.on('close', stop);
  process.stdin.resume();
}
