"""``mcpsync.frontend.h1`` and ``response`` in memory: request bytes in, events out;
responses to bytes.

Every framing and request-smuggling shape is a row of a table, fed twice: all at once and
one byte at a time (a parser that only works on whole reads, or that decides differently
when a line is split, fails the second run).
"""
from __future__ import annotations

from typing import Any

import pytest

from mcpsync.frontend.h1 import (CLOSED, NEED_DATA, PAUSED, Data, EndOfMessage, H1Error,
                                 Request, RequestReader)
from mcpsync.frontend.response import CONTINUE, error_response, response_head
from mcpsync.frontend.limits import Limits

SMALL = Limits(max_request_line=64, max_header_line=48, max_head=200, max_headers=5,
               max_chunk_line=32)


def run(reader: RequestReader) -> list[Any]:
    """Events until the reader needs data, pauses or the peer is gone; an H1Error ends the
    list as ``("error", status)``."""
    out: list[Any] = []
    while True:
        try:
            event = reader.next_event()
        except H1Error as exc:
            out.append(("error", exc.status))
            return out
        if isinstance(event, Request):
            out.append(("request", event.method, event.path, event.query, event.version,
                        event.host, event.keep_alive, event.length, event.expect_continue))
        elif isinstance(event, Data):
            if out and out[-1][0] == "data":  # pieces depend on how bytes arrived: merge
                out[-1] = ("data", out[-1][1] + event.data)
            else:
                out.append(("data", event.data))
        elif isinstance(event, EndOfMessage):
            out.append(("end", event.trailers))
        else:
            out.append(event)
            return out


def parse(data: bytes, limits: Limits = Limits(), *, eof: bool = False,
          bytewise: bool = False) -> list[Any]:
    reader = RequestReader(limits)
    events: list[Any] = []
    pieces = [data[i:i + 1] for i in range(len(data))] if bytewise else [data]
    for piece in pieces:
        reader.feed(piece)
        got = run(reader)
        if events and events[-1] is NEED_DATA:
            events.pop()
        if events and got and events[-1][0] == "data" and isinstance(got[0], tuple) \
                and got[0][0] == "data":
            events[-1] = ("data", events[-1][1] + got.pop(0)[1])
        events += got
        if got and (got[-1] is not NEED_DATA):
            break
    if eof and (not events or events[-1] is NEED_DATA):
        if events:
            events.pop()
        reader.feed(b"")
        events += run(reader)
    return events


def both(data: bytes, limits: Limits = Limits(), eof: bool = False) -> list[Any]:
    whole = parse(data, limits, eof=eof)
    assert parse(data, limits, eof=eof, bytewise=True) == whole, "depends on how bytes arrive"
    return whole


def status_of(data: bytes, limits: Limits = Limits(), eof: bool = False) -> int | None:
    events = both(data, limits, eof)
    last = events[-1]
    return last[1] if isinstance(last, tuple) and last[0] == "error" else None


def req(head: str, body: bytes = b"") -> bytes:
    return head.replace("\n", "\r\n").encode("latin-1") + body


# --- requests that parse ----------------------------------------------------------------------

def test_a_simple_get() -> None:
    assert both(req("GET /a?b=1 HTTP/1.1\nHost: x\n\n")) == [
        ("request", "GET", "/a", "b=1", "HTTP/1.1", "x", True, 0, False), ("end", ()), PAUSED]


def test_content_length_body() -> None:
    assert both(req("POST / HTTP/1.1\nHost: x\nContent-Length: 5\n\n", b"hello")) == [
        ("request", "POST", "/", "", "HTTP/1.1", "x", True, 5, False), ("data", b"hello"),
        ("end", ()), PAUSED]


def test_chunked_body_with_extensions_and_trailers() -> None:
    data = req("POST / HTTP/1.1\nHost: x\nTransfer-Encoding: chunked\n\n",
               b'5;name=value;q="a \\" b"\r\nhello\r\n6 ; ext\r\n world\r\n'
               b"0\r\nX-Trailer: one\r\nX-Other:  two \r\n\r\n")
    assert both(data) == [("request", "POST", "/", "", "HTTP/1.1", "x", True, None, False),
                          ("data", b"hello world"),
                          ("end", (("x-trailer", "one"), ("x-other", "two"))), PAUSED]


