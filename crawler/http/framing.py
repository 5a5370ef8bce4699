"""Connections that hold a server to the end of its responses.

http.client trusts the bytes it is given: a status line and headers trickled in a byte at a time
are read for as long as each byte comes within the read timeout, a header block cut off by the
connection closing is taken for a complete one (a 200 with an empty body), and bytes a server
sends past the end its framing announced (``Content-Length``, the last chunk, a body-less 304)
stay on the connection, where the next request reads them as its answer.

Here every read of a response, status line and headers included, stops at the exchange's
deadline (``ExchangeTimeout``); a header block the connection cut is an error
(``IncompleteHeaders``), never a response; and a connection found holding bytes past the end of
a response, when the response ends or when the pool hands it out again, is closed, never
reused, and reported through ``on_broken_framing``; that host's connections then serve one
request each. A response followed by such bytes on a connection that had served an earlier
response is not trusted either (``UntrustedResponse``): it may be the earlier response's extra
bytes, read as the answer to the next request.

What no HTTP/1.1 client can tell: bytes a server sends past a response's end only after the next
request went out on that connection are indistinguishable from the answer to it.

Through a proxy, a connection's host is the proxy, and the framing checks name the origin it
serves instead: the one at the end of a ``CONNECT`` tunnel, or the one its pool forwards
plain-http requests for (``forwarded_origin``, see ``crawler.http.sessions``). The proxy's
answer to ``CONNECT`` is part of connecting, read within the connect timeout, and any other
answer than 200 (or none) is a ``TunnelRefused`` carrying the proxy's status.
"""

from __future__ import annotations

import functools
import http.client
import io
import socket
import time
from collections.abc import Callable
from typing import Any

from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.util import Timeout
from urllib3.util.wait import wait_for_read

FramingReporter = Callable[[str], None]
"""Told the host of a connection that held bytes past the end of a response."""


class ExchangeTimeout(Timeout):
    """urllib3's (connect, read) timeout plus ``deadline``: the ``time.monotonic()`` by which
    the whole response, headers and body, must be in."""

    def __init__(self, connect: float, read: float, deadline: float) -> None:
        super().__init__(connect=connect, read=read)
        self.deadline = deadline

    def clone(self) -> ExchangeTimeout:
        # The pool clones the timeout it is given; a plain clone would drop the deadline.
        return ExchangeTimeout(self._connect, self._read, self.deadline)  # type: ignore[arg-type]


class IncompleteHeaders(http.client.HTTPException):
    """The connection closed before the response's header block ended."""


class UntrustedResponse(http.client.HTTPException):
    """Bytes followed a response on a connection that had served an earlier one: the response
    may itself be bytes the server sent past the end of that earlier one."""


class TunnelRefused(OSError):
    """The proxy did not open the ``CONNECT`` tunnel: ``status`` is its answer, None if it gave
    none (it closed the connection, or did not answer within the connect timeout)."""

    def __init__(self, status: int | None) -> None:
        super().__init__(status)
        self.status = status

    def __str__(self) -> str:
        if self.status is None:
            return "the proxy gave no answer to CONNECT"
        return f"the proxy answered CONNECT with {self.status}"


class _Reader(io.RawIOBase):
    """A socket's incoming bytes, read no later than ``deadline``.

    Each read waits at most the socket's read timeout and never past the deadline, so a
    response that trickles in cannot outlast it. It notes whether the peer closed the
    connection, and can tell, without waiting, whether bytes are waiting.
    """

    def __init__(self, sock: socket.socket, deadline: float | None) -> None:
        super().__init__()
        self.sock = sock
        # The socket's own unbuffered file: while it is open, closing the connection (which
        # http.client does at once for a response that ends with the connection) leaves the
        # socket open until the response is read.
        self._file = sock.makefile("rb", buffering=0)
        self.deadline = deadline
        self.closed_by_peer = False
        self._without_waiting = False

    def makefile(self, mode: str) -> io.BufferedReader:
        # http.client asks its socket for a file to read the response from: this reader, buffered.
        return io.BufferedReader(self)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int | None:
        if self._without_waiting:
            return self._read_waiting(buffer)
        if self.deadline is not None:
            left = self.deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("the response took longer than its total time")
            timeout = self.sock.gettimeout()
            if timeout is None or left < timeout:
                self.sock.settimeout(left)
        count = self._file.readinto(buffer)
        if count == 0:
            self.closed_by_peer = True
        return count

    def _read_waiting(self, buffer: Any) -> int | None:
        # 0 (the peer closed) is not bytes past the end either.
        return _read_at_once(self.sock, lambda: self._file.readinto(buffer)) or None

    def close(self) -> None:
        self._file.close()
        super().close()

    def holds_bytes(self, buffered: io.BufferedReader) -> bool:
        """Whether bytes are waiting, in ``buffered`` (this reader's buffer) or the socket."""
        self._without_waiting = True
        try:
            return bool(buffered.peek(1))
        finally:
            self._without_waiting = False

    def shut(self) -> None:
        """End the connection for both sides: a pool that hands it out again finds it closed."""
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass  # already closed by the peer


