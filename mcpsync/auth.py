"""Bearer-token protection for the HTTP endpoints: MCP's OAuth 2.1 resource-server role.

Theory of operation
-------------------
``AuthMiddleware`` wraps the WSGI app. Requests to the protected paths (``/mcp``, ``/ws``,
``/sse``, ``/messages``, and ``/metrics`` when asked) must carry ``Authorization: Bearer
<token>`` (never a query parameter), whatever their method. The one exception is a CORS
preflight (``OPTIONS`` with ``Access-Control-Request-Method`` and no ``Upgrade``): browsers
send it without credentials, and the app answers it with headers only, never reaching a
tool, resource or prompt. A ``TokenVerifier`` turns the token into a ``TokenInfo`` (subject, scopes,
audience, expiry) or refuses it:

* no or bad token → 401 with ``WWW-Authenticate: Bearer resource_metadata="<PRM URL>"``
  (and ``error="invalid_token"`` when one was sent), so clients can discover the
  authorization server;
* a token issued for another resource (audience) → 401 as well: it is not ours;
* a token without the required scopes → 403 ``error="insufficient_scope"`` naming them.

The Protected Resource Metadata (RFC 9728) is served at both well-known forms:
``/.well-known/oauth-protected-resource`` and the path-inserted
``/.well-known/oauth-protected-resource/mcp``; its ``resource`` is exactly the MCP URL.

The verified subject becomes ``environ["mcpsync.principal"]``: sessions are bound to it, so
a session id presented with another user's token is "not found". Tokens are never passed
on (the hub talks to its upstreams with its own configured credentials).

Verifiers here: ``StaticTokenVerifier`` (a fixed token → subject table, for simple
deployments), ``IntrospectionVerifier`` (RFC 7662 against the authorization server) and
``JwtVerifier`` (JWTs against a JWKS file or URL; the optional ``jwt`` extra). Anything with
a ``verify(token) -> TokenInfo`` method works.
"""
from __future__ import annotations

import base64
import hmac
import http.client
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Protocol
from urllib.parse import urlencode, urlsplit

log = logging.getLogger("mcpsync.auth")

PROTECTED_PATHS = ("/mcp", "/ws", "/sse", "/messages")
METRICS_PATH = "/metrics"
PRM_PATH = "/.well-known/oauth-protected-resource"
INTROSPECTION_TIMEOUT_S = 5.0


class InvalidToken(Exception):
    """The token is unknown, malformed, expired or revoked."""


@dataclass(frozen=True)
class TokenInfo:
    subject: str
    scopes: frozenset[str] = frozenset()
    audience: tuple[str, ...] = ()      # empty: the verifier does not report one
    expires_at: float | None = None     # epoch seconds
    claims: dict[str, Any] = field(default_factory=dict, compare=False)


class TokenVerifier(Protocol):
    def verify(self, token: str) -> TokenInfo: ...


class StaticTokenVerifier:
    """Tokens from configuration: ``{"token": "subject"}`` or ``{"token": TokenInfo}``.
    Comparison is constant-time."""

    def __init__(self, tokens: dict[str, str | TokenInfo]) -> None:
        self._tokens = [(t.encode(), info if isinstance(info, TokenInfo) else TokenInfo(info))
                        for t, info in tokens.items()]

    @classmethod
    def from_spec(cls, spec: str) -> "StaticTokenVerifier":
        """``"token1:alice,token2:bob"`` (a token without ``:subject`` is its own subject's
        hash-free label ``token-N``)."""
        tokens: dict[str, str | TokenInfo] = {}
        for i, item in enumerate(p.strip() for p in spec.split(",") if p.strip()):
            token, _, subject = item.partition(":")
            tokens[token] = subject or f"token-{i + 1}"
        return cls(tokens)

    def verify(self, token: str) -> TokenInfo:
        given = token.encode()
        found = None
        for known, info in self._tokens:  # no early exit: timing does not reveal the match
            if hmac.compare_digest(known, given):
                found = info
        if found is None:
            raise InvalidToken("unknown token")
        return found


