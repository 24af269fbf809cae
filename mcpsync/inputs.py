"""Requests a tool may put to the client: elicitation, sampling, roots.

``Context.elicit``, ``Context.sample`` and ``Context.list_roots`` ask one question each;
``Context.ask`` asks several at once, keyed, with the values built here::

    answers = ctx.ask(user_name=inputs.elicitation("Your name?", schema),
                      greeting=inputs.sampling("Write a greeting", max_tokens=50),
                      client_roots=inputs.roots())

The same call works in every era: a session's client is sent each request and the call
blocks for the answers; a 2026-07-28 request answers ``input_required`` with all the
missing ones (the keys become the ``inputRequests`` keys); a task waits in
``input_required`` until ``tasks/update`` brings every answer.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .errors import MissingClientCapability


@dataclass(frozen=True)
class InputRequest:
    """One server -> client request: its method, params and the client capability it needs
    (``sub``: a sub-capability such as elicitation's ``form``)."""

    method: str
    params: dict[str, Any] | None
    capability: str
    sub: str | None = None

    def check(self, client_capabilities: dict[str, Any]) -> None:
        """Raise ``MissingClientCapability`` (-32021) unless the client declared what this needs."""
        caps = client_capabilities.get(self.capability)
        ok = isinstance(caps, dict)
        if isinstance(caps, dict) and self.sub is not None and not isinstance(caps.get(self.sub), dict):
            ok = self.sub == "form" and not caps  # `elicitation: {}` means form mode
        if not ok:
            what = f"{self.capability}.{self.sub}" if self.sub else self.capability
            raise MissingClientCapability(f"Missing required client capability: {what}",
                                          {"requiredCapabilities": {self.capability: {}}})

    def message(self, form_mode: bool) -> dict[str, Any]:
        """The request as an ``inputRequests`` entry (``form_mode``: the revision names the
        elicitation mode)."""
        params = self.params
        if form_mode and self.method == "elicitation/create" and params is not None:
            params = {"mode": "form", **params}
        out: dict[str, Any] = {"method": self.method}
        out["params"] = params if params is not None else {}
        return out


def elicitation(message: str, requested_schema: dict[str, Any]) -> InputRequest:
    """``elicitation/create`` in form mode; the answer is ``{"action": ..., "content": ...}``."""
    return InputRequest("elicitation/create", {"message": message, "requestedSchema": requested_schema},
                        "elicitation", "form")


def sampling(messages: list[dict[str, Any]] | str, *, max_tokens: int = 1000,
             system_prompt: str | None = None, **extra: Any) -> InputRequest:
    """``sampling/createMessage``; ``messages`` may be one user text. Extra keyword arguments
    become params in camelCase (``temperature``, ``stop_sequences`` …)."""
    if isinstance(messages, str):
        messages = [{"role": "user", "content": {"type": "text", "text": messages}}]
    params: dict[str, Any] = {"messages": messages, "maxTokens": max_tokens}
    if system_prompt is not None:
        params["systemPrompt"] = system_prompt
    params.update({_camel(k): v for k, v in extra.items()})
    return InputRequest("sampling/createMessage", params, "sampling")


def roots() -> InputRequest:
    """``roots/list``; the answer is ``{"roots": [...]}``."""
    return InputRequest("roots/list", None, "roots")


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(p.title() for p in rest)
