"""The bundled example server: what ``python -m mcpsync`` serves.

Real demonstration tools (``echo``, ``add``, ``sleep_ms``, ``word_count``) and everything
the official MCP conformance suite (``@modelcontextprotocol/conformance``) expects of a server
under test: the ``test_*`` tools, the ``test://`` resources and the ``test_*`` prompts.
"""
from __future__ import annotations

import base64
import json
from typing import Annotated, Any, Literal, TypedDict

from mcpsync import Audio, Context, Image, Resource, Server, ToolError

server = Server(
    "mcpsync-everything", "1.0.0", title="mcpsync example server",
    description="Demonstration tools, resources and prompts, and the MCP conformance fixtures.",
    instructions="Try the echo and add tools; test_* tools exist for the MCP conformance suite.",
)

# A 1x1 red PNG and a tiny WAV file, as base64 (what the conformance suite's reference uses).
RED_PIXEL_PNG = ("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg==")
TINY_WAV = "UklGRiYAAABXQVZFZm10IBAAAAABAAEAQB8AAAB9AAACABAAZGF0YQIAAAA="
STEP_DELAY_S = 0.05  # pacing of the logging and progress demonstrations


# ---- demonstration tools ----------------------------------------------------------------------

@server.tool(annotations={"readOnlyHint": True, "idempotentHint": True})
def echo(text: Annotated[str, "The text to send back"]) -> str:
    """Return the text unchanged."""
    return text


class Sum(TypedDict):
    sum: float


@server.tool(annotations={"readOnlyHint": True, "idempotentHint": True})
def add(a: Annotated[float, "First addend"], b: Annotated[float, "Second addend"]) -> Sum:
    """Add two numbers; the result is structured output ({"sum": a + b})."""
    return {"sum": a + b}


@server.tool(annotations={"readOnlyHint": True})
def sleep_ms(ms: Annotated[int, "How long to block, in milliseconds (0-60000)"], ctx: Context) -> str:
    """Block the worker thread for ms milliseconds, standing in for a database or HTTP call.
    Cancellation ends the wait early."""
    if not 0 <= ms <= 60_000:
        raise ToolError("ms must be between 0 and 60000")
    ctx.wait_cancelled(ms / 1000)
    return f"slept {ms} ms"


class WordCount(TypedDict):
    words: int
    characters: int


@server.tool(annotations={"readOnlyHint": True, "idempotentHint": True})
def word_count(text: str) -> WordCount:
    """Count the words and characters of a text."""
    return {"words": len(text.split()), "characters": len(text)}


# ---- conformance tools ----------------------------------------------------------------------

@server.tool()
def test_simple_text() -> str:
    """Returns a simple text response."""
    return "This is a simple text response for testing."


@server.tool()
def test_image_content() -> Image:
    """Returns an image content item (a 1x1 red PNG)."""
    return Image(RED_PIXEL_PNG, "image/png")


@server.tool()
def test_audio_content() -> Audio:
    """Returns an audio content item (a tiny WAV file)."""
    return Audio(TINY_WAV, "audio/wav")


@server.tool()
def test_embedded_resource() -> Resource:
    """Returns an embedded text resource."""
    return Resource("test://embedded-resource", text="This is an embedded resource content.",
                    mime_type="text/plain")


@server.tool()
def test_multiple_content_types() -> list[Any]:
    """Returns text, image and embedded resource content together."""
    return ["Multiple content types test:", Image(RED_PIXEL_PNG, "image/png"),
            Resource("test://mixed-content-resource", mime_type="application/json",
                     text=json.dumps({"test": "data", "value": 123}))]


@server.tool()
def test_tool_with_logging(ctx: Context) -> str:
    """Sends three log messages while it runs."""
    for i, text in enumerate(("Tool execution started", "Tool processing data",
                              "Tool execution completed")):
        if i:
            ctx.wait_cancelled(STEP_DELAY_S)
        ctx.info(text, logger="everything")
    return "Tool with logging executed successfully"