def test_transfer_coding_names_are_case_insensitive() -> None:
    events = both(req("POST / HTTP/1.1\nHost: x\nTransfer-Encoding: Chunked\n\n", b"0\r\n\r\n"))
    assert events[0][7] is None and events[1] == ("end", ())


def test_pipelined_requests_wait_for_next_cycle() -> None:
    reader = RequestReader(Limits())
    reader.feed(req("POST /1 HTTP/1.1\nHost: x\nContent-Length: 3\n\n", b"one")
                + req("GET /2 HTTP/1.1\nHost: x\n\n"))
    first = run(reader)
    assert [e[0] if isinstance(e, tuple) else e for e in first] == ["request", "data", "end", PAUSED]
    assert reader.next_event() is PAUSED and reader.buffered > 0  # the second one waits
    reader.next_cycle()
    second = run(reader)
    assert second[0][2] == "/2" and second[-1] is PAUSED
    reader.next_cycle()
    assert reader.next_event() is NEED_DATA
    reader.feed(b"")
    assert reader.next_event() is CLOSED
    with pytest.raises(RuntimeError):
        reader.next_cycle()  # nothing ended: our bug, not the peer's


def test_expect_100_continue() -> None:
    events = both(req("POST / HTTP/1.1\nHost: x\nContent-Length: 2\nExpect: 100-Continue\n\n"))
    assert events[0][8] is True and events[-1] is NEED_DATA
    no_body = both(req("GET / HTTP/1.1\nHost: x\nExpect: 100-continue\n\n"))
    assert no_body[0][8] is False  # nothing to wait for
    http10 = both(req("POST / HTTP/1.0\nContent-Length: 2\nExpect: whatever\n\n", b"ab"))
    assert http10[0][8] is False and http10[-1] is PAUSED  # ignored on HTTP/1.0
    assert status_of(req("POST / HTTP/1.1\nHost: x\nContent-Length: 2\nExpect: tea\n\n")) == 417
    assert CONTINUE == b"HTTP/1.1 100 Continue\r\n\r\n"


@pytest.mark.parametrize("head, keep", [
    ("GET / HTTP/1.1\nHost: x\n\n", True),
    ("GET / HTTP/1.1\nHost: x\nConnection: close\n\n", False),
    ("GET / HTTP/1.1\nHost: x\nConnection: Upgrade, CLOSE\n\n", False),
    ("GET / HTTP/1.0\n\n", False),
    ("GET / HTTP/1.0\nConnection: keep-alive\n\n", True),
    ("GET / HTTP/1.0\nConnection: Keep-Alive, foo\n\n", True),
])
def test_keep_alive_rules(head: str, keep: bool) -> None:
    assert both(req(head))[0][6] is keep


def test_absolute_form_target_overrides_host() -> None:
    events = both(req("GET http://example.com:8080/p/q?x=1 HTTP/1.1\nHost: other\n\n"))
    assert events[0][1:6] == ("GET", "/p/q", "x=1", "HTTP/1.1", "example.com:8080")
    assert both(req("GET HTTPS://h HTTP/1.1\nHost: h\n\n"))[0][2] == "/"


def test_options_asterisk_and_leading_empty_lines() -> None:
    assert both(req("\n\nOPTIONS * HTTP/1.1\nHost: x\n\n"))[0][2] == "*"


def test_identical_content_lengths_are_one() -> None:
    assert both(req("POST / HTTP/1.1\nHost: x\nContent-Length: 2\ncontent-length: 2\n\n",
                    b"ab"))[1] == ("data", b"ab")
    assert both(req("POST / HTTP/1.1\nHost: x\nContent-Length: 2, 2\n\n", b"ab"))[1] == ("data", b"ab")


