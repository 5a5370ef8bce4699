"""The practice site's hostile-input endpoints, checked with requests and raw sockets."""

from __future__ import annotations

import html
import re
import socket
import struct
import threading
import time

import pytest
import requests
from parsel import Selector

from crawler.practice import PracticeSite
from crawler.practice.hostile import BAD_LINKS, LEAK_LINK, OFFSITE_LINK
from helpers import TIMEOUT, wait_until
from helpers import site_get as get

MIB = 1024 * 1024




def raw_request(site: PracticeSite, path: str, timeout: float = TIMEOUT) -> socket.socket:
    """A socket that has sent ``GET path``; the caller reads the answer and closes it."""
    sock = socket.create_connection(("127.0.0.1", site.port), timeout=timeout)
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: test\r\n\r\n".encode())
    return sock


def read_head(sock: socket.socket) -> tuple[bytes, bytes]:
    """The status line and headers, and whatever part of the body came with them."""
    data = b""
    while b"\r\n\r\n" not in data:
        more = sock.recv(65536)
        assert more, f"the connection closed before the headers ended: {data!r}"
        data += more
    head, _, body = data.partition(b"\r\n\r\n")
    return head, body


def read_to_eof(sock: socket.socket) -> bytes:
    data = b""
    while more := sock.recv(65536):
        data += more
    return data


def hrefs(page: str) -> list[str]:
    return [html.unescape(href) for href in re.findall(r'<a class="link" href="([^"]*)"', page)]


def no_connections_left(site: PracticeSite) -> bool:
    wait_until(lambda: site.open_connections == 0, timeout=3)
    return site.open_connections == 0


# -- bodies too big to hold -------------------------------------------------------------------


@pytest.mark.parametrize("framing", ["length", "chunked", "close"])
def test_huge_sends_exactly_the_size_asked_for(site: PracticeSite, session: requests.Session,
                                               framing: str) -> None:
    response = get(session, site, f"/hostile/huge?mb=2&framing={framing}", stream=True)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "text/html; charset=utf-8"
    assert response.headers.get("Content-Length") == ("2097152" if framing == "length" else None)
    assert response.headers.get("Transfer-Encoding") == ("chunked" if framing == "chunked" else None)
    assert response.headers.get("Connection") == ("close" if framing == "close" else None)
    size = 0
    last = b""
    for chunk in response.iter_content(65536):
        size += len(chunk)
        last = (last + chunk)[-100:]
    assert size == 2 * MIB
    assert last.endswith(b"</body>\n</html>\n")


def test_huge_allows_fractions_and_is_valid_html(site: PracticeSite, session: requests.Session) -> None:
    response = get(session, site, "/hostile/huge?mb=0.05")
    assert len(response.content) == int(0.05 * MIB) == int(response.headers["Content-Length"])
    page = Selector(text=response.text)
    assert page.css("title::text").get() == "Huge"
    assert len(page.css("p.filler")) > 100


def test_huge_is_measured_without_being_built(site: PracticeSite, session: requests.Session) -> None:
    # A GiB body: announcing its exact length must not mean holding it in memory.
    started = time.monotonic()
    head = session.head(site.url + "/hostile/huge?mb=1024", timeout=TIMEOUT)
    assert head.headers["Content-Length"] == str(1024 * MIB)
    assert time.monotonic() - started < 2
    # A client that reads a little and hangs up frees the handler (its next write fails).
    response = get(session, site, "/hostile/huge?mb=1024", stream=True)
    assert len(next(response.iter_content(MIB))) == MIB
    response.close()
    session.close()
    assert no_connections_left(site)


@pytest.mark.parametrize("framing", ["close", "chunked"])
def test_endless_never_ends(site: PracticeSite, session: requests.Session, framing: str) -> None:
    response = get(session, site, f"/hostile/endless?framing={framing}", stream=True)
    assert response.status_code == 200
    assert "Content-Length" not in response.headers
    size = 0
    started = time.monotonic()
    for chunk in response.iter_content(65536):
        size += len(chunk)
        if size >= 32 * MIB:
            break
    assert size >= 32 * MIB, "the body ended"
    assert time.monotonic() - started < 3  # sent fast: only a size limit stops it in time
    response.close()
    session.close()
    assert no_connections_left(site)