@server.tool()
def test_tool_with_progress(ctx: Context) -> str:
    """Reports progress 0, 50 and 100 of 100."""
    for i, value in enumerate((0, 50, 100)):
        if i:
            ctx.wait_cancelled(STEP_DELAY_S)
        ctx.report_progress(value, 100, f"Completed step {value} of 100")
    return str(ctx.progress_token if ctx.progress_token is not None else 0)


@server.tool()
def test_error_handling() -> str:
    """Always fails, returning an error result."""
    raise ToolError("This tool intentionally returns an error for testing")


@server.tool()
def test_reconnection(ctx: Context) -> str:
    """Closes its SSE response stream mid-call; the client resumes with Last-Event-ID."""
    ctx.close_stream()
    ctx.wait_cancelled(0.1)
    return ("Reconnection test completed successfully. If you received this, the client "
            "properly reconnected after stream closure.")


@server.tool()
def test_sampling(prompt: Annotated[str, "The prompt to send to the client's model"], ctx: Context) -> str:
    """Asks the client's model to answer a prompt (sampling/createMessage)."""
    result = ctx.sample([{"role": "user", "content": {"type": "text", "text": prompt}}], max_tokens=100)
    content = result.get("content")
    text = content.get("text") if isinstance(content, dict) else json.dumps(content)
    return f"LLM response: {text}"


@server.tool()
def test_elicitation(message: Annotated[str, "The message to show the user"], ctx: Context) -> str:
    """Asks the user for a username and an email address (elicitation/create)."""
    answer = ctx.elicit(message, {
        "type": "object",
        "properties": {"username": {"type": "string", "description": "User's response"},
                       "email": {"type": "string", "description": "User's email address"}},
        "required": ["username", "email"]})
    return f"User response: action={answer.get('action')}, content={json.dumps(answer.get('content') or {})}"


@server.tool()
def test_elicitation_sep1034_defaults(ctx: Context) -> str:
    """Elicits a form whose fields all carry default values (SEP-1034)."""
    answer = ctx.elicit("Please review and update the form fields with defaults", {
        "type": "object",
        "properties": {
            "name": {"type": "string", "description": "User name", "default": "John Doe"},
            "age": {"type": "integer", "description": "User age", "default": 30},
            "score": {"type": "number", "description": "User score", "default": 95.5},
            "status": {"type": "string", "description": "User status",
                       "enum": ["active", "inactive", "pending"], "default": "active"},
            "verified": {"type": "boolean", "description": "Verification status", "default": True},
        },
        "required": []})
    return f"Elicitation completed: action={answer.get('action')}, content={json.dumps(answer.get('content') or {})}"


@server.tool()
def test_elicitation_sep1330_enums(ctx: Context) -> str:
    """Elicits the five enum field shapes of SEP-1330."""
    answer = ctx.elicit("Please select options from the enum fields", {
        "type": "object",
        "properties": {
            "untitledSingle": {"type": "string", "description": "Select one option",
                               "enum": ["option1", "option2", "option3"]},
            "titledSingle": {"type": "string", "description": "Select one option with titles",
                             "oneOf": [{"const": "value1", "title": "First Option"},
                                       {"const": "value2", "title": "Second Option"},
                                       {"const": "value3", "title": "Third Option"}]},
            "legacyEnum": {"type": "string", "description": "Select one option (legacy)",
                           "enum": ["opt1", "opt2", "opt3"],
                           "enumNames": ["Option One", "Option Two", "Option Three"]},
            "untitledMulti": {"type": "array", "description": "Select multiple options",
                              "minItems": 1, "maxItems": 3,
                              "items": {"type": "string", "enum": ["option1", "option2", "option3"]}},
            "titledMulti": {"type": "array", "description": "Select multiple options with titles",
                            "minItems": 1, "maxItems": 3,
                            "items": {"anyOf": [{"const": "value1", "title": "First Choice"},
                                                {"const": "value2", "title": "Second Choice"},
                                                {"const": "value3", "title": "Third Choice"}]}},
        },
        "required": []})
    return f"Elicitation completed: action={answer.get('action')}, content={json.dumps(answer.get('content') or {})}"