def test_repeated_fields_are_joined_and_names_lowered() -> None:
    reader = RequestReader(Limits())
    reader.feed(req("GET / HTTP/1.1\nHost: x\nX-Dup: one\nx-dup: two\nX_Under: u\n"
                    "Value:  \t padded\t \nEmpty:\nObs: caf\xe9\n\n"))
    event = reader.next_event()
    assert isinstance(event, Request)
    assert event.fields == {"host": "x", "x-dup": "one, two", "x_under": "u", "value": "padded",
                            "empty": "", "obs": "caf\xe9"}


def test_clean_and_unclean_ends() -> None:
    assert both(b"", eof=True) == [CLOSED]  # an idle keep-alive connection closed
    assert both(b"\r\n", eof=True) == [CLOSED]
    assert both(req("GET / HTTP/1.1\nHo"), eof=True) == [("error", 400)]
    events = both(req("POST / HTTP/1.1\nHost: x\nContent-Length: 5\n\n", b"he"), eof=True)
    assert events[-1] == ("error", 400)
    events = both(req("POST / HTTP/1.1\nHost: x\nTransfer-Encoding: chunked\n\n", b"5\r\nhel"),
                  eof=True)
    assert events[-1] == ("error", 400)


def test_eof_after_a_whole_request_is_clean_once_it_is_answered() -> None:
    reader = RequestReader(Limits())
    reader.feed(req("GET / HTTP/1.1\nHost: x\n\n"))
    reader.feed(b"")
    assert run(reader)[-1] is PAUSED
    reader.next_cycle()
    assert reader.next_event() is CLOSED


# --- requests that are refused ----------------------------------------------------------------

