"""Bearer-token protection over real HTTP: 401/403 with WWW-Authenticate, Protected Resource
Metadata, audience and scope checks, sessions bound to their principal, introspection."""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Iterator
from urllib.parse import parse_qs

import pytest
from cliserver import mcpsync_cli
from httpclient import HttpMcp
from httpserver import serving

from mcpsync.service import Service
from mcpsync.auth import AuthMiddleware, IntrospectionVerifier, StaticTokenVerifier, TokenInfo
from mcpsync.examples.everything import server
from mcpsync.http.app import HttpApp

INIT = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                   "clientInfo": {"name": "t", "version": "1"}}}


class Guarded:
    """An AuthMiddleware-wrapped app that still exposes end_streams for the test server."""

    def __init__(self, verifier: Any, **kw: Any) -> None:
        self.mcp = HttpApp(Service(server))
        self.guard = AuthMiddleware(self.mcp, verifier, resource_url="http://127.0.0.1/mcp",
                                    authorization_servers=["https://as.example.com"], **kw)

    def __call__(self, environ: Any, start_response: Any) -> Any:
        return self.guard(environ, start_response)

    def end_streams(self) -> None:
        self.mcp.end_streams()


@pytest.fixture()
def guarded() -> Iterator[tuple[str, Guarded]]:
    tokens = {"alice-token": "alice", "bob-token": "bob",
              "reader-token": TokenInfo("carol", frozenset({"mcp:read"})),
              "foreign-token": TokenInfo("dave", frozenset({"mcp:read", "mcp:call"}),
                                         audience=("https://other.example.com/mcp",)),
              "full-token": TokenInfo("erin", frozenset({"mcp:read", "mcp:call"}),
                                      audience=("http://127.0.0.1/mcp",))}
    app = Guarded(StaticTokenVerifier(tokens))
    with serving(app) as base:
        app.guard.set_resource_url(f"{base}/mcp")
        yield base, app


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_missing_and_bad_tokens_get_401_with_resource_metadata(guarded: Any) -> None:
    base, app = guarded
    with HttpMcp(f"{base}/mcp") as c:
        for headers in ({}, bearer("nope"), {"Authorization": "Basic abc"}):
            reply = c.post(INIT, headers, session=False)
            assert reply.status == 401, headers
            challenge = reply.headers["www-authenticate"]
            assert challenge.startswith("Bearer ")
            assert f'resource_metadata="{base}/.well-known/oauth-protected-resource/mcp"' in challenge
        assert 'error="invalid_token"' in c.post(INIT, bearer("nope"), session=False).headers["www-authenticate"]
    assert len(app.mcp.service.store) == 0


def test_token_in_query_string_is_not_accepted(guarded: Any) -> None:
    base, _ = guarded
    with HttpMcp(f"{base}/mcp?access_token=alice-token") as c:
        assert c.post(INIT, session=False).status == 401


def test_protected_resource_metadata_at_both_well_known_urls(guarded: Any) -> None:
    base, _ = guarded
    for path in ("/.well-known/oauth-protected-resource", "/.well-known/oauth-protected-resource/mcp"):
        with HttpMcp(f"{base}{path}") as c:
            reply = c.request("GET", session=False)
            assert reply.status == 200
            prm = reply.json()
            assert prm["resource"] == f"{base}/mcp"  # exactly the MCP URL
            assert prm["authorization_servers"] == ["https://as.example.com"]
            assert prm["bearer_methods_supported"] == ["header"]


def test_sessions_are_bound_to_the_token_subject(guarded: Any) -> None:
    base, _ = guarded
    with HttpMcp(f"{base}/mcp") as alice:
        reply = alice.post(INIT, bearer("alice-token"), session=False)
        assert reply.status == 200
        alice.session_id = reply.headers["mcp-session-id"]
        ping = {"jsonrpc": "2.0", "id": 2, "method": "ping"}
        assert alice.post(ping, bearer("alice-token")).status == 200
        assert alice.post(ping, bearer("bob-token")).status == 404  # never someone else's session
        assert alice.request("DELETE", headers=bearer("bob-token")).status == 404
        assert alice.post(ping, bearer("alice-token")).status == 200  # still alive


