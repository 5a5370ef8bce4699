"""The practice site's hostile-input endpoints: pages a crawler must survive, not trust.

Each one is a way a real site breaks a client: bodies that are too big or never end, servers
that stop talking, text in the wrong encoding, binary where a page was expected, broken HTML,
broken links and broken HTTP. Bodies are streamed in blocks, never built whole in memory, and
every endpoint that waits ends as soon as the site stops (or the client hangs up).

``framing`` says how a streamed body's end is marked: ``length`` (an exact ``Content-Length``),
``chunked`` (``Transfer-Encoding: chunked``) or ``close`` (neither: the body ends when the server
closes the connection).

``/hostile/huge?mb=M&framing=length``
    M MiB (0.01-1024, fractions allowed) of valid HTML, exactly ``int(M * 2**20)`` bytes.
``/hostile/endless?framing=close``
    200 ``text/html`` that never ends, sent as fast as the client reads (``chunked`` or ``close``).
``/hostile/stall?sent=16``
    Announces a 1024-byte body, sends its first ``sent`` bytes (0-1023), then nothing more
    until the site stops or the client hangs up.
``/hostile/trickle?interval=S&framing=chunked``
    A body that never ends: one line every S seconds (0.01-60), ``chunked`` or ``close``.
``/hostile/encoding/<case>``
    A page whose ``<p class="text">`` tests decoding. ``wrong``: the header says UTF-8, the body
    is cp1252 (``café naïve``, so ``caf\\xe9 na\\xefve``). ``missing``: no charset anywhere, a
    UTF-8 body (``Crème brûlée, 日本語``). ``meta``: no header charset, ``<meta
    charset="windows-1251">`` and a cp1251 body (``Привет, мир``). ``invalid``: the header says
    UTF-8, and the bytes ``\\xff\\xfe\\x80`` sit in otherwise ASCII text (``readable ___ text``).
``/hostile/binary/<kind>``
    ``png`` (a real 256x256 image, ~200 KB), ``pdf`` (a one-page PDF), ``octet?kb=64``
    (``application/octet-stream``, 1-1048576 KiB, streamed). Each has an exact ``Content-Length``,
    and each carries the bytes of ``<a class="link" href="/links/target/99">``: a crawler that
    parses binary as HTML follows it.
``/hostile/malformed-html``
    Links ``/links/target/1``..``4`` (quoted, unquoted, upper-case, after a stray ``</div>``), then
    a NUL byte, unclosed tags, a bogus comment and a ``<script>`` that is never closed.
``/hostile/nested?depth=100000``
    ``depth`` nested ``<div>``s (1-1000000); at the bottom ``<p class="deep">deep</p>`` and
    ``<a class="link" href="/links/target/0">``.
``/hostile/many-links?n=100000``
    n (0-200000) distinct ``<a class="link" href="/hostile/many-links/target/<i>">`` links.
``/hostile/many-links/target/<i>``
    A tiny 200 page.
``/hostile/bad-links?offsite=1``
    ``<a class="link">`` links of every broken kind in :data:`BAD_LINKS`, plus the good
    ``/links/target/1`` and ``/links/target/2``. ``offsite=0`` leaves out the one link to another
    host (``http://bücher.example/``), so a crawl with no domain filter never looks it up.
``/hostile/bad-links/target/<anything>``
    200, with the request target as received in ``<p class="path">``: where odd-path links land.
``/hostile/cut?size=1024&sent=512``
    Announces ``Content-Length: size`` (1-16777216), sends ``sent`` (0 to size-1) bytes, closes.
``/hostile/bad-status?kind=garbage``
    A broken status line, then the connection closes: ``garbage`` (``HTXP/9 200 OK``), ``code``
    (``HTTP/1.1 OK-ish``), ``range`` (``HTTP/1.1 1000 Big``), ``long`` (a 70,000-byte line).

A malformed query parameter is a 400; an unknown ``/hostile/`` path is a 404.
"""

from __future__ import annotations

import functools
import itertools
import math
import random
import select
import socket
import struct
import zlib
from collections.abc import Callable, Iterable, Iterator
from html import escape
from typing import TYPE_CHECKING

from crawler.practice.catalogue import layout

if TYPE_CHECKING:
    from crawler.practice.endpoints import Handler

Query = dict[str, list[str]]
Chunks = Callable[[], Iterator[bytes]]  # a fresh iterator per call: once to measure, once to send

