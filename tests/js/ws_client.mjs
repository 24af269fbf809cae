// The official TypeScript SDK's WebSocketClientTransport against an mcpsync server.
// Usage: node ws_client.mjs ws://127.0.0.1:PORT/ws
// Prints one JSON object on stdout: the server info, the tool names and
// the results of echo and add. Exits non-zero on any failure (the SDK's errors go to stderr).
// Needs a global WebSocket (Node >= 22); run with tests/js as the working directory.
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { WebSocketClientTransport } from '@modelcontextprotocol/sdk/client/websocket.js';

const TIMEOUT_MS = 20000; // per request; the pytest side bounds the whole run as well

const url = process.argv[2];
if (!url) {
  console.error('usage: node ws_client.mjs ws://host:port/ws');
  process.exit(2);
}
if (typeof WebSocket !== 'function') {
  console.error(`this Node (${process.version}) has no global WebSocket`);
  process.exit(3);
}

const client = new Client({ name: 'mcpsync-ts-ws-test', version: '1.0.0' });
const transport = new WebSocketClientTransport(new URL(url));
const options = { timeout: TIMEOUT_MS };
try {
  await client.connect(transport, options);
  const tools = await client.listTools({}, options);
  const echo = await client.callTool({ name: 'echo', arguments: { text: 'hello over ws' } }, undefined, options);
  const add = await client.callTool({ name: 'add', arguments: { a: 2, b: 40 } }, undefined, options);
  const ping = await client.ping(options);
  console.log(JSON.stringify({
    serverInfo: client.getServerVersion(),
    tools: tools.tools.map((t) => t.name),
    echo,
    add,
    ping,
  }));
} catch (err) {
  console.error(err && err.stack ? err.stack : String(err));
  process.exitCode = 1;
} finally {
  await client.close();
}