class IntrospectionVerifier:
    """RFC 7662 token introspection against the authorization server, with a small cache
    of positive answers bounded by the token's own expiry."""

    def __init__(self, url: str, *, client_id: str | None = None, client_secret: str | None = None,
                 timeout_s: float = INTROSPECTION_TIMEOUT_S, cache_s: float = 60.0,
                 clock: Callable[[], float] = time.time) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"introspection URL must be http(s): {url!r}")
        self._parts = parts
        self._auth = None
        if client_id is not None:
            raw = f"{client_id}:{client_secret or ''}".encode()
            self._auth = "Basic " + base64.b64encode(raw).decode()
        self._timeout_s = timeout_s
        self._cache_s = cache_s
        self._clock = clock
        self._cache: dict[str, tuple[float, TokenInfo]] = {}  # one dict op at a time (GIL-atomic)

    def verify(self, token: str) -> TokenInfo:
        now = self._clock()
        hit = self._cache.get(token)
        if hit is not None and hit[0] > now:
            return hit[1]
        data = self._introspect(token)
        if not data.get("active"):
            raise InvalidToken("token is not active")
        exp = data.get("exp")
        if isinstance(exp, (int, float)) and exp <= now:
            raise InvalidToken("token expired")
        aud = data.get("aud")
        audience = tuple(aud) if isinstance(aud, list) else ((aud,) if isinstance(aud, str) else ())
        info = TokenInfo(str(data.get("sub") or data.get("username") or data.get("client_id") or "unknown"),
                         frozenset(str(data.get("scope") or "").split()), audience,
                         float(exp) if isinstance(exp, (int, float)) else None, data)
        until = min(now + self._cache_s, info.expires_at or now + self._cache_s)
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[token] = (until, info)
        return info

    def _introspect(self, token: str) -> dict[str, Any]:
        cls = http.client.HTTPSConnection if self._parts.scheme == "https" else http.client.HTTPConnection
        conn = cls(self._parts.hostname or "", self._parts.port, timeout=self._timeout_s)
        headers = {"Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"}
        if self._auth:
            headers["Authorization"] = self._auth
        try:
            conn.request("POST", self._parts.path or "/", body=urlencode({"token": token}), headers=headers)
            resp = conn.getresponse()
            body = resp.read()
            if resp.status != 200:
                raise InvalidToken(f"introspection answered {resp.status}")
            data = json.loads(body)
        except (OSError, ValueError) as exc:
            log.warning("token introspection failed: %s", exc)
            raise InvalidToken("introspection failed") from None
        finally:
            conn.close()
        if not isinstance(data, dict):
            raise InvalidToken("introspection answered no object")
        return data


class JwtVerifier:
    """JWT access tokens (RFC 9068) checked against a JWKS — a file path or an https URL —
    with issuer, audience (``resource_url``) and expiry validation. Needs the optional
    extra ``pip install 'mcpsync[jwt]'`` (PyJWT with cryptography)."""

    def __init__(self, jwks: str, *, issuer: str | None, audience: str,
                 algorithms: Iterable[str] = ("RS256", "ES256", "PS256", "EdDSA"),
                 leeway_s: float = 30.0) -> None:
        try:
            import jwt  # optional dependency: the "jwt" extra
        except ImportError:
            raise RuntimeError("JwtVerifier needs PyJWT: pip install 'mcpsync[jwt]'") from None
        self._jwt = jwt
        self.issuer = issuer
        self.audience = audience
        self.algorithms = list(algorithms)
        self.leeway_s = leeway_s
        if jwks.startswith(("https://", "http://")):
            self._client: Any = jwt.PyJWKClient(jwks, cache_keys=True)
            self._keys: Any = None
        else:
            with open(jwks, encoding="utf-8") as f:
                self._keys = jwt.PyJWKSet.from_dict(json.load(f))
            self._client = None

    def _key(self, token: str) -> Any:
        if self._client is not None:
            return self._client.get_signing_key_from_jwt(token).key
        kid = self._jwt.get_unverified_header(token).get("kid")
        for key in self._keys.keys:
            if kid is None or key.key_id == kid:
                return key.key
        raise InvalidToken("no key for this token")

    def verify(self, token: str) -> TokenInfo:
        jwt = self._jwt
        try:
            claims = jwt.decode(token, self._key(token), algorithms=self.algorithms,
                                audience=self.audience, issuer=self.issuer, leeway=self.leeway_s,
                                options={"require": ["exp", "sub"]})
        except (jwt.PyJWTError, ValueError) as exc:
            raise InvalidToken(str(exc)) from None
        aud = claims.get("aud")
        scopes = claims.get("scope") or claims.get("scp") or ""
        return TokenInfo(str(claims["sub"]),
                         frozenset(scopes.split() if isinstance(scopes, str) else scopes),
                         tuple(aud) if isinstance(aud, list) else (str(aud),),
                         float(claims["exp"]), claims)


