"""The practice site's sitemaps (sitemaps.org) of its catalogue, served the ways real sites serve
them: an index, urlsets per listing page, gzip as a file and gzip as a Content-Encoding.

``/sitemap.xml``
    A ``<sitemapindex>``: ``/sitemaps/listings.xml.gz``, then ``/sitemaps/products-<n>.xml`` for
    each listing page ``n``, each with the lastmod of the newest product in it (none for the
    listings).
``/sitemaps/listings.xml``
    A ``<urlset>`` of the home page and every listing page, without lastmod.
``/sitemaps/products-<n>.xml``
    A ``<urlset>`` of the products listing page ``n`` shows, each with its
    :func:`product_lastmod`; an ``n`` out of range is a 404.
``/sitemaps/products.xml``
    Every product in one ``<urlset>`` (not in the index): what a small shop serves, and a big
    document for a big catalogue.
``/sitemap.txt``
    Every product URL, one a line: a text sitemap.

Each ``.xml`` is ``application/xml``, sent with ``Content-Encoding: gzip`` to a client whose
``Accept-Encoding`` takes gzip. The same path with ``.gz`` added is the document as a gzip file,
``Content-Type: application/gzip``, for every client. URLs are absolute, on the site's own
address. ``/robots.txt`` names ``/sitemap.xml`` when ``site.robots.sitemaps`` says so
(:mod:`crawler.practice.robots`).
"""

from __future__ import annotations

import functools
import gzip
from collections.abc import Iterable
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING

from crawler.practice.catalogue import Catalogue

if TYPE_CHECKING:
    from crawler.practice.endpoints import Handler

_NAMESPACE = "http://www.sitemaps.org/schemas/sitemap/0.9"
_XML = "application/xml"
_FIRST_LASTMOD = datetime(2024, 1, 1, tzinfo=timezone.utc)


def product_lastmod(product_id: int) -> str:
    """When ``/product/<product_id>`` last changed, as its sitemap says: 12 hours after the
    product before it, from 2024-01-01 on (product 62 is 2024-02-01). Even ids give the day
    (``2024-02-01``), odd ones the time too (``2024-01-31T12:00:00+00:00``): both W3C forms."""
    moment = _changed(product_id)
    return moment.date().isoformat() if product_id % 2 == 0 else moment.isoformat()


def _changed(product_id: int) -> datetime:
    return _FIRST_LASTMOD + timedelta(hours=12 * product_id)


def route(handler: Handler, path: str) -> bool:
    """Answer a sitemap ``path``; False when it is not one."""
    gzipped_file = path.endswith(".gz")
    document = _document(handler.server.catalogue, site_url(handler), path.removesuffix(".gz"))
    if document is None:
        return False
    if gzipped_file:
        handler._send(200, _gzipped(document), "application/gzip")
    elif path.endswith(".xml") and _takes_gzip(handler.headers.get("Accept-Encoding", "")):
        handler._send(200, _gzipped(document), _XML, headers=(("Content-Encoding", "gzip"), ("Vary", "Accept-Encoding")))
    else:
        content_type = "text/plain; charset=utf-8" if path.endswith(".txt") else _XML
        handler._send(200, document, content_type, headers=(("Vary", "Accept-Encoding"),))
    return True


def site_url(handler: Handler) -> str:
    """The site's URL (``http://127.0.0.1:43121``), as the sitemaps write it."""
    host, port = handler.server.server_address[:2]
    return f"http://{'127.0.0.1' if host in ('', '0.0.0.0') else host}:{port}"


def _takes_gzip(accept_encoding: str) -> bool:
    for coding in accept_encoding.lower().split(","):
        name, _, parameters = coding.partition(";")
        if name.strip() in ("gzip", "x-gzip", "*"):
            return parameters.replace(" ", "") not in ("q=0", "q=0.0", "q=0.00", "q=0.000")
    return False


# Pure functions of the catalogue and the address: each document is made once.
@functools.lru_cache(maxsize=64)
def _document(catalogue: Catalogue, base: str, path: str) -> bytes | None:
    match path.split("/")[1:]:
        case ["sitemap.xml"]:
            return _index(catalogue, base)
        case ["sitemap.txt"]:
            return "".join(f"{base}/product/{number}\n" for number in range(1, catalogue.products + 1)).encode()
        case ["sitemaps", "listings.xml"]:
            pages = [f"{base}/"] + [f"{base}/catalogue/page/{page}" for page in range(1, catalogue.pages + 1)]
            return _urlset((url, None) for url in pages)
        case ["sitemaps", "products.xml"]:
            return _urlset(_products(base, range(1, catalogue.products + 1)))
        case ["sitemaps", name] if name.startswith("products-") and name.endswith(".xml"):
            page = _page_number(name.removeprefix("products-").removesuffix(".xml"))
            if page is None or not 1 <= page <= catalogue.pages:
                return None
            return _urlset(_products(base, _products_on(catalogue, page)))
    return None


@functools.lru_cache(maxsize=64)
def _gzipped(document: bytes) -> bytes:
    return gzip.compress(document, mtime=0)  # the same bytes every time: a cache may keep them


def _page_number(text: str) -> int | None:
    # One spelling per page, as for the catalogue's own URLs: "3", never "03".
    return int(text) if text.isascii() and text.isdigit() and text[0] != "0" and len(text) <= 9 else None


def _products_on(catalogue: Catalogue, page: int) -> range:
    return range((page - 1) * catalogue.per_page + 1, min(page * catalogue.per_page, catalogue.products) + 1)


def _products(base: str, numbers: range) -> list[tuple[str, str | None]]:
    return [(f"{base}/product/{number}", product_lastmod(number)) for number in numbers]


def _urlset(entries: Iterable[tuple[str, str | None]]) -> bytes:
    lines = [f'<?xml version="1.0" encoding="UTF-8"?>\n<urlset xmlns="{_NAMESPACE}">']
    for url, lastmod in entries:
        modified = f"<lastmod>{lastmod}</lastmod>" if lastmod else ""
        lines.append(f"  <url><loc>{url}</loc>{modified}</url>")
    lines.append("</urlset>\n")
    return "\n".join(lines).encode()


def _index(catalogue: Catalogue, base: str) -> bytes:
    lines = [f'<?xml version="1.0" encoding="UTF-8"?>\n<sitemapindex xmlns="{_NAMESPACE}">']
    lines.append(f"  <sitemap><loc>{base}/sitemaps/listings.xml.gz</loc></sitemap>")
    for page in range(1, catalogue.pages + 1):
        products = _products_on(catalogue, page)
        newest = f"<lastmod>{_changed(products[-1]).isoformat()}</lastmod>" if products else ""
        lines.append(f"  <sitemap><loc>{base}/sitemaps/products-{page}.xml</loc>{newest}</sitemap>")
    lines.append("</sitemapindex>\n")
    return "\n".join(lines).encode()
