// The benchmark's echo server on the official MCP TypeScript SDK (npm @modelcontextprotocol/sdk):
// McpServer + StreamableHTTPServerTransport, stateful (one transport and one McpServer per
// session, as the SDK's own examples do), on express via the SDK's createMcpExpressApp.
//
//   node scripts/bench_servers/ts_sdk_server.mjs [--port 0] [--json-response]
//        [--session-ttl S] [--node-modules DIR]
//
// Prints `READY http://127.0.0.1:PORT/mcp` on stdout once listening; serves until SIGTERM.
// Default: SSE responses (the SDK default); --json-response sets enableJsonResponse.
// Tools: echo(text), sleep_ms(ms) (a timer: Node has no blocking call to make), add(a, b).
// The SDK is loaded from DIR (default tests/js/node_modules, where tests/jsdeps.py installs it).
import { randomUUID } from 'node:crypto';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const HOST = '127.0.0.1';
const here = path.dirname(fileURLToPath(import.meta.url));

function option(name, fallback) {
    const i = process.argv.indexOf(name);
    return i >= 0 && i + 1 < process.argv.length ? process.argv[i + 1] : fallback;
}

const port = Number(option('--port', '0'));
const jsonResponse = process.argv.includes('--json-response');
const sessionTtlMs = Number(option('--session-ttl', '1800')) * 1000;
const nodeModules = option('--node-modules', path.resolve(here, '..', '..', 'tests', 'js', 'node_modules'));
const require = createRequire(path.join(nodeModules, 'noop.js'));

const { McpServer } = require('@modelcontextprotocol/sdk/server/mcp.js');
const { StreamableHTTPServerTransport } = require('@modelcontextprotocol/sdk/server/streamableHttp.js');
const { createMcpExpressApp } = require('@modelcontextprotocol/sdk/server/express.js');
const { isInitializeRequest } = require('@modelcontextprotocol/sdk/types.js');
const z = require('zod/v4');

function buildServer() {
    const server = new McpServer({ name: 'ts-sdk-bench', version: '1.0.0' });
    server.registerTool('echo', { description: 'Return the text unchanged.', inputSchema: { text: z.string() } },
        async ({ text }) => ({ content: [{ type: 'text', text }] }));
    server.registerTool('sleep_ms', { description: 'Wait ms milliseconds.', inputSchema: { ms: z.number().int() } },
        async ({ ms }) => {
            await new Promise((resolve) => setTimeout(resolve, Math.max(0, Math.min(ms, 60000))));
            return { content: [{ type: 'text', text: `slept ${ms} ms` }] };
        });
    server.registerTool('add', { description: 'Add two numbers.', inputSchema: { a: z.number(), b: z.number() } },
        async ({ a, b }) => ({ content: [{ type: 'text', text: String(a + b) }] }));
    return server;
}

const sessions = new Map(); // session id -> { transport, lastUsed }
const app = createMcpExpressApp({ host: HOST });

// Idle expiry, as mcpsync's store and the Python SDK do it.
setInterval(() => {
    const cutoff = Date.now() - sessionTtlMs;
    for (const [sid, s] of sessions) {
        if (s.lastUsed < cutoff) {
            sessions.delete(sid);
            s.transport.close().catch(() => {});
        }
    }
}, Math.max(250, Math.min(5000, sessionTtlMs / 10))).unref();

function error(res, status, code, message) {
    res.status(status).json({ jsonrpc: '2.0', error: { code, message }, id: null });
}

async function handle(req, res) {
    try {
        const sid = req.headers['mcp-session-id'];
        const session = sid ? sessions.get(sid) : undefined;
        if (session) {
            session.lastUsed = Date.now();
            await session.transport.handleRequest(req, res, req.body);
            return;
        }
        if (sid) return error(res, 404, -32001, 'Session not found');
        if (req.method !== 'POST' || !isInitializeRequest(req.body)) {
            return error(res, 400, -32000, 'Bad Request: No valid session ID provided');
        }
        const transport = new StreamableHTTPServerTransport({
            sessionIdGenerator: () => randomUUID(),
            enableJsonResponse: jsonResponse,
            onsessioninitialized: (id) => { sessions.set(id, { transport, lastUsed: Date.now() }); },
        });
        transport.onclose = () => { if (transport.sessionId) sessions.delete(transport.sessionId); };
        await buildServer().connect(transport);
        await transport.handleRequest(req, res, req.body);
    } catch (err) {
        if (!res.headersSent) error(res, 500, -32603, 'Internal server error');
    }
}

app.post('/mcp', handle);
app.get('/mcp', handle);
app.delete('/mcp', handle);

const listener = app.listen(port, HOST, () => {
    listener.keepAliveTimeout = 75000;
    process.stdout.write(`READY http://${HOST}:${listener.address().port}/mcp\n`);
});
for (const sig of ['SIGTERM', 'SIGINT']) process.on(sig, () => process.exit(0));
