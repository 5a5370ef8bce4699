"""A real forwarding proxy (proxy.py) that remembers what every client sent it.

Run as a script (see ``tests/serverproc.py`` for the contract)::

    python tests/servers/forward_proxy.py --host 127.0.0.1 [--basic-auth USER:PASSWORD] [--record PATH]

It binds port 0, prints ``listening on PORT`` as its first line and serves until SIGTERM: plain
HTTP requests in absolute form, forwarded, and HTTPS through ``CONNECT`` tunnels, which it
cannot look into. With ``--basic-auth`` a request without those credentials gets a 407.

``--record`` appends one JSON line per request the proxy accepted, as the client sent it:
``{"method": ..., "target": ..., "headers": {name: value}}`` (names lowercased; for a tunnel,
the ``CONNECT`` request's own headers, the only ones a proxy sees of an HTTPS exchange). The
requests proxy.py reads on a kept-alive connection after its first are recorded too.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from typing import Any

from proxy.http.parser import HttpParser
from proxy.http.proxy import HttpProxyBasePlugin

_RECORD = "FORWARD_PROXY_RECORD"  # the record's path, for the plugin in proxy.py's acceptor process
_lock = threading.Lock()


class RecordingPlugin(HttpProxyBasePlugin):
    """Appends each request, headers as received, to the record (proxy.py calls this for the
    first request of a connection after its credentials were checked, and for each later one)."""

    def handle_client_request(self, request: HttpParser) -> HttpParser | None:
        path = os.environ.get(_RECORD)
        if path:
            received = request.headers or {}
            headers = {key.decode("latin-1"): value.decode("latin-1") for key, (_, value) in received.items()}
            line: dict[str, Any] = {
                "method": (request.method or b"").decode("latin-1"),
                "target": _target(request),
                "headers": headers,
            }
            with _lock, open(path, "a", encoding="utf-8") as record:
                record.write(json.dumps(line) + "\n")
        return request


def _target(request: HttpParser) -> str:
    host, port = request.host, request.port
    where = f"{(host or b'').decode('latin-1')}:{port}"
    return where if request.is_https_tunnel else where + (request.path or b"").decode("latin-1")


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--basic-auth")
    parser.add_argument("--record")
    args = parser.parse_args(argv)
    if args.record:
        os.environ[_RECORD] = args.record

    import proxy

    options = [
        "--hostname", args.host, "--port", "0",
        # One acceptor process, serving each connection in a thread: the fewest processes to stop.
        "--num-acceptors", "1", "--threaded",
        # This script's folder is on sys.path: proxy.py imports the plugin from it by name.
        "--plugins", "forward_proxy.RecordingPlugin",
        "--log-level", "WARNING",
    ]
    if args.basic_auth:
        options += ["--basic-auth", args.basic_auth]
    # SIGTERM leaves the with-block, which stops the acceptor process too.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    with proxy.Proxy(options) as running:
        print(f"listening on {running.flags.port}", flush=True)
        threading.Event().wait()


if __name__ == "__main__":
    main(sys.argv[1:])
