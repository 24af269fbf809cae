"""What a new user hits first (issue 18, part 2): both decorator forms, print() under --stdio,
parameter types beyond the JSON primitives (datetime, UUID, Path, Decimal, bytes, pydantic),
unknown and untyped arguments, duplicate names, errors from resources, and the CLI's
one-line refusals."""
from __future__ import annotations

import datetime
import decimal
import json
import logging
import pathlib
import socket
import subprocess
import sys
import textwrap
import uuid
from typing import Any

import pydantic
import pytest
from memclient import MemClient
from test_stdio import Child

from mcpsync import (Context, DefinitionError, ResourceError, ResourceNotFound, Server,
                     ToolError)

WAIT_S = 10.0


def client_of(server: Server) -> MemClient:
    c = MemClient(server)
    c.initialize()
    return c


# ---- decorators ---------------------------------------------------------------------------------

def test_bare_and_called_decorators_both_register() -> None:
    srv = Server("forms")

    @srv.tool
    def bare(x: int) -> int:
        """Bare."""
        return x

    @srv.tool()
    def called(x: int) -> int:
        """Called."""
        return x

    @srv.prompt
    def hello(name: str) -> str:
        """Greets."""
        return f"hello {name}"

    assert callable(bare) and bare(2) == 2  # the function itself comes back
    c = client_of(srv)
    assert {t["name"] for t in c.call("tools/list")["tools"]} == {"bare", "called"}
    assert c.call("prompts/get", {"name": "hello", "arguments": {"name": "x"}})["messages"][0][
        "content"]["text"] == "hello x"
    with pytest.raises(DefinitionError, match=r"@server.resource needs a URI.*nouri\(\)"):
        @srv.resource  # type: ignore[arg-type]
        def nouri() -> str:
            return ""


def test_a_duplicate_name_is_refused_unless_replace() -> None:
    srv = Server("dups")

    @srv.tool()
    def job() -> str:
        """First."""
        return "first"

    with pytest.raises(DefinitionError, match="tool named 'job' is already registered"):
        srv.add_tool(lambda: "second", name="job")
    srv.add_tool(lambda: "second", name="job", description="Second.", replace=True)
    assert client_of(srv).call_tool("job", {})["content"][0]["text"] == "second"
    with pytest.raises(DefinitionError, match="prompt named"):
        srv.add_prompt(lambda: "p", name="p")
        srv.add_prompt(lambda: "p", name="p")
    with pytest.raises(DefinitionError, match="resource named"):
        srv.add_resource(lambda: "r", "mem://r")
        srv.add_resource(lambda: "r", "mem://r")


def test_untyped_parameters_are_announced_once(caplog: pytest.LogCaptureFixture) -> None:
    srv = Server("untyped")
    with caplog.at_level(logging.WARNING, logger="mcpsync.server"):
        @srv.tool()
        def loose(a, b: int, c=3) -> str:  # type: ignore[no-untyped-def]
            """Two untyped parameters."""
            return f"{a}{b}{c}"
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "loose()" in lines[0] and "'a', 'c'" in lines[0]
    assert client_of(srv).call_tool("loose", {"a": [1], "b": 2})["content"][0]["text"] == "[1]23"


# ---- arguments ----------------------------------------------------------------------------------

class Point(pydantic.BaseModel):
    x: int
    y: int = 0


class Shape(pydantic.BaseModel):
    name: str
    corners: list[Point]


