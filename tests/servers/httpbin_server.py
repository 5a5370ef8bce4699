"""The real httpbin app (``/headers``, ``/redirect-to``, ``/cookies/set``...) on werkzeug's
threaded server, for tests that need a third-party server's own redirects and echoes.

Run as a script (see ``tests/serverproc.py`` for the contract)::

    python tests/servers/httpbin_server.py --host 127.0.0.2

It binds port 0, prints ``listening on PORT`` as its first line and serves until SIGTERM.
"""

from __future__ import annotations

import argparse
import signal
import sys


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args(argv)

    from httpbin import app
    from werkzeug.serving import make_server

    server = make_server(args.host, 0, app, threaded=True)
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    print(f"listening on {server.server_port}", flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()


if __name__ == "__main__":
    main(sys.argv[1:])
