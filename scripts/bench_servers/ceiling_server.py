#!/usr/bin/env python3
"""The benchmark's ceiling: the least a Python HTTP server can do per MCP call.

    python scripts/bench_servers/ceiling_server.py [--port 0]

The standard library's ``ThreadingHTTPServer`` (a thread per connection, HTTP/1.1 keep-alive),
answering the same requests as the MCP servers with canned replies: ``initialize`` gets a
fixed result and a fresh ``Mcp-Session-Id``, notifications 202, ``tools/call`` of ``echo``
the text it was sent (the body is parsed, so the load clients' checks pass), ``sleep_ms``
blocks its thread, ``DELETE`` 204. No sessions are kept, nothing is validated. Prints
``READY http://127.0.0.1:PORT/mcp`` on stdout, then serves until SIGTERM/SIGINT.
"""
from __future__ import annotations

import argparse
import json
import secrets
import signal
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

HOST = "127.0.0.1"
INIT_RESULT = {"protocolVersion": "2025-11-25", "capabilities": {"tools": {}},
               "serverInfo": {"name": "ceiling", "version": "1"}}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _reply(self, status: int, body: bytes = b"", extra: str = "") -> None:
        head = (f"HTTP/1.1 {status} {self.responses[status][0]}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n{extra}\r\n")
        self.wfile.write(head.encode("latin-1") + body)  # one write: no Nagle/delayed-ACK stall

    def do_POST(self) -> None:
        msg = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
        method = msg.get("method")
        if "id" not in msg:
            self._reply(202)
            return
        extra = ""
        if method == "initialize":
            result: Any = INIT_RESULT
            extra = f"Mcp-Session-Id: {secrets.token_urlsafe(24)}\r\n"
        elif method == "tools/call":
            params = msg["params"]
            args = params.get("arguments") or {}
            if params["name"] == "sleep_ms":
                time.sleep(args["ms"] / 1000)
                text = f"slept {args['ms']} ms"
            else:
                text = args.get("text", "")
            result = {"content": [{"type": "text", "text": text}], "isError": False}
        else:
            result = {}
        body = json.dumps({"jsonrpc": "2.0", "id": msg["id"], "result": result}).encode()
        self._reply(200, body, extra)

    def do_DELETE(self) -> None:
        self._reply(204)


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024  # the listen() backlog: 256 connections arrive at once

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):  # a load client hanging up
            super().handle_error(request, client_address)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    httpd = Server((HOST, args.port), Handler)

    def stop(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    print(f"READY http://{HOST}:{httpd.server_address[1]}/mcp", flush=True)
    try:
        httpd.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
