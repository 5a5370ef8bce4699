"""Third-party servers (Django, httpbin) run as subprocesses, each on a free port of its own.

A server script under ``tests/servers/`` binds port 0 on the address it is given, prints
``listening on PORT`` as its first line of standard output, and serves until it is terminated.
Running it as a real process keeps its global state (Django's settings, Flask's app) out of the
test process, and makes it a server our client reaches only over a socket.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

SERVERS = Path(__file__).resolve().parent / "servers"
_START_TIMEOUT = 60.0  # a cold Django import on a busy 2-core machine takes a few seconds


@contextmanager
def serve(script: str, *args: str, host: str = "127.0.0.1") -> Iterator[str]:
    """Run ``tests/servers/<script>`` on ``host``; yields its base URL (``http://host:port``)."""
    command = [sys.executable, "-u", str(SERVERS / script), "--host", host, *args]
    # Its log goes to a file, not a pipe: a pipe nobody reads fills up and blocks the server.
    log = tempfile.TemporaryFile(mode="w+")
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=log, text=True, env={**os.environ, "PYTHONWARNINGS": ""}
    )
    try:
        line = _first_line(process)
        if not line.startswith("listening on "):
            process.wait(timeout=5)
            log.seek(0)
            raise RuntimeError(f"{script} did not start: {line!r}\n{log.read()[-4000:]}")
        yield f"http://{host}:{int(line.split()[-1])}"
    finally:
        log.close()
        process.terminate()
        try:
            process.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()


def _first_line(process: subprocess.Popen[str]) -> str:
    import selectors

    assert process.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        if not selector.select(_START_TIMEOUT):
            process.kill()
            raise RuntimeError(f"{process.args[2]} printed nothing in {_START_TIMEOUT:g}s")
    return process.stdout.readline().strip()
