"""The bundled example server: what ``python -m mcpsync`` serves.

Real demonstration tools (``echo``, ``add``, ``sleep_ms``, ``word_count``) and everything
the official MCP conformance suite (``@modelcontextprotocol/conformance``) expects of a server
under test: the ``test_*`` tools, the ``test://`` resources and the ``test_*`` prompts, the
2026-07-28 fixtures (multi round-trip input, diagnostics, a custom ``Mcp-Param-*`` header)
and the tasks extension's tools (``greet``, ``slow_compute`` … ``test_tool_with_task``).
"""
from __future__ import annotations

import base64
import json
from typing import Annotated, Any, Literal, TypedDict

from mcpsync import Audio, Context, Image, Resource, Server, ToolError, inputs

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


@server.tool()
def touch_resource(uri: Annotated[str, "The URI whose subscribers to notify"]) -> str:
    """Announce an update of any resource URI: to this instance's subscribers at once, and
    through the shared state bus to every other instance's (when run with --state-url)."""
    sent = server.notify_resource_updated(uri)
    shared = " (and published to the other instances)" if server.publish is not None else ""
    return f"notified {sent} subscriber(s) here{shared}"


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


# ---- 2026-07-28: diagnostics of the modern revision ------------------------------------------

@server.tool()
def test_missing_capability(ctx: Context) -> str:
    """Needs sampling: a client that did not declare it gets -32021 (HTTP 400)."""
    answer = ctx.sample("Say hello", max_tokens=20)
    return f"sampled: {json.dumps(answer.get('content'))}"


@server.tool()
def test_streaming_elicitation(ctx: Context) -> str:
    """Asks for input mid-call: 2026-07-28 answers input_required, never a request on the stream."""
    answer = ctx.elicit("Continue?", {"type": "object", "properties": {"ok": {"type": "boolean"}}})
    return f"action={answer.get('action')}"


@server.tool()
def test_logging_tool(ctx: Context) -> str:
    """Logs one message; a 2026-07-28 request without a logLevel gets none."""
    ctx.info("test_logging_tool ran", logger="everything")
    return "Logged (if the request asked for a log level)"


def _toggle(kind: str) -> str:
    """Add test_dynamic_<kind>, or remove it if it is there (listeners get <kind>s/list_changed)."""
    name = f"test_dynamic_{kind}"
    remove, add = ((server.remove_tool, server.add_tool) if kind == "tool"
                   else (server.remove_prompt, server.add_prompt))
    if remove(name):
        return f"removed {name}"
    add(lambda: "dynamic", name=name, description="Comes and goes.")
    return f"added {name}"


@server.tool()
def test_trigger_tool_change() -> str:
    """Adds or removes the tool test_dynamic_tool (listeners get tools/list_changed)."""
    return _toggle("tool")


@server.tool()
def test_trigger_prompt_change() -> str:
    """Adds or removes the prompt test_dynamic_prompt (listeners get prompts/list_changed)."""
    return _toggle("prompt")


@server.tool()
def test_x_mcp_header(region: Annotated[str, "Where to run", {"x-mcp-header": "Region"}]) -> str:
    """Its region argument travels in the Mcp-Param-Region header too (checked against the body)."""
    return f"region={region}"


# ---- 2026-07-28: multi round-trip requests (input_required) ------------------------------------

NAME_SCHEMA = {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}
CONFIRM_SCHEMA = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}


def _content(answer: dict[str, Any]) -> dict[str, Any]:
    content = answer.get("content")
    return content if isinstance(content, dict) else {}


@server.tool()
def test_input_required_result_elicitation(ctx: Context) -> str:
    """Asks for the user's name (key user_name) and greets them."""
    answer = ctx.elicit("What is your name?", NAME_SCHEMA, key="user_name")
    return f"Hello, {_content(answer).get('name', 'stranger')}!"


@server.tool()
def test_input_required_result_sampling(ctx: Context) -> str:
    """Asks the client's model a question (key capital_question)."""
    answer = ctx.sample("What is the capital of France?", max_tokens=100, key="capital_question")
    content = answer.get("content")
    return f"The model said: {content.get('text') if isinstance(content, dict) else json.dumps(content)}"


@server.tool()
def test_input_required_result_list_roots(ctx: Context) -> str:
    """Asks for the client's roots (key client_roots) and lists them."""
    roots = ctx.list_roots(key="client_roots")
    return "Roots: " + ", ".join(str(r.get("uri")) for r in roots if isinstance(r, dict))


@server.tool()
def test_input_required_result_request_state(ctx: Context) -> str:
    """Asks for a confirmation; the retry carries the sealed requestState."""
    answer = ctx.elicit("Please confirm", CONFIRM_SCHEMA, key="confirm")
    return f"state-ok: confirmed={_content(answer).get('ok')}"