BAD = [
    # framing / smuggling
    ("cl-and-te", "POST / HTTP/1.1\nHost: x\nContent-Length: 5\nTransfer-Encoding: chunked\n\n", 400),
    ("te-and-cl", "POST / HTTP/1.1\nHost: x\nTransfer-Encoding: chunked\nContent-Length: 5\n\n", 400),
    ("cl-conflict", "POST / HTTP/1.1\nHost: x\nContent-Length: 5\nContent-Length: 6\n\n", 400),
    ("cl-list-conflict", "POST / HTTP/1.1\nHost: x\nContent-Length: 5, 6\n\n", 400),
    ("cl-plus", "POST / HTTP/1.1\nHost: x\nContent-Length: +5\n\n", 400),
    ("cl-minus", "POST / HTTP/1.1\nHost: x\nContent-Length: -1\n\n", 400),
    ("cl-hex", "POST / HTTP/1.1\nHost: x\nContent-Length: 0x5\n\n", 400),
    ("cl-inner-space", "POST / HTTP/1.1\nHost: x\nContent-Length: 5 5\n\n", 400),
    ("cl-empty", "POST / HTTP/1.1\nHost: x\nContent-Length:\n\n", 400),
    ("cl-unicode-digit", "POST / HTTP/1.1\nHost: x\nContent-Length: \xb2\n\n", 400),
    ("cl-huge", "POST / HTTP/1.1\nHost: x\nContent-Length: 1" + "0" * 19 + "\n\n", 400),
    ("te-gzip", "POST / HTTP/1.1\nHost: x\nTransfer-Encoding: gzip\n\n", 501),
    ("te-identity", "POST / HTTP/1.1\nHost: x\nTransfer-Encoding: identity\n\n", 501),
    ("te-gzip-chunked", "POST / HTTP/1.1\nHost: x\nTransfer-Encoding: gzip, chunked\n\n", 501),
    ("te-chunked-not-last", "POST / HTTP/1.1\nHost: x\nTransfer-Encoding: chunked, gzip\n\n", 400),
    ("te-chunked-twice", "POST / HTTP/1.1\nHost: x\nTransfer-Encoding: chunked\n"
                         "Transfer-Encoding: chunked\n\n", 400),
    ("te-http10", "POST / HTTP/1.0\nTransfer-Encoding: chunked\n\n", 400),
    ("te-obs-fold", "POST / HTTP/1.1\nHost: x\nTransfer-Encoding:\n chunked\n\n", 400),
    ("obs-fold", "GET / HTTP/1.1\nHost: x\nX-A: one\n two\n\n", 400),
    ("obs-fold-tab", "GET / HTTP/1.1\nHost: x\nX-A: one\n\ttwo\n\n", 400),
    # the head's grammar
    ("no-host", "GET / HTTP/1.1\n\n", 400),
    ("two-hosts", "GET / HTTP/1.1\nHost: a\nHost: b\n\n", 400),
    ("bad-host", "GET / HTTP/1.1\nHost: a b\n\n", 400),
    ("nul-in-value", "GET / HTTP/1.1\nHost: x\nX-A: a\x00b\n\n", 400),
    ("del-in-value", "GET / HTTP/1.1\nHost: x\nX-A: a\x7fb\n\n", 400),
    ("ctl-in-value", "GET / HTTP/1.1\nHost: x\nX-A: a\x1bb\n\n", 400),
    ("space-in-name", "GET / HTTP/1.1\nHost: x\nX A: b\n\n", 400),
    ("space-before-colon", "GET / HTTP/1.1\nHost: x\nX-A : b\n\n", 400),
    ("at-in-name", "GET / HTTP/1.1\nHost: x\nX@A: b\n\n", 400),
    ("empty-name", "GET / HTTP/1.1\nHost: x\n: b\n\n", 400),
    ("no-colon", "GET / HTTP/1.1\nHost: x\nBad Header\n\n", 400),
    ("first-field-folded", "GET / HTTP/1.1\n Host: x\n\n", 400),
    ("nul-in-target", "GET /a\x00b HTTP/1.1\nHost: x\n\n", 400),
    ("non-ascii-target", "GET /caf\xe9 HTTP/1.1\nHost: x\n\n", 400),
    ("relative-target", "GET a/b HTTP/1.1\nHost: x\n\n", 400),
    ("asterisk-get", "GET * HTTP/1.1\nHost: x\n\n", 400),
    ("absolute-userinfo", "GET http://u@h/ HTTP/1.1\nHost: h\n\n", 400),
    ("absolute-ftp", "GET ftp://h/ HTTP/1.1\nHost: h\n\n", 400),
    ("absolute-no-authority", "GET http:///p HTTP/1.1\nHost: h\n\n", 400),
    ("bad-method", "GE(T / HTTP/1.1\nHost: x\n\n", 400),
    ("double-space", "GET  / HTTP/1.1\nHost: x\n\n", 400),
    ("no-version", "GET /\nHost: x\n\n", 400),
    ("lowercase-version", "GET / http/1.1\nHost: x\n\n", 400),
    ("short-version", "GET / HTTP/1\nHost: x\n\n", 400),
    ("garbage", "NONSENSE\n\n", 400),
    ("http2", "GET / HTTP/2.0\nHost: x\n\n", 505),
    ("http12", "GET / HTTP/1.2\nHost: x\n\n", 505),
    ("http09", "GET / HTTP/0.9\n\n", 505),
]


@pytest.mark.parametrize("head, status", [(h, s) for _, h, s in BAD], ids=[n for n, _, _ in BAD])
def test_bad_heads(head: str, status: int) -> None:
    assert status_of(req(head)) == status


@pytest.mark.parametrize("data, status", [
    (b"GET / HTTP/1.1\nHost: x\n\n", 400),                  # bare LF line ends
    (b"GET / HTTP/1.1\r\nHost: x\n\r\n", 400),              # one bare LF
    (b"GET / HTTP/1.1\r\nHost: x\r\n\n", 400),              # a bare LF as the empty line
    (b"GET / HTTP/1.1\r\nHost: x\rX: y\r\n\r\n", 400),      # bare CR
    (b"GET / HTTP/1.1\rHost: x\r\n\r\n", 400),
    (b"\nGET / HTTP/1.1\r\nHost: x\r\n\r\n", 400),          # a bare LF before the request
], ids=["lf-only", "one-lf", "lf-end", "bare-cr", "cr-in-request-line", "leading-lf"])
def test_bare_cr_and_lf(data: bytes, status: int) -> None:
    assert status_of(data) == status


def test_a_bare_lf_is_refused_before_the_head_ends() -> None:
    """A client that ends lines with LF alone never sends CRLFCRLF: it hears 400 at once
    instead of waiting out the head deadline."""
    assert both(b"GET / HTTP/1.1\nHost: x\n") == [("error", 400)]


