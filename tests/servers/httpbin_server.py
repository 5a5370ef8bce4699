"""The real httpbin app (``/headers``, ``/redirect-to``, ``/cookies/set``...) on werkzeug's
threaded server, for tests that need a third-party server's own redirects and echoes.

Run as a script (see ``tests/serverproc.py`` for the contract)::

    python tests/servers/httpbin_server.py --host 127.0.0.2 [--keep-alive --log PATH]

It binds port 0, prints ``listening on PORT`` as its first line and serves until SIGTERM.

werkzeug's server closes every connection after one response. ``--keep-alive`` serves the same
app on Django's development server instead, which keeps HTTP/1.1 connections open (and closes
one after a response without a Content-Length); ``--log`` then appends ``connection N`` as each
connection opens and ``N STATUS REQUEST-LINE`` for each request on it, as Django saw them.
"""

from __future__ import annotations

import argparse
import signal
import sys


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--keep-alive", action="store_true")
    parser.add_argument("--log")
    args = parser.parse_args(argv)

    from httpbin import app

    if args.keep_alive:
        server = _django_server(args.host, app, args.log)
    else:
        from werkzeug.serving import make_server

        server = make_server(args.host, 0, app, threaded=True)
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    print(f"listening on {server.server_port}", flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()


def _django_server(host: str, app, log_path: str | None):
    import itertools
    import threading

    from django.conf import settings
    from django.core.servers.basehttp import ThreadedWSGIServer, WSGIRequestHandler

    settings.configure()  # the server needs settings; httpbin needs none of them
    numbers, lock = itertools.count(1), threading.Lock()

    def record(line: str) -> None:
        if log_path:
            with lock, open(log_path, "a", encoding="utf-8") as log:
                log.write(line + "\n")

    class Handler(WSGIRequestHandler):
        def setup(self) -> None:
            super().setup()
            self.number = next(numbers)
            record(f"connection {self.number}")

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the stdlib's name
            record(f"{self.number} {args[1]} {args[0]}")

    server = ThreadedWSGIServer((host, 0), Handler)
    server.daemon_threads = True
    server.set_app(app)
    server.server_port = server.server_address[1]
    return server


if __name__ == "__main__":
    main(sys.argv[1:])
