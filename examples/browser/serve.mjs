// Serves the example page and the centrifuge-js browser build on http://127.0.0.1:3000,
// with no dependency beyond the centrifuge package itself.
//
//   cd examples/browser && npm install && node serve.mjs
//   open http://127.0.0.1:3000/ and paste the token hub-server printed at start
import { createServer } from 'node:http';
import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';

const here = dirname(fileURLToPath(import.meta.url));
const port = Number(process.env.PORT || 3000);
const files = {
  '/': ['index.html', 'text/html; charset=utf-8'],
  '/centrifuge.js': ['node_modules/centrifuge/dist/centrifuge.js', 'text/javascript; charset=utf-8'],
};

createServer(async (req, res) => {
  const path = new URL(req.url, 'http://localhost').pathname;
  const file = files[path];
  if (!file) {
    res.writeHead(404, { 'content-type': 'text/plain' }).end('not found\n');
    return;
  }
  try {
    const body = await readFile(join(here, file[0]));
    res.writeHead(200, { 'content-type': file[1] }).end(body);
  } catch (e) {
    res.writeHead(500, { 'content-type': 'text/plain' }).end(`cannot read ${file[0]}: run npm install\n`);
  }
}).listen(port, '127.0.0.1', () => console.log(`example page on http://127.0.0.1:${port}/`));