CHUNKED = "POST / HTTP/1.1\nHost: x\nTransfer-Encoding: chunked\n\n"


@pytest.mark.parametrize("body", [
    b"zz\r\n", b"-1\r\n", b"0000000000000010\r\n", b"0x2\r\n", b"\r\n", b" 5\r\n",
    b"5;\r\n", b"5;=x\r\n", b"5;a=\r\n", b'5;a="x\r\n', b"5;a b\r\n",
    b"5\r\nhelloXX", b"5\r\nhello\n", b"5\nhello\r\n",
    b"5\r\nhello\r\n0\r\nBad Trailer\r\n\r\n", b"5\r\nhello\r\n0\r\nX: a\x00\r\n\r\n",
    b"5\r\nhello\r\n0\r\nX: a\n\r\n",
], ids=["zz", "minus", "16-hex-digits", "0x", "empty", "leading-space", "empty-ext",
        "ext-no-name", "ext-no-value", "ext-open-quote", "ext-space", "data-not-crlf",
        "data-lf", "size-lf", "trailer-no-colon", "trailer-nul", "trailer-bare-lf"])
def test_bad_chunks(body: bytes) -> None:
    assert status_of(req(CHUNKED, body)) == 400


def test_chunk_lines_and_trailers_are_bounded() -> None:
    assert status_of(req(CHUNKED, b"5;" + b"a" * 40 + b"\r\n"), SMALL) == 400
    assert status_of(req(CHUNKED, b"5;" + b"a" * 40), SMALL) == 400  # before its CRLF
    many = b"".join(b"X-%d: v\r\n" % i for i in range(6))
    assert status_of(req(CHUNKED, b"0\r\n" + many + b"\r\n"), SMALL) == 431
    assert status_of(req(CHUNKED, b"0\r\nX: " + b"v" * 60), SMALL) == 431
    assert both(req(CHUNKED, b"000000000000005\r\nhello\r\n0\r\n\r\n"))[1] == ("data", b"hello")


@pytest.mark.parametrize("data, status", [
    (req("GET /" + "p" * 70 + " HTTP/1.1\nHost: x\n\n"), 414),
    (b"GET /" + b"p" * 70, 414),                                   # no line end yet
    (req("GET / HTTP/1.1\nHost: x\nX-Big: " + "a" * 50 + "\n\n"), 431),
    (req("GET / HTTP/1.1\nHost: x\nX-Big: " + "a" * 50), 431),     # still arriving
    (req("GET / HTTP/1.1\nHost: x\n" + "".join(f"X-{i}: v\n" for i in range(5)) + "\n"), 431),
    (req("GET / HTTP/1.1\nHost: x\n" + "".join(f"X-Header-{i}: {'v' * 30}\n"
                                                for i in range(5))), 431),  # head too large
], ids=["request-line", "request-line-partial", "header-line", "header-line-partial",
        "too-many", "head-too-large"])
def test_limits(data: bytes, status: int) -> None:
    assert status_of(data, SMALL) == status


def test_a_head_at_the_limits_parses() -> None:
    head = "GET /" + "p" * 48 + " HTTP/1.1\nHost: x\n" + "".join(f"X-{i}: v\n" for i in range(4))
    assert both(req(head + "\n"), SMALL)[0][0] == "request"


def test_a_trickled_head_is_not_quadratic() -> None:
    """64 KiB of head one byte at a time parses (the buffer grows in place and each new
    byte is checked for bare CR/LF once, not the whole head again)."""
    reader = RequestReader(Limits())
    head = b"GET / HTTP/1.1\r\nHost: x\r\n" + b"X-Pad: " + b"a" * 8000 + b"\r\n"
    head = head * 1 + b"".join(b"X-%d: %s\r\n" % (i, b"b" * 7000) for i in range(8))
    for i in range(len(head)):
        reader.feed(head[i:i + 1])
        assert reader.next_event() is NEED_DATA
    reader.feed(b"\r\n")
    assert isinstance(reader.next_event(), Request)