def test_audience_and_scopes() -> None:
    tokens = {"reader": TokenInfo("carol", frozenset({"mcp:read"})),
              "foreign": TokenInfo("dave", frozenset({"mcp:call"}), audience=("https://other/mcp",)),
              "full": TokenInfo("erin", frozenset({"mcp:call"}), audience=("X",))}
    app = Guarded(StaticTokenVerifier(tokens), required_scopes=["mcp:call"])
    with serving(app) as base:
        app.guard.set_resource_url(f"{base}/mcp")
        app.guard.verifier = StaticTokenVerifier({
            **tokens, "full": TokenInfo("erin", frozenset({"mcp:call"}), audience=(f"{base}/mcp",))})
        with HttpMcp(f"{base}/mcp") as c:
            forbidden = c.post(INIT, bearer("reader"), session=False)
            assert forbidden.status == 403
            challenge = forbidden.headers["www-authenticate"]
            assert 'error="insufficient_scope"' in challenge and 'scope="mcp:call"' in challenge
            assert c.post(INIT, bearer("foreign"), session=False).status == 401  # not our audience
            assert c.post(INIT, bearer("full"), session=False).status == 200


class _FakeAuthorizationServer(BaseHTTPRequestHandler):
    """A real RFC 7662 introspection endpoint on loopback (the test's own peer)."""

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        length = int(self.headers["Content-Length"])
        token = parse_qs(self.rfile.read(length).decode())["token"][0]
        body = json.dumps({"active": True, "sub": "ivan", "scope": "mcp:call",
                           "aud": self.server.resource} if token == "good"  # type: ignore[attr-defined]
                          else {"active": False}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


def test_introspection_verifier_against_a_real_endpoint() -> None:
    asrv = ThreadingHTTPServer(("127.0.0.1", 0), _FakeAuthorizationServer)
    thread = threading.Thread(target=asrv.serve_forever, name="test-as", daemon=True)
    thread.start()
    try:
        verifier = IntrospectionVerifier(f"http://127.0.0.1:{asrv.server_port}/introspect",
                                         client_id="mcpsync", client_secret="s3cret")
        app = Guarded(verifier, required_scopes=["mcp:call"])
        with serving(app) as base:
            app.guard.set_resource_url(f"{base}/mcp")
            asrv.resource = f"{base}/mcp"  # type: ignore[attr-defined]
            with HttpMcp(f"{base}/mcp") as c:
                assert c.post(INIT, bearer("good"), session=False).status == 200
                assert c.post(INIT, bearer("bad"), session=False).status == 401
    finally:
        asrv.shutdown()
        asrv.server_close()
        thread.join(10)


def test_cli_auth_tokens() -> None:
    with mcpsync_cli("--auth-tokens", "t1:alice") as srv, HttpMcp(srv.url) as c:
        assert c.post(INIT, session=False).status == 401
        assert c.post(INIT, bearer("t1"), session=False).status == 200


def test_jwt_verifier_with_a_jwks_file(tmp_path: Any) -> None:
    jwt = pytest.importorskip("jwt")
    from cryptography.hazmat.primitives.asymmetric import rsa

    from mcpsync.auth import InvalidToken, JwtVerifier

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    public.update({"kid": "k1", "use": "sig", "alg": "RS256"})
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [public]}))
    verifier = JwtVerifier(str(jwks), issuer="https://as.example.com", audience="https://mcp.example.com/mcp")
    import time as _time
    claims = {"sub": "frank", "iss": "https://as.example.com", "aud": "https://mcp.example.com/mcp",
              "exp": int(_time.time()) + 300, "scope": "mcp:read mcp:call"}
    info = verifier.verify(jwt.encode(claims, key, algorithm="RS256", headers={"kid": "k1"}))
    assert info.subject == "frank" and info.scopes == {"mcp:read", "mcp:call"}
    assert info.audience == ("https://mcp.example.com/mcp",)
    for bad in ({**claims, "aud": "https://other/mcp"}, {**claims, "iss": "https://evil"},
                {**claims, "exp": int(_time.time()) - 3600}):
        with pytest.raises(InvalidToken):
            verifier.verify(jwt.encode(bad, key, algorithm="RS256", headers={"kid": "k1"}))
    with pytest.raises(InvalidToken):  # signed by a key that is not in the JWKS
        verifier.verify(jwt.encode(claims, other, algorithm="RS256", headers={"kid": "k1"}))
    with pytest.raises(InvalidToken):
        verifier.verify("not.a.jwt")