# -- servers that stop talking ----------------------------------------------------------------


def test_stall_fires_a_read_timeout(site: PracticeSite, session: requests.Session) -> None:
    started = time.monotonic()
    with pytest.raises(requests.ConnectionError, match="Read timed out"):
        get(session, site, "/hostile/stall", timeout=0.5)
    assert 0.5 <= time.monotonic() - started < 2


def test_stall_sends_headers_and_a_few_bytes_then_nothing(site: PracticeSite) -> None:
    with raw_request(site, "/hostile/stall?sent=100", timeout=0.5) as sock:
        head, body = read_head(sock)
        assert head.startswith(b"HTTP/1.1 200 ")
        assert b"Content-Length: 1024" in head.split(b"\r\n")
        while len(body) < 100:
            body += sock.recv(65536)
        assert body.startswith(b"<!DOCTYPE html>") and len(body) == 100
        with pytest.raises(TimeoutError):
            sock.recv(1)
    # The handler notices the client hung up; it does not wait for the site to stop.
    assert no_connections_left(site)


@pytest.mark.parametrize("framing", ["chunked", "close"])
def test_trickle_defeats_a_read_timeout(site: PracticeSite, session: requests.Session,
                                        framing: str) -> None:
    response = get(session, site, f"/hostile/trickle?interval=0.05&framing={framing}",
                   stream=True, timeout=0.3)
    assert "Content-Length" not in response.headers
    received = b""
    started = time.monotonic()
    # Read what has come so far, again and again: each bit arrives well within the read
    # timeout, so it never fires, though the whole takes three times as long.
    while time.monotonic() - started < 0.9:
        received += response.raw.read1(65536)
    assert received.startswith(b"<!DOCTYPE html>")
    assert 9 <= received.count(b"<p>tick ") <= 19
    response.close()
    session.close()
    assert no_connections_left(site)


# -- encodings --------------------------------------------------------------------------------


def test_encoding_wrong_header_says_utf8_but_body_is_cp1252(site: PracticeSite,
                                                           session: requests.Session) -> None:
    response = get(session, site, "/hostile/encoding/wrong")
    assert response.headers["Content-Type"] == "text/html; charset=utf-8"
    assert b'<p class="text">caf\xe9 na\xefve</p>' in response.content
    assert b"charset" not in response.content  # no <meta> to contradict the header
    with pytest.raises(UnicodeDecodeError):
        response.content.decode("utf-8")


def test_encoding_missing_is_utf8_with_no_charset_anywhere(site: PracticeSite,
                                                          session: requests.Session) -> None:
    response = get(session, site, "/hostile/encoding/missing")
    assert response.headers["Content-Type"] == "text/html"
    assert b"charset" not in response.content
    assert '<p class="text">Crème brûlée, 日本語</p>' in response.content.decode("utf-8")


def test_encoding_meta_declares_cp1251_in_the_page(site: PracticeSite, session: requests.Session) -> None:
    response = get(session, site, "/hostile/encoding/meta")
    assert response.headers["Content-Type"] == "text/html"
    assert b'<meta charset="windows-1251">' in response.content
    assert '<p class="text">Привет, мир</p>' in response.content.decode("cp1251")


def test_encoding_invalid_has_bytes_no_encoding_accepts(site: PracticeSite,
                                                       session: requests.Session) -> None:
    response = get(session, site, "/hostile/encoding/invalid")
    assert response.headers["Content-Type"] == "text/html; charset=utf-8"
    assert b'<p class="text">readable \xff\xfe\x80 text</p>' in response.content
    assert not response.content.startswith(b"\xff\xfe")  # not a UTF-16 byte-order mark
    assert response.content.decode("utf-8", errors="replace").count("\ufffd") == 3


# -- binary -----------------------------------------------------------------------------------


def test_binary_png_is_a_real_image(site: PracticeSite, session: requests.Session) -> None:
    response = get(session, site, "/hostile/binary/png")
    body = response.content
    assert response.headers["Content-Type"] == "image/png"
    assert int(response.headers["Content-Length"]) == len(body)
    assert 150_000 < len(body) < 250_000
    assert body.startswith(b"\x89PNG\r\n\x1a\n")
    length, kind, width, height = struct.unpack(">I4sII", body[8:24])
    assert (length, kind, width, height) == (13, b"IHDR", 256, 256)
    assert body.endswith(b"IEND\xaeB`\x82")
    assert LEAK_LINK.encode() in body


