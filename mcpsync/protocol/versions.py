"""MCP protocol revisions and what each one allows.

Everything the revisions disagree on is data here, looked up by the negotiated version;
the handlers never compare version strings themselves. Revision strings are ISO dates, so
``>=`` on them orders revisions correctly.
"""
from __future__ import annotations

from typing import NamedTuple

V2024_11_05 = "2024-11-05"
V2025_03_26 = "2025-03-26"
V2025_06_18 = "2025-06-18"
V2025_11_25 = "2025-11-25"
V2026_07_28 = "2026-07-28"

#: Revisions with the initialize handshake and protocol sessions, oldest first.
HANDSHAKE_VERSIONS: tuple[str, ...] = (V2024_11_05, V2025_03_26, V2025_06_18, V2025_11_25)
#: Modern revisions (no handshake; version and capabilities travel in each request).
MODERN_VERSIONS: tuple[str, ...] = (V2026_07_28,)
LATEST_HANDSHAKE_VERSION = HANDSHAKE_VERSIONS[-1]
#: What Streamable HTTP assumes when a request carries no MCP-Protocol-Version header.
HTTP_DEFAULT_VERSION = V2025_03_26


class Features(NamedTuple):
    """What one revision allows, as far as a server is concerned."""

    batching: bool              # JSON-RPC batches accepted (2025-03-26 only)
    audio: bool                 # audio content blocks
    completions_capability: bool  # `completions` server capability exists
    structured_content: bool    # outputSchema / structuredContent / titles / resource_link
    elicitation: bool           # elicitation/create exists
    elicitation_url: bool       # URL-mode elicitation, elicitation ids
    tool_input_errors_as_results: bool  # invalid tool arguments -> isError result, not -32602
    icons: bool                 # icons on Implementation, Tool, Prompt, Resource
    version_header: bool        # MCP-Protocol-Version HTTP header is required after init
    sse_priming: bool           # SSE priming event with an id and retry (polling)
    resource_not_found_code: int


FEATURES: dict[str, Features] = {
    V2024_11_05: Features(False, False, False, False, False, False, False, False, False, False, -32002),
    V2025_03_26: Features(True, True, True, False, False, False, False, False, False, False, -32002),
    V2025_06_18: Features(False, True, True, True, True, False, False, False, True, False, -32002),
    V2025_11_25: Features(False, True, True, True, True, True, True, True, True, True, -32002),
    V2026_07_28: Features(False, True, True, True, True, True, True, True, True, False, -32602),
}


def negotiate(requested: object) -> str:
    """The version to answer an ``initialize`` with: the client's if we speak it, else our
    newest *handshake* revision (never a modern one, which has no initialize)."""
    if isinstance(requested, str) and requested in HANDSHAKE_VERSIONS:
        return requested
    return LATEST_HANDSHAKE_VERSION


def features(version: str | None) -> Features:
    """The feature set of ``version``; an unknown or absent version gets the oldest rules."""
    if version is None:
        return FEATURES[V2024_11_05]
    return FEATURES.get(version, FEATURES[V2024_11_05])


def is_supported(version: object) -> bool:
    return version in FEATURES
