"""Who the server is, per protocol revision: its capabilities, its ``Implementation``
(``serverInfo``), the ``initialize`` result, ``server/discover`` (2026-07-28) and the small
``_meta`` that names the server on every 2026-07-28 result."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..protocol import versions
from ..protocol.modern import META_SERVER_INFO, TASKS_EXTENSION, SharedMeta, all_supported
from .context import Context


@dataclass
class ServerIdentity:
    """The server's name and self-description (``Server`` keeps one and exposes its fields)."""

    name: str
    version: str
    title: str | None = None
    description: str | None = None
    instructions: str | None = None
    website_url: str | None = None
    icons: list[dict[str, Any]] | None = None
    # (revision, name, version, {serverInfo key: {name, version}}) for 2026-07-28 results,
    # shared and never mutated; rebuilt when the name or version changes.
    _meta: tuple[str | None, str, str, SharedMeta] | None = None

    def capabilities(self, version: str | None = None) -> dict[str, Any]:
        caps: dict[str, Any] = {
            "logging": {},
            "tools": {"listChanged": True},
            "resources": {"subscribe": True, "listChanged": True},
            "prompts": {"listChanged": True},
        }
        if versions.features(version or versions.LATEST_HANDSHAKE_VERSION).completions_capability:
            caps["completions"] = {}
        if version in versions.MODERN_VERSIONS:
            caps["extensions"] = {TASKS_EXTENSION: {}}
        return caps

    def server_info(self, version: str | None = None) -> dict[str, Any]:
        info: dict[str, Any] = {"name": self.name, "version": self.version}
        feats = versions.features(version or versions.LATEST_HANDSHAKE_VERSION)
        if feats.structured_content and self.title:
            info["title"] = self.title
        if feats.icons:
            for key, value in (("description", self.description), ("websiteUrl", self.website_url),
                               ("icons", self.icons)):
                if value is not None:
                    info[key] = value
        return info

    def server_meta(self, version: str | None) -> dict[str, Any]:
        """``{serverInfo key: {name, version}}`` for 2026-07-28 results: name and version
        identify the server on every result; the rest of its Implementation is in
        ``server/discover`` only, so a hot ``tools/call`` does not encode it again. A
        ``modern.SharedMeta``: encoded once, spliced into each response over HTTP."""
        cached = self._meta
        if cached is None or cached[0] != version or cached[1] != self.name or cached[2] != self.version:
            cached = self._meta = (version, self.name, self.version,
                                   SharedMeta({META_SERVER_INFO: {"name": self.name, "version": self.version}}))
        return cached[3]

    def initialize_result(self, version: str) -> dict[str, Any]:
        result: dict[str, Any] = {"protocolVersion": version,
                                  "capabilities": self.capabilities(version),
                                  "serverInfo": self.server_info(version)}
        if self.instructions:
            result["instructions"] = self.instructions
        return result

    def discover(self, params: dict[str, Any], ctx: Context) -> dict[str, Any]:
        """``server/discover`` (2026-07-28)."""
        result: dict[str, Any] = {"supportedVersions": all_supported(),
                                  "capabilities": self.capabilities(ctx.version),
                                  "_meta": {META_SERVER_INFO: self.server_info(ctx.version)}}
        if self.instructions:
            result["instructions"] = self.instructions
        return result