def test_binary_pdf_and_octet_stream(site: PracticeSite, session: requests.Session) -> None:
    pdf = get(session, site, "/hostile/binary/pdf")
    assert pdf.headers["Content-Type"] == "application/pdf"
    assert int(pdf.headers["Content-Length"]) == len(pdf.content)
    assert pdf.content.startswith(b"%PDF-1.4\n") and pdf.content.endswith(b"%%EOF\n")
    octets = get(session, site, "/hostile/binary/octet?kb=200")
    assert octets.headers["Content-Type"] == "application/octet-stream"
    assert int(octets.headers["Content-Length"]) == len(octets.content) == 200 * 1024
    assert LEAK_LINK.encode() in octets.content
    assert get(session, site, "/hostile/binary/octet").headers["Content-Length"] == str(64 * 1024)
    assert get(session, site, "/hostile/binary/gif").status_code == 404


# -- broken HTML and links --------------------------------------------------------------------


def test_malformed_html_still_has_findable_links(site: PracticeSite, session: requests.Session) -> None:
    response = get(session, site, "/hostile/malformed-html")
    body = response.content
    assert b"\x00" in body and b"</div></div></div>" in body
    assert body.rstrip().endswith(b"')")  # a <script> that is never closed
    assert b"</script>" not in body
    page = Selector(text=body.decode("utf-8"))
    assert page.css("a.link::attr(href)").getall() == [f"/links/target/{n}" for n in (1, 2, 3, 4)]


def test_nested_divs_with_the_link_at_the_bottom(site: PracticeSite, session: requests.Session) -> None:
    small = get(session, site, "/hostile/nested?depth=3").text
    assert ("<body>\n<div><div><div><p class=\"deep\">deep</p>\n"
            '<a class="link" href="/links/target/0">the bottom</a>\n</div></div></div></body>') in small
    deepest = get(session, site, "/hostile/nested?depth=1000000", stream=True)
    size = sum(len(chunk) for chunk in deepest.iter_content(MIB))
    assert size == int(deepest.headers["Content-Length"])
    assert size > 11 * 1_000_000  # "<div>" and "</div>" a million times each
    assert get(session, site, "/hostile/nested").text.count("<div>") == 100_000


def test_many_links_are_distinct_and_their_targets_answer(site: PracticeSite,
                                                          session: requests.Session) -> None:
    page = get(session, site, "/hostile/many-links").text
    links = hrefs(page)
    assert links == [f"/hostile/many-links/target/{i}" for i in range(100_000)]
    assert hrefs(get(session, site, "/hostile/many-links?n=3").text) == links[:3]
    target = get(session, site, "/hostile/many-links/target/99999")
    assert target.status_code == 200 and '<p class="target">99999</p>' in target.text
    assert get(session, site, "/hostile/many-links/target/x").status_code == 404


def test_bad_links_page_lists_every_broken_kind_between_good_links(site: PracticeSite,
                                                                   session: requests.Session) -> None:
    every = hrefs(get(session, site, "/hostile/bad-links").text)
    assert every == ["/links/target/1", *BAD_LINKS, OFFSITE_LINK, "/links/target/2"]
    assert len(max(every, key=len)) == 3000
    on_site = hrefs(get(session, site, "/hostile/bad-links?offsite=0").text)
    assert on_site == ["/links/target/1", *BAD_LINKS, "/links/target/2"]


def test_bad_links_odd_paths_land_on_a_page_that_shows_them(site: PracticeSite,
                                                            session: requests.Session) -> None:
    # requests sends "%zz" as "%25zz" and a space as "%20"; the page shows what arrived.
    for sent, shown in [("%zz", "%25zz"), ("a b", "a%20b"), ("ünï", "%C3%BCn%C3%AF")]:
        response = get(session, site, f"/hostile/bad-links/target/{sent}")
        assert response.status_code == 200
        assert f'<p class="path">/hostile/bad-links/target/{shown}</p>' in response.text


# -- broken HTTP ------------------------------------------------------------------------------