_HTML = "text/html; charset=utf-8"
_BLOCK = 64 * 1024
_MIB = 1024 * 1024
_LINE = b'<p class="filler">' + b"all work and no play " * 4 + b"</p>\n"
_LINES = b"".join(itertools.repeat(_LINE, _BLOCK // len(_LINE)))  # just under one block
_TAIL = b"</body>\n</html>\n"
# A link hidden in binary bodies: only a crawler that parses them as HTML ever requests it.
LEAK_LINK = "/links/target/99"
_LEAK = f'<a class="link" href="{LEAK_LINK}">leak</a>'.encode()

# case -> (Content-Type, <meta> tag, the text of <p class="text">, the codec writing the page)
_ENCODINGS = {
    "wrong": (_HTML, "", "café naïve", "cp1252"),
    "missing": ("text/html", "", "Crème brûlée, 日本語", "utf-8"),
    "meta": ("text/html", '<meta charset="windows-1251">', "Привет, мир", "cp1251"),
    # latin-1 writes U+00FF U+00FE U+0080 as the bytes ff fe 80: invalid UTF-8 wherever they are.
    "invalid": (_HTML, "", "readable \xff\xfe\x80 text", "latin-1"),
}

#: The broken hrefs on ``/hostile/bad-links`` (the good ones are ``/links/target/1`` and ``/2``).
BAD_LINKS = (
    "/hostile/bad-links/target/%zz",  # percent signs that escape nothing
    "/hostile/bad-links/target/%",
    "/hostile/bad-links/target/ 3",  # spaces in the path
    "/hostile/bad-links/target/a b",
    "/hostile/bad-links/target/ünï",  # a non-ASCII path
    "/hostile/bad-links/target/long?pad=" + "x" * (3000 - len("/hostile/bad-links/target/long?pad=")),
    "javascript:void(0)",
    "mailto:someone@example.com",
    "tel:+123",
    "data:text/html,hi",
    "http://[::1",  # an IPv6 host never closed
    "http://exa mple.com/",
    "//",
    "http://",
    "http://127.0.0.1:99999/",  # no such port
)
OFFSITE_LINK = "http://bücher.example/"


class _BadQuery(Exception):
    """A malformed query parameter; answered with a 400."""


def route(handler: Handler, rest: list[str], query: Query) -> bool:
    """Answer ``/hostile/<rest>``; ``False`` when there is no such endpoint."""
    try:
        return _route(handler, rest, query)
    except _BadQuery as error:
        handler._send_text(400, f"{error}\n")
        return True


def _route(handler: Handler, rest: list[str], query: Query) -> bool:
    match rest:
        case ["huge"]:
            size = int(_number(query, "mb", 1.0, 0.01, 1024.0) * _MIB)
            _stream(handler, _sized_html(size), _framing(query, "length", "chunked", "close"))
        case ["endless"]:
            _stream(handler, _endless_html, _framing(query, "close", "chunked"))
        case ["stall"]:
            _stall(handler, _integer(query, "sent", 16, 0, 1023))
        case ["trickle"]:
            interval = _number(query, "interval", 1.0, 0.01, 60.0)
            framing = _framing(query, "chunked", "close")
            _stream(handler, functools.partial(_trickle, handler, interval), framing)
        case ["encoding", case] if case in _ENCODINGS:
            _encoding(handler, case)
        case ["binary", "png"]:
            handler._send(200, _png(), "image/png")
        case ["binary", "pdf"]:
            handler._send(200, _pdf(), "application/pdf")
        case ["binary", "octet"]:
            size = _integer(query, "kb", 64, 1, 1024 * 1024) * 1024
            _stream(handler, functools.partial(_octets, size), "length", "application/octet-stream")
        case ["malformed-html"]:
            handler._send(200, _MALFORMED)
        case ["nested"]:
            _stream(handler, _nested(_integer(query, "depth", 100_000, 1, 1_000_000)), "length")
        case ["many-links"]:
            _stream(handler, _many_links(_integer(query, "n", 100_000, 0, 200_000)), "length")
        case ["many-links", "target", number] if number.isascii() and number.isdigit():
            handler._send(200, layout(f"Target {number}", f'<p class="target">{number}</p>').encode())
        case ["bad-links"]:
            handler._send(200, _bad_links(_integer(query, "offsite", 1, 0, 1) == 1))
        case ["bad-links", "target", *_]:
            page = layout("Odd path", f'<p class="path">{escape(handler.path)}</p>')
            handler._send(200, page.encode("utf-8"))
        case ["cut"]:
            size = _integer(query, "size", 1024, 1, 16 * _MIB)
            _cut(handler, size, _integer(query, "sent", size // 2, 0, size - 1))
        case ["bad-status"]:
            _bad_status(handler, _choice(query, "kind", *_BAD_STATUS_LINES))
        case _:
            return False
    return True


# -- query parameters ----------------------------------------------------


def _param(query: Query, name: str, default: str) -> str:
    return query.get(name, [default])[-1].strip()


def _integer(query: Query, name: str, default: int, low: int, high: int) -> int:
    try:
        value = int(_param(query, name, str(default)))
    except ValueError:
        raise _BadQuery(f"{name} must be an integer") from None
    if not low <= value <= high:
        raise _BadQuery(f"{name} must be between {low} and {high}")
    return value


def _number(query: Query, name: str, default: float, low: float, high: float) -> float:
    try:
        value = float(_param(query, name, str(default)))
    except ValueError:
        raise _BadQuery(f"{name} must be a number") from None
    if not (math.isfinite(value) and low <= value <= high):
        raise _BadQuery(f"{name} must be between {low:g} and {high:g}")
    return value


def _choice(query: Query, name: str, default: str, *others: str) -> str:
    value = _param(query, name, default)
    if value not in (default, *others):
        raise _BadQuery(f"{name} must be one of {', '.join((default, *others))}")
    return value


def _framing(query: Query, default: str, *others: str) -> str:
    return _choice(query, "framing", default, *others)


# -- sending -------------------------------------------------------------


def _stream(handler: Handler, chunks: Chunks, framing: str, content_type: str = _HTML) -> None:
    """Send a 200 whose body is ``chunks()``, with its end marked as ``framing`` says."""
    handler.send_response(200)
    handler.send_header("Content-Type", content_type)
    if framing == "length":
        handler.send_header("Content-Length", str(sum(map(len, chunks()))))
    elif framing == "chunked":
        handler.send_header("Transfer-Encoding", "chunked")
    else:
        handler.send_header("Connection", "close")  # also sets handler.close_connection
    handler.end_headers()
    if handler.command == "HEAD":
        return
    for chunk in chunks():
        if handler.server.stopping.is_set():
            handler.close_connection = True  # the body is unfinished: the connection is unusable
            return
        # A client that hung up makes this raise a ConnectionError, which the server swallows.
        handler.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk) if framing == "chunked" else chunk)
    if framing == "chunked":
        handler.wfile.write(b"0\r\n\r\n")


def _take(chunks: Iterable[bytes], size: int) -> Iterator[bytes]:
    """The first ``size`` bytes of ``chunks``."""
    for chunk in chunks:
        if size <= 0:
            return
        yield chunk[:size]
        size -= len(chunk)


def _client_gone(handler: Handler) -> bool:
    """Whether the client closed its end (a pipelined request does not count)."""
    sock = handler.connection
    if not select.select([sock], [], [], 0)[0]:
        return False
    try:
        return sock.recv(1, socket.MSG_PEEK) == b""
    except OSError:
        return True


def _wait_quietly(handler: Handler) -> None:
    """Send nothing until the site stops or the client hangs up."""
    while not handler.server.stopping.wait(0.05) and not _client_gone(handler):
        pass


# -- endpoints -----------------------------------------------------------


def _head(title: str, meta: str = '<meta charset="utf-8">') -> bytes:
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n{meta}\n<title>{title}</title>\n'
            "</head>\n<body>\n").encode()


def _sized_html(size: int) -> Chunks:
    head = _head("Huge")
    lines, pad = divmod(size - len(head) - len(_TAIL), len(_LINE))
    blocks, odd_lines = divmod(lines, _BLOCK // len(_LINE))

    def chunks() -> Iterator[bytes]:
        yield head
        yield from itertools.repeat(_LINES, blocks)
        if odd_lines:
            yield _LINE * odd_lines
        if pad:
            yield b"\n" * pad  # whitespace between elements: still valid HTML
        yield _TAIL

    return chunks


def _endless_html() -> Iterator[bytes]:
    yield _head("Endless")
    yield from itertools.repeat(_LINES)


def _stall(handler: Handler, sent: int) -> None:
    handler.send_response(200)
    handler.send_header("Content-Type", _HTML)
    handler.send_header("Content-Length", "1024")
    handler.end_headers()
    for chunk in _take(_endless_html(), sent):
        handler.wfile.write(chunk)
    handler.close_connection = True  # the body was never finished
    _wait_quietly(handler)


def _trickle(handler: Handler, interval: float) -> Iterator[bytes]:
    yield _head("Trickle")
    for tick in itertools.count():
        if handler.server.stopping.wait(interval):
            return
        yield b"<p>tick %d</p>\n" % tick


def _encoding(handler: Handler, case: str) -> None:
    content_type, meta, text, codec = _ENCODINGS[case]
    body = f'<h1>Encoding: {case}</h1>\n<p class="text">{text}</p>\n'
    page = _head(f"Encoding {case}", meta).decode() + body + _TAIL.decode()
    handler._send(200, page.encode(codec), content_type)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


@functools.cache
def _png() -> bytes:
    """A real 256x256 RGB noise image: noise does not compress, so it stays ~200 KB."""
    side = 256
    noise = random.Random("hostile-png")
    rows = b"".join(b"\x00" + noise.randbytes(side * 3) for _ in range(side))  # filter 0: none
    return (b"\x89PNG\r\n\x1a\n"
            + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0))
            + _png_chunk(b"tEXt", b"Comment\x00" + _LEAK)
            + _png_chunk(b"IDAT", zlib.compress(rows, 1))
            + _png_chunk(b"IEND", b""))