def typed_server() -> Server:
    srv = Server("types")

    @srv.tool()
    def when(at: datetime.datetime, day: datetime.date, clock: datetime.time,
             ident: uuid.UUID, where: pathlib.Path, amount: decimal.Decimal, blob: bytes) -> dict[str, Any]:
        """Every string-borne type, echoed with its Python type's name."""
        return {"at": at, "day": day, "clock": clock, "ident": ident, "where": where,
                "amount": amount, "blob": blob, "types": [type(v).__name__ for v in
                                                          (at, day, clock, ident, where, amount, blob)]}

    @srv.tool()
    def area(shape: Shape) -> Point:
        """A pydantic model in, another out."""
        return Point(x=len(shape.corners), y=sum(p.x for p in shape.corners))

    @srv.tool()
    def strict(n: int) -> int:
        """No other arguments."""
        return n

    @srv.tool()
    def loose(n: int, **rest: Any) -> str:
        """Any other arguments too."""
        return json.dumps(rest, sort_keys=True)

    return srv


def test_string_borne_types_have_formats_convert_and_come_back() -> None:
    c = client_of(typed_server())
    schema = {t["name"]: t for t in c.call("tools/list")["tools"]}["when"]["inputSchema"]
    props = schema["properties"]
    assert props["at"] == {"type": "string", "format": "date-time"}
    assert props["day"]["format"] == "date" and props["clock"]["format"] == "time"
    assert props["ident"]["format"] == "uuid" and props["where"] == {"type": "string"}
    assert props["amount"]["type"] == ["string", "number"]
    assert props["blob"] == {"type": "string", "contentEncoding": "base64"}
    ident = uuid.uuid4()
    result = c.call_tool("when", {"at": "2026-12-01T10:00:00Z", "day": "2026-12-01", "clock": "10:30",
                                  "ident": str(ident), "where": "/tmp/x", "amount": "1.10",
                                  "blob": "aGk="})
    data = result["structuredContent"]
    assert data["types"] == ["datetime", "date", "time", "UUID", "PosixPath", "Decimal", "bytes"]
    assert data["at"] == "2026-12-01T10:00:00+00:00" and data["ident"] == str(ident)
    assert data["amount"] == "1.10" and data["blob"] == "aGk=" and data["where"] == "/tmp/x"


@pytest.mark.parametrize("field,value,complaint", [
    ("at", "yesterday", "not a valid date-time"), ("ident", "nope", "not a valid uuid"),
    ("blob", "!!", "not valid base64"), ("amount", "NaN", "not a finite decimal"),
    ("amount", "1,5", "not a decimal number")])
def test_bad_values_of_string_borne_types_are_invalid_arguments(field: str, value: str,
                                                                complaint: str) -> None:
    good = {"at": "2026-12-01T10:00:00", "day": "2026-12-01", "clock": "10:30",
            "ident": str(uuid.uuid4()), "where": "x", "amount": "1", "blob": ""}
    result = client_of(typed_server()).call_tool("when", {**good, field: value})
    assert result["isError"] is True
    assert complaint in result["content"][0]["text"] and field in result["content"][0]["text"]


def test_pydantic_models_as_parameters_and_results() -> None:
    c = client_of(typed_server())
    tool = {t["name"]: t for t in c.call("tools/list")["tools"]}["area"]
    assert "$defs" in tool["inputSchema"] and "Point" in tool["inputSchema"]["$defs"]
    assert tool["outputSchema"]["properties"]["x"]["type"] == "integer"
    ok = c.call_tool("area", {"shape": {"name": "tri", "corners": [{"x": 1}, {"x": 2}, {"x": 3}]}})
    assert ok["structuredContent"] == {"x": 3, "y": 6}
    bad = c.call_tool("area", {"shape": {"name": "tri", "corners": [{"x": "many"}]}})
    assert bad["isError"] is True and "corners.0.x" in bad["content"][0]["text"]


def test_unknown_arguments_are_refused_unless_the_tool_takes_kwargs() -> None:
    c = client_of(typed_server())
    refused = c.call_tool("strict", {"n": 1, "m": 2})
    assert refused["isError"] is True and "unexpected property 'm'" in refused["content"][0]["text"]
    assert c.call_tool("loose", {"n": 1, "m": 2})["content"][0]["text"] == '{"m": 2}'