@server.tool()
def test_input_required_result_multiple_inputs(ctx: Context) -> str:
    """Asks for a name, a greeting and the roots in one round."""
    got = ctx.ask(user_name=inputs.elicitation("What is your name?", NAME_SCHEMA),
                  greeting=inputs.sampling("Generate a greeting", max_tokens=50),
                  client_roots=inputs.roots())
    greeting = got["greeting"].get("content")
    text = greeting.get("text") if isinstance(greeting, dict) else ""
    return (f"{text} {_content(got['user_name']).get('name')} "
            f"({len(got['client_roots'].get('roots') or [])} roots)")


@server.tool()
def test_input_required_result_multi_round(ctx: Context) -> str:
    """Asks for a name, then (in a second round) a favourite colour."""
    name = _content(ctx.elicit("Step 1: What is your name?", NAME_SCHEMA, key="step1")).get("name")
    color = _content(ctx.elicit("Step 2: What is your favorite color?",
                                {"type": "object", "properties": {"color": {"type": "string"}},
                                 "required": ["color"]}, key="step2")).get("color")
    return f"{name} likes {color}"


@server.tool()
def test_input_required_result_tampered_state(ctx: Context) -> str:
    """Like the request-state tool: a tampered requestState is refused (-32602)."""
    answer = ctx.elicit("Please confirm", CONFIRM_SCHEMA, key="confirm")
    return f"confirmed={_content(answer).get('ok')}"


@server.tool()
def test_input_required_result_capabilities(ctx: Context) -> str:
    """Asks only for what the client declared (elicitation and/or sampling)."""
    wanted: dict[str, inputs.InputRequest] = {}
    if isinstance(ctx.client_capabilities.get("elicitation"), dict):
        wanted["user_name"] = inputs.elicitation("What is your name?", NAME_SCHEMA)
    if isinstance(ctx.client_capabilities.get("sampling"), dict):
        wanted["capital_question"] = inputs.sampling("What is the capital of France?", max_tokens=100)
    if not wanted:
        return "The client declared neither elicitation nor sampling: nothing to ask."
    return "Answered: " + ", ".join(sorted(ctx.ask(wanted)))


@server.prompt(title="Prompt that asks for context")
def test_input_required_result_prompt(ctx: Context) -> str:
    """Asks the user what context the prompt should use (key user_context)."""
    answer = ctx.elicit("What context should the prompt use?",
                        {"type": "object", "properties": {"context": {"type": "string"}},
                         "required": ["context"]}, key="user_context")
    return f"Use this context: {_content(answer).get('context', '')}"


# ---- the tasks extension (io.modelcontextprotocol/tasks) -----------------------------------------

@server.tool()
def greet(name: str) -> str:
    """Greets synchronously (never a task)."""
    return f"Hello, {name}!"


@server.tool(task="optional")
def slow_compute(seconds: Annotated[float, "How long to work (0-3600)"], ctx: Context,
                 label: Annotated[str, "A name for this run"] = "") -> str:
    """Works for `seconds` (as a task when the client takes tasks); cancellation stops it."""
    if not 0 <= seconds <= 3600:
        raise ToolError("seconds must be between 0 and 3600")
    if ctx.wait_cancelled(seconds):
        return f"{label}: cancelled"
    return f"{label}: computed for {seconds:g} s"


@server.tool(task="required")
def failing_job(ctx: Context) -> str:
    """Works for a second, then fails with a tool error (the task completes with isError)."""
    ctx.wait_cancelled(1.0)
    raise ToolError("failing_job failed, as it always does")


@server.tool(task="optional")
def protocol_error_job() -> str:
    """Crashes: its task fails with an inlined JSON-RPC error."""
    raise RuntimeError("protocol_error_job crashed on purpose")


@server.tool(task="optional")
def confirm_delete(filename: str, ctx: Context) -> str:
    """Asks the user to confirm deleting a file (the task waits in input_required)."""
    answer = ctx.elicit(f"Delete {filename}?", {"type": "object", "properties": {
        "confirm": {"type": "boolean"}}, "required": ["confirm"]})
    if answer.get("action") == "accept" and _content(answer).get("confirm"):
        return f"Deleted {filename} (not really: this is a demonstration)"
    return f"Kept {filename}"


@server.tool(task="optional")
def multi_input(ctx: Context) -> str:
    """Asks two questions at once; either may be answered first."""
    schema = {"type": "object", "properties": {"name": {"type": "string"},
                                               "confirm": {"type": "boolean"}}}
    got = ctx.ask(first=inputs.elicitation("First question", schema),
                  second=inputs.elicitation("Second question", schema))
    return f"first={_content(got['first']).get('name')}, second={_content(got['second']).get('name')}"


@server.tool(task="required", defer_task=True)
def test_tool_with_task(ctx: Context) -> str:
    """Asks for a name through input_required rounds, then continues as a task."""
    name = _content(ctx.elicit("What is your name?", NAME_SCHEMA, key="user_name")).get("name")
    ctx.begin_task()
    ctx.wait_cancelled(0.2)
    return f"Hello, {name}, from a task!"