@functools.cache
def _pdf() -> bytes:
    """A one-page PDF with a correct cross-reference table."""
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 200 200] >>",
        b"<< /Length %d >>\nstream\n%s\nendstream" % (len(_LEAK), _LEAK),
    ]
    out = b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n"  # a binary comment line, as PDF writers add
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    return out + b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1, xref)


@functools.cache
def _octet_block() -> bytes:
    noise = random.Random("hostile-octets").randbytes(_BLOCK - len(_LEAK))
    return _LEAK + noise


def _octets(size: int) -> Iterator[bytes]:
    return _take(itertools.repeat(_octet_block()), size)


_MALFORMED = (
    b"<!DOCTYPE html>\n<html><head><title>Malformed</title></head>\n<body>\n"
    b'<div class="top"><p>unclosed paragraph\n'
    b'<a class="link" href="/links/target/1">one</a>\n'
    b"<a class=link href=/links/target/2>two, unquoted</a>\n"
    b"</div></div></div></span>\n"  # closing what was never opened
    b"<A CLASS='link' HREF='/links/target/3'>three, upper case</A>\n"
    b'<ul><li><a class="link" href="/links/target/4">four<li>unclosed item\n'
    b"<p>a NUL byte: \x00 there</p>\n"
    b'<table><tr><td>cell<td><b><i>misnested</b></i></table>\n'
    b'<img src="x.png" alt="unterminated\n'
    b'<p class="text" title=no"quote>attributes gone wrong</p>\n'
    b"<!- not a comment -->\n<!-- a comment -- with double dashes -->\n"
    b"<script>var closed = false; document.write('<a href=\"/links/target/5\">')\n"
)