def test_cut_ends_the_body_short(site: PracticeSite, session: requests.Session) -> None:
    with pytest.raises(requests.exceptions.ChunkedEncodingError, match="IncompleteRead"):
        get(session, site, "/hostile/cut?size=5000&sent=1000")
    with raw_request(site, "/hostile/cut?size=5000&sent=1000") as sock:
        head, body = read_head(sock)
        assert b"Content-Length: 5000" in head.split(b"\r\n")
        assert len(body + read_to_eof(sock)) == 1000
    with raw_request(site, "/hostile/cut?size=10&sent=0") as sock:
        head, body = read_head(sock)
        assert body + read_to_eof(sock) == b""


@pytest.mark.parametrize(("kind", "status_line"), [
    ("garbage", b"HTXP/9 200 OK"),
    ("code", b"HTTP/1.1 OK-ish"),
    ("range", b"HTTP/1.1 1000 Big"),
    ("long", b"HTTP/1.1 200 " + b"x" * 70_000),
])
def test_bad_status_line_is_a_connection_error(site: PracticeSite, session: requests.Session,
                                               kind: str, status_line: bytes) -> None:
    with pytest.raises(requests.ConnectionError):
        get(session, site, f"/hostile/bad-status?kind={kind}")
    with raw_request(site, f"/hostile/bad-status?kind={kind}") as sock:
        assert read_to_eof(sock).split(b"\r\n")[0] == status_line


def test_bad_status_defaults_to_garbage(site: PracticeSite) -> None:
    with raw_request(site, "/hostile/bad-status") as sock:
        assert read_to_eof(sock).startswith(b"HTXP/9 200 OK\r\n")


@pytest.mark.parametrize("path", [
    "/hostile/huge?mb=0", "/hostile/huge?mb=2000", "/hostile/huge?mb=nan", "/hostile/huge?framing=gzip",
    "/hostile/endless?framing=length", "/hostile/stall?sent=1024", "/hostile/trickle?interval=0",
    "/hostile/trickle?framing=length", "/hostile/binary/octet?kb=0", "/hostile/nested?depth=1000001",
    "/hostile/many-links?n=200001", "/hostile/bad-links?offsite=2", "/hostile/cut?size=10&sent=10",
    "/hostile/cut?size=0", "/hostile/bad-status?kind=nice",
])
def test_malformed_queries_are_400(site: PracticeSite, session: requests.Session, path: str) -> None:
    response = get(session, site, path)
    assert response.status_code == 400
    assert response.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert site.counters.connections == 1  # a 400 keeps the connection alive


@pytest.mark.parametrize("path", ["/hostile", "/hostile/", "/hostile/nope", "/hostile/encoding/utf-16",
                                  "/hostile/huge/1"])
def test_unknown_hostile_paths_are_404(site: PracticeSite, session: requests.Session, path: str) -> None:
    assert get(session, site, path).status_code == 404


# -- lifecycle --------------------------------------------------------------------------------


def test_stop_is_prompt_while_hostile_clients_are_connected() -> None:
    site = PracticeSite(products=5).start()
    port = site.port
    # None of these clients reads what it is sent: the handlers block in waits or in writes.
    paths = ["/hostile/stall", "/hostile/trickle?interval=0.05", "/hostile/endless",
             "/hostile/endless?framing=chunked", "/hostile/huge?mb=512"]
    clients = [raw_request(site, path) for path in paths]
    try:
        wait_until(lambda: site.counters.requests == len(paths), timeout=TIMEOUT)
        time.sleep(0.2)  # the writers fill their socket buffers and block
        assert site.open_connections == len(paths)
        started = time.monotonic()
        site.stop()
        assert time.monotonic() - started < 2
        assert site.open_connections == 0
        assert not [t for t in threading.enumerate() if t.name.startswith(f"practice-site-{port}")]
    finally:
        for client in clients:
            client.close()
        site.stop()


def test_clients_that_hang_up_free_their_handlers(site: PracticeSite) -> None:
    paths = ["/hostile/stall", "/hostile/trickle?interval=0.05", "/hostile/endless",
             "/hostile/huge?mb=512&framing=chunked"]
    for path in paths:
        with raw_request(site, path) as sock:
            read_head(sock)
    assert no_connections_left(site)