def test_a_type_with_no_json_form_names_the_function_and_the_parameter() -> None:
    srv = Server("bad")
    with pytest.raises(DefinitionError, match=r"lookup\(\): parameter 'sock' has the type socket"):
        @srv.tool()
        def lookup(sock: socket.socket) -> str:
            """Cannot be described."""
            return ""


# ---- resource and prompt errors -----------------------------------------------------------------

def test_resource_errors_reach_the_client_with_their_message() -> None:
    srv = Server("res")

    @srv.resource("db://{table}")
    def table(table: str) -> str:
        """Rows of a table."""
        if table == "missing":
            raise ResourceNotFound(f"no table {table}")
        if table == "locked":
            raise ResourceError("the table is locked for maintenance")
        if table == "tool":
            raise ToolError("said as a ToolError")
        raise RuntimeError("secret internals")

    c = client_of(srv)
    for name, code, message in (("missing", -32002, "no table missing"),
                                ("locked", -32603, "the table is locked for maintenance"),
                                ("tool", -32603, "said as a ToolError"),
                                ("boom", -32603, "Internal error")):
        error = c.error("resources/read", {"uri": f"db://{name}"})
        assert (error["code"], error["message"]) == (code, message)


# ---- stdio and the command line -------------------------------------------------------------------

PRINTING = textwrap.dedent('''
    import os
    from mcpsync import Server
    server = Server("printing")

    @server.tool
    def chatty(text: str) -> str:
        """Prints, and so does a child process."""
        print("debug output from the tool")
        os.system("echo from a child process")
        return text
''')


def test_print_in_a_tool_does_not_corrupt_stdio(tmp_path: pathlib.Path) -> None:
    target = tmp_path / "printing.py"
    target.write_text(PRINTING)
    child = Child("serve", str(target), "--stdio")
    try:
        child.initialize()
        assert child.call("tools/call", {"name": "chatty", "arguments": {"text": "hi"}})[
            "content"][0]["text"] == "hi"
        assert child.close_stdin_and_wait() == 0
    finally:
        child.kill()
    assert child.garbage == []  # every stdout line was JSON-RPC
    assert b"debug output from the tool" in child.stderr
    assert b"from a child process" in child.stderr


BAD_TYPE = textwrap.dedent('''
    import socket
    from mcpsync import Server
    server = Server("bad")

    @server.tool()
    def lookup(sock: socket.socket) -> str:
        """Cannot be described."""
        return ""
''')


def cli(*args: str, cwd: pathlib.Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mcpsync", *args], capture_output=True,
                          text=True, timeout=WAIT_S * 3, cwd=cwd)


@pytest.mark.parametrize("args,said", [
    (["--port", "99999"], "a port is 0-65535"),
    (["--prot", "8001"], "unknown option --prot (did you mean --port?)"),
    (["--log-level", "verbose"], "invalid choice: 'VERBOSE'"),
    (["serve", "nothere.py"], "no such file: nothere.py"),
])
def test_cli_mistakes_are_one_line_and_exit_2(args: list[str], said: str) -> None:
    proc = cli(*args)
    assert proc.returncode == 2, proc.stderr
    assert said in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_a_tool_that_cannot_be_registered_is_one_line_exit_2(tmp_path: pathlib.Path) -> None:
    (tmp_path / "bad.py").write_text(BAD_TYPE)
    proc = cli("serve", str(tmp_path / "bad.py"), "--stdio")
    assert proc.returncode == 2
    assert "lookup(): parameter 'sock' has the type socket" in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_serve_in_a_script_with_the_port_taken_is_one_line_exit_2(tmp_path: pathlib.Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        script = tmp_path / "script.py"
        script.write_text("from mcpsync import Server, serve\n"
                          f"serve(Server('s'), port={port})\n")
        proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                              timeout=WAIT_S * 3)
    assert proc.returncode == 2, proc.stderr
    assert f"cannot listen on 127.0.0.1:{port}" in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