def _nested(depth: int) -> Chunks:
    step = 10_000
    bottom = b'<p class="deep">deep</p>\n<a class="link" href="/links/target/0">the bottom</a>\n'

    def chunks() -> Iterator[bytes]:
        yield _head(f"Nested {depth}")
        for start in range(0, depth, step):
            yield b"<div>" * min(step, depth - start)
        yield bottom
        for start in range(0, depth, step):
            yield b"</div>" * min(step, depth - start)
        yield _TAIL

    return chunks


def _many_links(count: int) -> Chunks:
    step = 1000

    def chunks() -> Iterator[bytes]:
        yield _head(f"{count} links")
        for start in range(0, count, step):
            yield "".join(f'<a class="link" href="/hostile/many-links/target/{i}">{i}</a>\n'
                          for i in range(start, min(start + step, count))).encode()
        yield _TAIL

    return chunks


def _bad_links(offsite: bool) -> bytes:
    hrefs = ["/links/target/1", *BAD_LINKS, *([OFFSITE_LINK] if offsite else []), "/links/target/2"]
    # escape() only for the HTML syntax (&, <, ", '): the hrefs are meant to arrive broken.
    items = "\n".join(f'<li><a class="link" href="{escape(href)}">{escape(href[:40])}</a></li>'
                      for href in hrefs)
    return layout("Bad links", f'<ul class="links">\n{items}\n</ul>').encode("utf-8")


def _cut(handler: Handler, size: int, sent: int) -> None:
    handler.send_response(200)
    handler.send_header("Content-Type", _HTML)
    handler.send_header("Content-Length", str(size))
    handler.end_headers()
    for chunk in _take(_endless_html(), sent):
        handler.wfile.write(chunk)
    handler.close_connection = True  # the server then closes: the client sees the body end short


_BAD_STATUS_LINES = {
    "garbage": b"HTXP/9 200 OK\r\n",
    "code": b"HTTP/1.1 OK-ish\r\n",
    "range": b"HTTP/1.1 1000 Big\r\n",
    "long": b"HTTP/1.1 200 " + b"x" * 70_000 + b"\r\n",  # past http.client's 65,536-byte line limit
}


def _bad_status(handler: Handler, kind: str) -> None:
    # Written raw: send_response() would only ever write a well-formed status line.
    handler.wfile.write(_BAD_STATUS_LINES[kind] + b"Content-Length: 2\r\n\r\nhi")
    handler.close_connection = True