JSON_SCHEMA_2020_12 = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "$defs": {"address": {"$anchor": "addressDef", "type": "object",
                          "properties": {"street": {"type": "string"}, "city": {"type": "string"}}}},
    "properties": {"name": {"type": "string"}, "address": {"$ref": "#/$defs/address"},
                   "contactMethod": {"type": "string", "enum": ["phone", "email"]},
                   "phone": {"type": "string"}, "email": {"type": "string"}},
    "allOf": [{"anyOf": [{"required": ["phone"]}, {"required": ["email"]}]}],
    "if": {"properties": {"contactMethod": {"const": "phone"}}, "required": ["contactMethod"]},
    "then": {"required": ["phone"]},
    "else": {"required": ["email"]},
    "additionalProperties": False,
}


@server.tool(input_schema=JSON_SCHEMA_2020_12)
def json_schema_2020_12_tool(**arguments: Any) -> str:
    """Tool with JSON Schema 2020-12 features"""
    return f"JSON Schema 2020-12 tool called with: {json.dumps(arguments)}"


# ---- resources --------------------------------------------------------------------------------

@server.resource("test://static-text", name="static-text", title="Static text",
                 mime_type="text/plain")
def static_text() -> str:
    """A static text resource."""
    return "This is the content of the static text resource."


@server.resource("test://static-binary", name="static-binary", title="Static binary",
                 mime_type="image/png")
def static_binary() -> bytes:
    """A static binary resource (a PNG image)."""
    return base64.b64decode(RED_PIXEL_PNG)


@server.resource("test://template/{id}/data", name="template-data", title="Template data",
                 mime_type="application/json")
def template_data(id: str) -> dict[str, Any]:
    """Data for an id, from a URI template."""
    return {"id": id, "templateTest": True, "data": f"Data for ID: {id}"}


@server.resource("test://watched-resource", name="watched-resource", title="Watched resource",
                 mime_type="text/plain")
def watched_resource() -> str:
    """A resource clients may subscribe to; touch_watched_resource() announces an update."""
    return "Watched resource content"


@server.tool()
def touch_watched_resource() -> str:
    """Announce an update of test://watched-resource to the sessions subscribed to it."""
    sent = server.notify_resource_updated("test://watched-resource")
    return f"notified {sent} subscriber(s)"


# ---- prompts ----------------------------------------------------------------------------------

@server.prompt(title="Simple prompt")
def test_simple_prompt() -> str:
    """A simple prompt without arguments."""
    return "This is a simple prompt for testing."


@server.prompt(title="Prompt with arguments")
def test_prompt_with_arguments(arg1: Annotated[str, "First test argument"],
                               arg2: Annotated[str, "Second test argument"]) -> str:
    """A prompt with two required arguments."""
    return f"Prompt with arguments: arg1='{arg1}', arg2='{arg2}'"


@server.prompt(title="Prompt with embedded resource")
def test_prompt_with_embedded_resource(resourceUri: Annotated[str, "URI of the resource to embed"]) -> list[Any]:
    """A prompt that embeds a resource."""
    return [Resource(resourceUri, text="Embedded resource content for testing.", mime_type="text/plain"),
            "Please process the embedded resource above."]


@server.prompt(title="Prompt with image")
def test_prompt_with_image() -> list[Any]:
    """A prompt that includes an image."""
    return [Image(RED_PIXEL_PNG, "image/png"), "Please analyze the image above."]


@server.prompt(title="Summarize")
def summarize(text: Annotated[str, "The text to summarize"],
              style: Annotated[Literal["short", "detailed"], "How long the summary should be"] = "short") -> str:
    """Ask the model to summarize a text."""
    return f"Summarize the following text ({style}):\n\n{text}"


@server.completion(prompt="test_prompt_with_arguments", argument="arg1")
def complete_arg1(value: str, context: dict[str, str]) -> list[str]:
    return [v for v in ("paris", "park", "party", "test", "testing") if v.startswith(value)]


@server.completion(prompt="summarize", argument="style")
def complete_style(value: str, context: dict[str, str]) -> list[str]:
    return [v for v in ("short", "detailed") if v.startswith(value)]


@server.completion(resource_template="test://template/{id}/data", argument="id")
def complete_template_id(value: str, context: dict[str, str]) -> list[str]:
    return [str(i) for i in range(1, 200) if str(i).startswith(value)]