def test_feeding_after_eof_is_our_bug() -> None:
    reader = RequestReader(Limits())
    reader.feed(b"")
    with pytest.raises(RuntimeError):
        reader.feed(b"x")


# --- responses ----------------------------------------------------------------------------------

def head_of(data: bytes) -> tuple[str, dict[str, str]]:
    text = data.decode("latin-1")
    assert text.endswith("\r\n\r\n")
    status, *lines = text[:-4].split("\r\n")
    return status, {k.lower(): v for k, v in (line.split(": ", 1) for line in lines)}


def test_response_with_a_known_length() -> None:
    data, framing = response_head("200 OK", [("Content-Type", "text/plain")], http11=True,
                                  head_request=False, keep_alive=True, total=5)
    status, fields = head_of(data)
    assert status == "HTTP/1.1 200 OK" and fields["content-length"] == "5"
    assert "connection" not in fields and "date" in fields and fields["server"] == "mcpsync"
    assert framing.keep_alive and not framing.chunked and framing.frame(b"hello!") == b"hello"
    assert not framing.short and framing.end() == b""


def test_response_streamed_is_chunked_on_11_and_close_delimited_on_10() -> None:
    data, framing = response_head("200 OK", [], http11=True, head_request=False,
                                  keep_alive=True, total=None)
    assert head_of(data)[1]["transfer-encoding"] == "chunked" and framing.chunked
    assert framing.frame(b"abc") == b"3\r\nabc\r\n" and framing.frame(b"") == b""
    assert framing.end() == b"0\r\n\r\n"
    data, framing = response_head("200 OK", [], http11=False, head_request=False,
                                  keep_alive=True, total=None)
    fields = head_of(data)[1]
    assert "transfer-encoding" not in fields and fields["connection"] == "close"
    assert not framing.keep_alive and framing.frame(b"abc") == b"abc"


def test_response_keep_alive_on_10_and_close_by_the_app() -> None:
    data, framing = response_head("200 OK", [], http11=False, head_request=False,
                                  keep_alive=True, total=0)
    assert head_of(data)[1]["connection"] == "keep-alive" and framing.keep_alive
    data, framing = response_head("200 OK", [("Connection", "close")], http11=True,
                                  head_request=False, keep_alive=True, total=0)
    assert head_of(data)[1]["connection"] == "close" and not framing.keep_alive


def test_response_short_of_its_content_length() -> None:
    _, framing = response_head("200 OK", [("Content-Length", "10")], http11=True,
                               head_request=False, keep_alive=True, total=None)
    assert framing.frame(b"only5") == b"only5" and framing.short


def test_head_and_bodiless_statuses() -> None:
    data, framing = response_head("200 OK", [], http11=True, head_request=True,
                                  keep_alive=True, total=5)
    assert head_of(data)[1]["content-length"] == "5" and framing.frame(b"hello") == b""
    data, framing = response_head("204 No Content", [], http11=True, head_request=False,
                                  keep_alive=True, total=0)
    fields = head_of(data)[1]
    assert "content-length" not in fields and "transfer-encoding" not in fields
    assert framing.keep_alive


@pytest.mark.parametrize("status, headers", [
    ("200 OK", [("Transfer-Encoding", "chunked")]),
    ("200 OK", [("X-A", "a\r\nX-Injected: 1")]),
    ("200 OK\r\nX: y", []),
    ("OK", []),
    ("200 OK", [("Content-Length", "-1")]),
])
def test_bad_wsgi_responses_are_our_bug(status: str, headers: list[tuple[str, str]]) -> None:
    with pytest.raises(ValueError):
        response_head(status, headers, http11=True, head_request=False, keep_alive=True,
                      total=None)


def test_error_response() -> None:
    status, fields = head_of(error_response(503, "Retry-After: 1\r\n").split(b"\r\n\r\n")[0]
                             + b"\r\n\r\n")
    assert status == "HTTP/1.1 503 Service Unavailable"
    assert fields["retry-after"] == "1" and fields["connection"] == "close"
    assert error_response(400).endswith(b"\r\n\r\n400 Bad Request\n")