class CheckedResponse(http.client.HTTPResponse):
    """An http.client response read through a ``_Reader``: its reads end at the deadline, a
    header block cut short is an error, and bytes past its end close its connection."""

    def __init__(
        self,
        sock: socket.socket,
        debuglevel: int = 0,
        method: str | None = None,
        url: str | None = None,
        *,
        deadline: float | None,
        reused: bool,
        on_broken_framing: Callable[[], None],
    ) -> None:
        self._reader = _Reader(sock, deadline)
        super().__init__(self._reader, debuglevel, method, url)  # type: ignore[arg-type]
        self._reused = reused
        self._on_broken_framing = on_broken_framing
        self._last_chunk_read = False

    def begin(self) -> None:
        super().begin()
        # http.client's header parser takes the end of the stream for the blank line that ends
        # the header block; only a reader that saw the close can tell the two apart. (Reading
        # stops at the blank line, so a close after it is never seen here.)
        if self._reader.closed_by_peer:
            raise IncompleteHeaders("the connection closed before the end of the response headers")

    def _read_and_discard_trailer(self) -> None:
        super()._read_and_discard_trailer()
        self._last_chunk_read = True

    def _close_conn(self) -> None:
        # Called when the body has been read to the end its framing announced, and also when the
        # response is closed early; only the first says where the response ends.
        ended = self.length == 0 or (self.chunked and self._last_chunk_read)
        broken = ended and self.fp is not None and not self.will_close and self._reader.holds_bytes(self.fp)
        if broken:
            self._reader.shut()
            self._on_broken_framing()
        super()._close_conn()
        if broken and self._reused:
            # On a fresh connection the first response came first, whatever follows it. On a
            # reused one it may be the tail of the previous response, read as the answer to this
            # request, with the real answer behind it.
            raise UntrustedResponse("bytes followed the response on a reused connection")


class _ConnectAnswer(http.client.HTTPResponse):
    """A proxy's answer to ``CONNECT``, read no later than ``deadline``; its status is told to
    ``on_status`` (http.client keeps it only in the text of the error it raises)."""

    def __init__(
        self,
        sock: socket.socket,
        debuglevel: int = 0,
        method: str | None = None,
        url: str | None = None,
        *,
        deadline: float | None,
        on_status: Callable[[int], None],
    ) -> None:
        super().__init__(_Reader(sock, deadline), debuglevel, method, url)  # type: ignore[arg-type]
        self._on_status = on_status

    def _read_status(self) -> tuple[str, int, str]:
        version, status, reason = super()._read_status()  # type: ignore[misc]
        self._on_status(status)
        return version, status, reason


def _read_at_once(sock: socket.socket, read: Callable[[], int | bytes | None]) -> int | bytes | None:
    """What ``read`` gets from ``sock`` without waiting; None if nothing waits.

    Asked after almost every response, and almost always nothing waits: a poll says so
    cheaply, without a read (which for TLS means raising and catching SSLWantReadError). Only
    TLS housekeeping waiting (a session ticket), or a connection that is gone, is nothing too.
    """
    pending = getattr(sock, "pending", None)  # bytes TLS has decrypted but not handed out
    if not (pending and pending()) and not wait_for_read(sock, timeout=0.0):
        return None
    timeout = sock.gettimeout()
    sock.settimeout(0.0)
    try:
        return read()
    except OSError:  # BlockingIOError and SSLWantReadError among them
        return None
    finally:
        sock.settimeout(timeout)