def _is_preflight(environ: dict[str, Any]) -> bool:
    """A CORS preflight, which carries no credentials by design. An ``OPTIONS`` that asks
    for an upgrade is not one (it would otherwise open a WebSocket without a token)."""
    return (environ.get("REQUEST_METHOD") == "OPTIONS"
            and "HTTP_ACCESS_CONTROL_REQUEST_METHOD" in environ
            and "HTTP_UPGRADE" not in environ)


class AuthMiddleware:
    """Protect the MCP endpoints of ``app`` with bearer tokens (see the module docstring).

    ``resource_url`` is the canonical URL of the MCP endpoint (e.g.
    ``https://mcp.example.com/mcp``); tokens whose verifier reports an audience must name it.
    """

    def __init__(self, app: Callable[..., Iterable[bytes]], verifier: TokenVerifier, *,
                 resource_url: str, authorization_servers: Iterable[str] = (),
                 required_scopes: Iterable[str] = (), scopes_supported: Iterable[str] | None = None,
                 protected_paths: Iterable[str] = PROTECTED_PATHS,
                 resource_name: str | None = None) -> None:
        self.app = app
        self.verifier = verifier
        self.required_scopes = frozenset(required_scopes)
        self.protected = tuple(protected_paths)
        self._authorization_servers = list(authorization_servers)
        self._scopes_supported = scopes_supported
        self._resource_name = resource_name
        self.set_resource_url(resource_url)

    def set_resource_url(self, resource_url: str) -> None:
        """Set the canonical MCP URL (once the port is known); rebuilds the metadata."""
        self.resource_url = resource_url.rstrip("/")
        path = urlsplit(self.resource_url).path
        self._prm_paths = {PRM_PATH, PRM_PATH + path} if path and path != "/" else {PRM_PATH}
        base = self.resource_url[: len(self.resource_url) - len(path)] if path else self.resource_url
        self.metadata_url = base + PRM_PATH + (path if path != "/" else "")
        prm: dict[str, Any] = {"resource": self.resource_url,
                               "authorization_servers": self._authorization_servers,
                               "bearer_methods_supported": ["header"]}
        scopes = (list(self._scopes_supported) if self._scopes_supported is not None
                  else sorted(self.required_scopes))
        if scopes:
            prm["scopes_supported"] = scopes
        if self._resource_name:
            prm["resource_name"] = self._resource_name
        self._prm_body = json.dumps(prm).encode()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO") or "/"
        if path in self._prm_paths and environ.get("REQUEST_METHOD") in ("GET", "HEAD"):
            start_response("200 OK", [("Content-Type", "application/json"),
                                      ("Content-Length", str(len(self._prm_body))),
                                      ("Access-Control-Allow-Origin", "*")])
            return [self._prm_body]
        if not path.startswith(self.protected) or _is_preflight(environ):
            return self.app(environ, start_response)
        header = environ.get("HTTP_AUTHORIZATION") or ""
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return self._refuse(start_response, 401, None, "authorization required")
        try:
            info = self.verifier.verify(token.strip())
        except InvalidToken as exc:
            return self._refuse(start_response, 401, "invalid_token", str(exc))
        if info.expires_at is not None and info.expires_at <= time.time():
            return self._refuse(start_response, 401, "invalid_token", "token expired")
        if info.audience and self.resource_url not in info.audience:
            return self._refuse(start_response, 401, "invalid_token", "token was issued for another resource")
        missing = self.required_scopes - info.scopes
        if missing:
            return self._refuse(start_response, 403, "insufficient_scope", "more scopes are required")
        environ["mcpsync.principal"] = info.subject
        environ["mcpsync.token_info"] = info
        return self.app(environ, start_response)

    def _refuse(self, start_response: Callable[..., Any], status: int, error: str | None,
                description: str) -> list[bytes]:
        parts = [f'resource_metadata="{self.metadata_url}"']
        if error:
            parts.append(f'error="{error}"')
            parts.append(f'error_description="{description}"')
        if self.required_scopes:
            parts.append(f'scope="{" ".join(sorted(self.required_scopes))}"')
        body = json.dumps({"jsonrpc": "2.0", "id": None, "error": {
            "code": -32000, "message": ("Unauthorized: " if status == 401 else "Forbidden: ") + description}}).encode()
        start_response("401 Unauthorized" if status == 401 else "403 Forbidden", [
            ("Content-Type", "application/json"), ("Content-Length", str(len(body))),
            ("WWW-Authenticate", "Bearer " + ", ".join(parts)),
            ("Access-Control-Expose-Headers", "WWW-Authenticate")])
        return [body]
