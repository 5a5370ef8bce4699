"""A real PostgreSQL server for tests, in a data folder of its own, on a free loopback port, and
its pytest fixture.

Never the machine's own PostgreSQL: the test server is made by ``initdb`` in a temporary folder
(trust authentication, on 127.0.0.1 only), starts empty, and goes away with the test session.
Each test gets a database of its own (``PostgresServer.new_database``). The binaries are
Debian's (``/usr/lib/postgresql/<version>/bin``, which ``.ci/run`` installs where they are
missing); PostgreSQL refuses to run as root, so under root they run as the ``postgres`` user
that Debian's package makes. tests/conftest.py registers this module as a plugin.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

_START_TIMEOUT = 30.0
#: A role that logs in with a password over TCP (scram-sha-256), where every other is trusted.
PASSWORD_ROLE = "crawler_writer"
ROLE_PASSWORD = "s3cret-pg-password"


def _binaries() -> Path:
    if (found := shutil.which("pg_ctl")) is not None:
        return Path(found).parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda path: int(Path(path).parts[-3]))
    if not versions:
        raise RuntimeError("no PostgreSQL server binaries (initdb): apt-get install postgresql, or run .ci/run")
    return Path(versions[-1]).parent


def _as_server_user() -> list[str]:
    """The prefix that runs a command as a user PostgreSQL accepts (not root)."""
    if os.geteuid() != 0:
        return []
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        raise RuntimeError("running as root, and there is no postgres user to run the server as") from None
    return ["runuser", "-u", "postgres", "--"]


class PostgresServer:
    """A ``postgres`` process on 127.0.0.1, over a data folder made by ``initdb``."""

    def __init__(self) -> None:
        self.port = 0
        self._folder = Path(tempfile.mkdtemp(prefix="crawler-pg-"))
        self._log = tempfile.TemporaryFile()
        self._process: subprocess.Popen[bytes] | None = None

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        """A database no other test uses; its URL."""
        name = f"test_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url(), autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def start(self) -> PostgresServer:
        binaries, prefix = _binaries(), _as_server_user()
        data = self._folder / "data"
        if prefix:
            shutil.chown(self._folder, "postgres")
        subprocess.run(
            [*prefix, str(binaries / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8"],
            stdout=self._log, stderr=subprocess.STDOUT, check=True,
        )
        # One role that must give its password (to test password_env); everyone else is trusted.
        hba = data / "pg_hba.conf"
        hba.write_text(
            f"local all all trust\nhost all {PASSWORD_ROLE} 127.0.0.1/32 scram-sha-256\nhost all all 127.0.0.1/32 trust\n"
        )
        for _ in range(3):  # a free port may be taken between finding it and binding it
            self.port = _free_port()
            self._process = subprocess.Popen(
                [*prefix, str(binaries / "postgres"), "-D", str(data), "-p", str(self.port), "-k", str(self._folder),
                 "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "full_page_writes=off"],
                stdout=self._log, stderr=subprocess.STDOUT,
            )
            if self._answers():
                with psycopg.connect(self.url(), autocommit=True) as admin:
                    admin.execute(f"CREATE ROLE {PASSWORD_ROLE} LOGIN SUPERUSER PASSWORD '{ROLE_PASSWORD}'")
                return self
            self._end_process()
        self._log.seek(0)
        raise RuntimeError(f"postgres did not start: {self._log.read()[-2000:].decode(errors='replace')}")

    def _answers(self) -> bool:
        assert self._process is not None
        deadline = time.monotonic() + _START_TIMEOUT
        while time.monotonic() < deadline and self._process.poll() is None:
            try:
                with psycopg.connect(self.url(), connect_timeout=2):
                    return True
            except psycopg.OperationalError:
                time.sleep(0.05)
        return False

    def stop(self) -> None:
        self._end_process()
        self._log.close()
        shutil.rmtree(self._folder, ignore_errors=True)

    def _end_process(self) -> None:
        if self._process is None:
            return
        self._process.terminate()  # under runuser, passed on to postgres: a fast shutdown
        try:
            self._process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._process = None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """The server the session's tests share (each test takes a database of its own)."""
    server = PostgresServer()
    try:
        server.start()
    except (RuntimeError, subprocess.CalledProcessError) as error:
        server.stop()
        problem = str(error)
    else:
        problem = ""
    if problem:
        pytest.fail(problem, pytrace=False)
    try:
        yield server
    finally:
        server.stop()