class _Checked:
    """What both connection classes add to urllib3's: checked responses, a deadline per
    exchange (set by the pool before each request), and a look at idle bytes on reuse."""

    on_broken_framing: FramingReporter
    on_connect: Callable[[], None]
    broken_hosts: set[str]  # hosts that broke framing: their connections are never reused
    exchange_deadline: float | None = None
    forwarded_origin: str | None = None  # the origin a connection to a proxy carries requests for
    _responses = 0  # responses read since the connection was opened
    host: str
    port: int | None
    sock: socket.socket | None
    timeout: Any
    _tunnel_host: str | None
    _tunnel_port: int | None

    def connect(self) -> None:
        # Here, not where the pool makes connection objects: a pool reopens a dropped
        # connection's object in place, and that is a new connection too.
        self.on_connect()
        self._responses = 0
        super().connect()  # type: ignore[misc]

    def _tunnel(self) -> None:
        # Opening the tunnel is part of connecting: the whole answer must come within the
        # connect timeout (the socket's timeout now), not only each of its reads.
        answered: list[int] = []
        timeout = self.timeout if isinstance(self.timeout, (int, float)) else None
        self.response_class = functools.partial(  # type: ignore[attr-defined]
            _ConnectAnswer,
            deadline=None if timeout is None else time.monotonic() + timeout,
            on_status=answered.append,
        )
        try:
            super()._tunnel()  # type: ignore[misc]
        except (OSError, http.client.HTTPException) as error:
            # A 200 followed by trouble is no usable answer either.
            refusal = next((status for status in answered if status != 200), None)
            raise TunnelRefused(refusal) from error

    def getresponse(self) -> Any:
        self.response_class = functools.partial(  # type: ignore[attr-defined]
            CheckedResponse,
            deadline=self.exchange_deadline,
            reused=self._responses > 0,
            on_broken_framing=functools.partial(self._broke_framing, self._where()),
        )
        self._responses += 1
        return super().getresponse()  # type: ignore[misc]

    @property
    def is_connected(self) -> bool:
        # urllib3 asks this before reusing a pooled connection, and drops one that is readable:
        # the server closed it, which is ordinary, or sent bytes nobody asked for, which is not.
        if self.sock is None:
            return False
        host = self._where()
        if host in self.broken_hosts:
            return False
        if not wait_for_read(self.sock, timeout=0.0):
            return True
        # Readable: what it holds is read, as the connection is not reused either way.
        sock = self.sock
        if _read_at_once(sock, lambda: sock.recv(1)):
            self._broke_framing(host)
        return False

    def _broke_framing(self, host: str) -> None:
        # A server that sent bytes past one response's end may do it again at any time: from now
        # on each of its responses is the first on its connection, so none can be another's tail.
        self.broken_hosts.add(host)
        self.on_broken_framing(host)

    def _where(self) -> str:
        if self._tunnel_host:  # through a proxy's tunnel: the origin at its end
            return f"{self._tunnel_host}:{self._tunnel_port}"
        if self.forwarded_origin:
            return self.forwarded_origin
        return f"{self.host}:{self.port}" if self.port else self.host


def checked_connection_classes(
    on_broken_framing: FramingReporter, on_connect: Callable[[], None]
) -> tuple[type[HTTPConnection], type[HTTPSConnection]]:
    """urllib3 connection classes (plain, TLS) that report broken framing to
    ``on_broken_framing`` and each connection they open to ``on_connect``. Once a host broke
    framing, its connections are used for one request each."""
    broken_hosts: set[str] = set()

    class CheckedHTTPConnection(_Checked, HTTPConnection):
        pass

    class CheckedHTTPSConnection(_Checked, HTTPSConnection):
        pass

    for cls in (CheckedHTTPConnection, CheckedHTTPSConnection):
        cls.on_broken_framing = staticmethod(on_broken_framing)  # type: ignore[assignment]
        cls.on_connect = staticmethod(on_connect)  # type: ignore[assignment]
        cls.broken_hosts = broken_hosts
    return CheckedHTTPConnection, CheckedHTTPSConnection


def deadline_of(timeout: object) -> float | None:
    """The exchange deadline a pool was given with a request, if any."""
    return timeout.deadline if isinstance(timeout, ExchangeTimeout) else None
