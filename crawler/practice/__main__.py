"""Serve the practice site until Ctrl-C (or SIGTERM).

    python -m crawler.practice --port 8650 [--products N] [--latency S]
        [--members N] [--api-items N] [--revoke-after N] [--token-ttl S]

The first line on stdout is the site's URL (with the real port when
``--port 0`` asks for a free one), flushed at once so scripts can read it;
the demo credentials for ``/login`` and ``/api/token`` go to stderr. Its ``/robots.txt`` is
one line, ``Sitemap: <site>/sitemap.xml``.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time

from crawler.practice.site import PracticeSite


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m crawler.practice",
                                     description="Serve the practice site until Ctrl-C.")
    add = parser.add_argument
    add("--host", default="127.0.0.1", help="interface to bind (default: %(default)s)")
    add("--port", type=int, default=8650, help="0 picks a free port (default: %(default)s)")
    add("--products", type=int, default=1000, help="catalogue size (default: %(default)s)")
    add("--per-page", type=int, default=20, help="products per listing page (default: %(default)s)")
    add("--latency", type=float, default=0.0,
        help="seconds added to every catalogue and member page (default: %(default)s)")
    add("--members", type=int, default=200, help="members-area pages (default: %(default)s)")
    add("--api-items", type=int, default=200, help="token API items (default: %(default)s)")
    add("--revoke-after", type=int, default=None, metavar="N",
        help="log every session out after each N-th member page (default: never)")
    add("--token-ttl", type=float, default=60.0, metavar="S",
        help="bearer token lifetime in seconds (default: %(default)s)")
    args = parser.parse_args(argv)

    # Treat SIGTERM like Ctrl-C so `kill`/Popen.terminate() still shut down cleanly.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        site = PracticeSite(args.host, args.port, products=args.products,
                            per_page=args.per_page, latency=args.latency, members=args.members,
                            api_items=args.api_items, revoke_after=args.revoke_after,
                            token_ttl=args.token_ttl)
    except ValueError as error:
        parser.error(str(error))
    site.robots.sitemaps = ("/sitemap.xml",)  # a robots.txt that names the catalogue's sitemaps
    try:
        site.start()
    except OSError as error:  # typically: port already in use
        hint = " (--port 0 picks a free one)" if args.port else ""
        parser.exit(1, f"cannot serve on {args.host}:{args.port}: {error}{hint}\n")
    try:
        print(site.url, flush=True)
        print(f"{args.products} products, {args.per_page} per page; Ctrl-C to stop",
              file=sys.stderr, flush=True)
        demo = site.demo_credentials
        print(f"login at {site.url}/login as {demo['username']} / {demo['password']}; "
              f"POST /api/token with client_id={demo['client_id']} "
              f"client_secret={demo['client_secret']}", file=sys.stderr, flush=True)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        site.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
