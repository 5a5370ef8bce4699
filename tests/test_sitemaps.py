"""Starting crawls from sitemaps: whole crawls of the practice site's sitemaps (an index, urlsets
gzipped as files and as a Content-Encoding, a text sitemap, robots.txt Sitemap lines), the rules,
follow patterns and lastmod cut-off, the streaming reader on big documents, and hostile input
served by a real server (Python's http.server over a folder): XXE, billion laughs, a gzip bomb,
XML broken mid-stream and gzip cut short."""

from __future__ import annotations

import functools
import gzip
import json
import struct
import subprocess
import sys
import threading
import time
import tracemalloc
import zlib
from collections.abc import Callable, Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from crawler.config import Config
from crawler.content import accepted_by
from crawler.exceptions import SpiderError
from crawler.practice import PracticeSite
from crawler.practice.catalogue import product
from crawler.practice.sitemaps import product_lastmod
from crawler.runner import run_crawl
from crawler.sitemaps import SitemapEntry, SitemapError, chunks_of, parse_lastmod, read_sitemap
from crawler.spider import Spider
from crawler.stats import Stats
from crawler.testing import fake_response, run_callback

from helpers import TIMEOUT

NAMESPACE = "http://www.sitemaps.org/schemas/sitemap/0.9"

SHOP_SPIDER = """
from crawler import Spider


class Shop(Spider):
    '''Products and listing pages from sitemaps; the home page matches no rule.'''

    name = "shop"
    sitemap_rules = [("/product/", "parse_product"), ("/catalogue/", "parse_listing")]

    def parse_product(self, response):
        yield {"kind": "product", "url": response.url, "name": response.css("h1.name::text").get()}

    def parse_listing(self, response):
        yield {"kind": "listing", "url": response.url}
"""


@pytest.fixture
def shop_config(spider_config):
    def make(*sitemap_urls: str, entry: str = "", **args: object) -> Config:
        return spider_config("shop", SHOP_SPIDER, entry=entry, sitemap_urls=list(sitemap_urls), **args)

    return make


def items(config: Config) -> list[dict[str, object]]:
    path = config.output_path("shop")
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def products_fetched(site: PracticeSite) -> list[int]:
    return [number for number in range(1, site.catalogue.products + 1) if site.counters.hits(f"/product/{number}")]


def product_sitemaps_read(site: PracticeSite) -> list[int]:
    return [page for page in range(1, site.catalogue.pages + 1) if site.counters.hits(f"/sitemaps/products-{page}.xml")]


def urlset(urls: list[str], lastmods: list[str | None] | None = None) -> bytes:
    entries = "".join(
        f"<url><loc>{url}</loc>{f'<lastmod>{lastmod}</lastmod>' if lastmod else ''}</url>\n"
        for url, lastmod in zip(urls, lastmods or [None] * len(urls))
    )
    return f'<?xml version="1.0" encoding="UTF-8"?>\n<urlset xmlns="{NAMESPACE}">\n{entries}</urlset>\n'.encode()


def read_all(body: bytes) -> list[SitemapEntry]:
    return list(read_sitemap(chunks_of(body)))


def read_until_error(body: bytes, **limits: int) -> tuple[list[SitemapEntry], SitemapError]:
    entries: list[SitemapEntry] = []
    with pytest.raises(SitemapError) as raised:
        for entry in read_sitemap(chunks_of(body), **limits):
            entries.append(entry)
    return entries, raised.value


# -- whole crawls of the practice site ---------------------------------------------------------


def test_a_crawl_from_the_index_fetches_every_page_once_with_the_rules_callbacks(site, shop_config, session) -> None:
    # The urlsets come gzipped as a Content-Encoding to a client that takes it (as the crawl's
    # sessions do), the listings as a gzip file.
    for path, encoding, content_type in [
        ("/sitemaps/products-1.xml", "gzip", "application/xml"),
        ("/sitemaps/listings.xml.gz", None, "application/gzip"),
    ]:
        answer = session.get(site.url + path, timeout=TIMEOUT, stream=True)
        assert (answer.headers.get("Content-Encoding"), answer.headers["Content-Type"]) == (encoding, content_type)
        answer.close()
    site.reset_counters()
    config = shop_config(f"{site.url}/sitemap.xml")

    report = run_crawl(config)

    got = items(config)
    products = [item for item in got if item["kind"] == "product"]
    assert sorted(item["url"] for item in products) == sorted(f"{site.url}/product/{number}" for number in range(1, 121))
    assert {item["name"] for item in products} == {product(number)["name"] for number in range(1, 121)}
    assert sorted(item["url"] for item in got if item["kind"] == "listing") == sorted(
        f"{site.url}/catalogue/page/{page}" for page in range(1, 7)
    )
    # The index, the listings, six urlsets and every page, each once; the home page is in a
    # sitemap, but no rule picks it.
    assert site.counters.hits("/sitemap.xml") == 1
    assert site.counters.hits("/sitemaps/listings.xml.gz") == 1
    assert product_sitemaps_read(site) == list(range(1, 7))
    assert all(site.counters.hits(f"/product/{number}") == 1 for number in range(1, 121))
    assert all(site.counters.hits(f"/catalogue/page/{page}") == 1 for page in range(1, 7))
    assert site.counters.hits("/") == 0
    assert site.counters.requests == 1 + 1 + 1 + 6 + 120 + 6  # robots.txt, the sitemaps, the pages
    assert report.stats["filtered:sitemap_rule"] == 1
    assert not [name for name in report.stats if name.startswith(("malformed:", "failed"))]
    assert report.results[0].finished


def test_the_lastmod_cut_off_leaves_out_older_pages_and_sitemaps(site, shop_config) -> None:
    # Product 62 changed on 2024-02-01, each one before it 12 hours earlier: the first three
    # product sitemaps (newest: product 60) are not read, and of the fourth, product 61 is left out.
    assert (product_lastmod(61), product_lastmod(62)) == ("2024-01-31T12:00:00+00:00", "2024-02-01")
    config = shop_config(f"{site.url}/sitemap.xml", sitemap_after="2024-02-01")

    report = run_crawl(config)

    assert product_sitemaps_read(site) == [4, 5, 6]
    assert products_fetched(site) == list(range(62, 121))
    assert site.counters.hits("/sitemaps/listings.xml.gz") == 1  # no lastmod: kept
    assert all(site.counters.hits(f"/catalogue/page/{page}") == 1 for page in range(1, 7))
    assert report.stats["filtered:lastmod"] == 3 + 1
    assert len(items(config)) == 59 + 6


def test_sitemap_follow_picks_the_sitemaps_of_an_index_and_robots_txt_is_obeyed(site, shop_config) -> None:
    site.robots.body = "User-agent: *\nDisallow: /product/7\n"  # /product/7 and /product/70..79
    config = shop_config(f"{site.url}/sitemap.xml", sitemap_follow=[r"/products-[12]\.xml$"])

    report = run_crawl(config)

    assert product_sitemaps_read(site) == [1, 2]
    assert site.counters.hits("/sitemaps/listings.xml.gz") == 0
    assert products_fetched(site) == [number for number in range(1, 41) if number != 7]
    assert report.stats["filtered:sitemap_follow"] == 1 + 4
    assert report.stats["refused:robots"] == 1


def test_a_robots_txt_url_starts_from_its_sitemap_lines(site, shop_config) -> None:
    site.robots.body = "User-agent: *\nDisallow: /catalogue/\n"
    site.robots.sitemaps = ("/sitemap.txt", "/sitemaps/listings.xml.gz")
    config = shop_config(f"{site.url}/robots.txt")

    report = run_crawl(config)

    assert site.counters.hits("/sitemap.txt") == 1 and site.counters.hits("/sitemaps/listings.xml.gz") == 1
    assert products_fetched(site) == list(range(1, 121))  # from the text sitemap
    assert all(site.counters.hits(f"/catalogue/page/{page}") == 0 for page in range(1, 7))
    assert report.stats["refused:robots"] == 6
    # Once by the crawl's robots.txt cache, once as the spider's start.
    assert site.counters.hits("/robots.txt") == 2
    assert sorted(item["url"] for item in items(config)) == sorted(f"{site.url}/product/{n}" for n in range(1, 121))


def test_a_bad_rule_stops_the_crawl_before_any_request(site, shop_config) -> None:
    config = shop_config(f"{site.url}/sitemap.xml", sitemap_rules=[["/product/", "parse_item"]])

    with pytest.raises(SpiderError, match="sitemap_rules names the callback 'parse_item'"):
        run_crawl(config)

    assert site.counters.requests == 0


def test_a_50000_url_sitemap_goes_through_the_commit_path(shop_config) -> None:
    with PracticeSite(products=50_000) as big:
        config = shop_config(f"{big.url}/sitemaps/products.xml", entry="max_pages = 1")
        started = time.monotonic()
        report = run_crawl(config)
        elapsed = time.monotonic() - started
    # Fetched, read, each URL checked, deduped and stored, committed in one transaction: 4 to 5
    # seconds on a busy 2-core machine, most of it canonicalising the URLs for dedupe.
    print(f"50,000 URLs from one sitemap through the crawl in {elapsed:.1f}s")
    assert report.whole_crawl.queued == 50_000 and report.whole_crawl.done == 1
    assert elapsed < 30


# -- hostile sitemaps, from a server we did not write ---------------------------------------------


class QuietFiles(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


@pytest.fixture
def files(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A folder served by Python's http.server: (the folder, its URL)."""
    folder = tmp_path / "served"
    folder.mkdir()
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietFiles, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield folder, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def gzip_bomb(head: bytes, filler: bytes, size: int) -> bytes:
    """A gzip file of ``head`` then ``filler`` over and over up to ``size`` bytes, built from one
    compressed megabyte repeated (a full flush makes each copy stand alone), so a test can make
    one of gigabytes in milliseconds."""
    deflate = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    megabyte = filler * (2**20 // len(filler))
    start = deflate.compress(head) + deflate.flush(zlib.Z_FULL_FLUSH)
    block = deflate.compress(megabyte) + deflate.flush(zlib.Z_FULL_FLUSH)
    copies = (size - len(head)) // len(megabyte)
    crc = zlib.crc32(head)
    for _ in range(copies):
        crc = zlib.crc32(megabyte, crc)
    trailer = struct.pack("<II", crc, (len(head) + copies * len(megabyte)) & 0xFFFFFFFF)
    return b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff" + start + block * copies + deflate.flush() + trailer


URLSET_START = f'<?xml version="1.0"?>\n<urlset xmlns="{NAMESPACE}">\n'.encode()


def billion_laughs() -> bytes:
    entities = "".join(f'<!ENTITY lol{n} "{f"&lol{n - 1};" * 10}">' for n in range(1, 10))
    return (
        f'<?xml version="1.0"?>\n<!DOCTYPE urlset [<!ENTITY lol0 "lol">{entities}]>\n'
        f'<urlset xmlns="{NAMESPACE}"><url><loc>&lol9;</loc></url></urlset>\n'
    ).encode()


def test_hostile_sitemaps_are_refused_counted_and_the_crawl_goes_on(site, files, shop_config, tmp_path, caplog) -> None:
    folder, served = files
    page = f"{site.url}/product"
    # What an external entity would read, were it read: a page the crawl must never ask for.
    secret = tmp_path / "secret.txt"
    secret.write_text(f"{page}/99")
    (folder / "xxe.xml").write_text(
        f'<?xml version="1.0"?>\n<!DOCTYPE urlset [<!ENTITY file SYSTEM "file://{secret}">'
        f'<!ENTITY net SYSTEM "{page}/98">]>\n'
        f'<urlset xmlns="{NAMESPACE}"><url><loc>&file;</loc></url><url><loc>&net;</loc></url>'
        f"<url><loc>{page}/8</loc></url></urlset>\n"
    )
    (folder / "laughs.xml").write_bytes(billion_laughs())
    # Broken mid-stream, after three good entries: the fourth's end tag never closes.
    good = urlset([f"{page}/{number}" for number in (1, 2, 3)]).removesuffix(b"</urlset>\n")
    (folder / "broken.xml").write_bytes(good + f"<url><loc>{page}/4</loc></url <url><loc>{page}/5</loc></url></urlset>".encode())
    # Gzip cut short, served as XML (gzip is told by its bytes): the entries before the cut count.
    whole = gzip.compress(urlset([f"{page}/{number}" for number in range(21, 121)]))
    cut = whole[: len(whole) // 2]
    (folder / "cut.xml").write_bytes(cut)
    expected_from_cut, _ = read_until_error(cut)
    # 64 MiB of valid XML in 70 KB: refused at the 50 MB the protocol allows.
    bomb = gzip_bomb(URLSET_START + f"<url><loc>{page}/7</loc></url>\n".encode(), b"<x/>" + b" " * 4092, 64 * 2**20)
    (folder / "bomb.xml.gz").write_bytes(bomb)
    assert len(bomb) < 100_000
    names = ["xxe.xml", "laughs.xml", "broken.xml", "cut.xml", "bomb.xml.gz"]
    config = shop_config(*[f"{served}/{name}" for name in names])

    report = run_crawl(config)

    assert 0 < len(expected_from_cut) < 100
    fetched = [1, 2, 3, 7, 8] + [int(entry.url.rsplit("/", 1)[1]) for entry in expected_from_cut]
    assert products_fetched(site) == sorted(fetched)
    assert site.counters.hits("/product/99") == site.counters.hits("/product/98") == 0
    stats = report.stats
    assert (stats["malformed:sitemap:xml"], stats["malformed:sitemap:gzip"], stats["malformed:sitemap:too_large"]) == (2, 1, 1)
    assert stats["malformed:sitemap:no_loc"] == 2
    assert report.whole_crawl.done == len(names) + len(fetched) and report.whole_crawl.failed == 0
    assert report.results[0].finished
    broke_off = [record.getMessage() for record in caplog.records if "broke off" in record.getMessage()]
    assert len(broke_off) == 4 and any("bomb.xml.gz broke off after 1 entries" in line for line in broke_off)


# -- the streaming reader ------------------------------------------------------------------------


def product_urls(count: int) -> list[str]:
    return [f"https://shop.example/product/{number}" for number in range(count)]


def peak_memory_of_reading(body: bytes, check: Callable[[int, SitemapEntry], None]) -> tuple[int, int]:
    """(entries read, tracemalloc's peak while reading them): each entry goes to ``check`` and is
    not kept, so what the peak counts is the reader's own."""
    count = 0
    tracemalloc.start()
    try:
        for entry in read_sitemap(chunks_of(body)):
            check(count, entry)
            count += 1
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return count, peak


def test_a_gzipped_50000_url_sitemap_is_read_whole_in_bounded_memory() -> None:
    urls = product_urls(50_000)
    document = urlset(urls, [f"2024-03-{number % 28 + 1:02d}" for number in range(50_000)])

    def check(index: int, entry: SitemapEntry) -> None:
        assert entry.url == urls[index] and entry.lastmod == f"2024-03-{index % 28 + 1:02d}" and not entry.is_sitemap

    count, peak = peak_memory_of_reading(gzip.compress(document), check)

    assert count == 50_000
    # A 4 MB document, of which reading holds a few blocks (about 200 KB), never the whole.
    assert len(document) > 4_000_000
    assert peak < len(document) // 8, f"peak {peak:,} bytes for a document of {len(document):,}"


def test_an_index_of_50000_sitemaps_is_read_whole_in_bounded_memory() -> None:
    sitemaps = [f"https://shop.example/sitemaps/{number}.xml.gz" for number in range(50_000)]
    entries = "".join(f"<sitemap><loc>{url}</loc><lastmod>2024-05-01T10:00:00Z</lastmod></sitemap>\n" for url in sitemaps)
    document = f'<sitemapindex xmlns="{NAMESPACE}">\n{entries}</sitemapindex>'.encode()

    def check(index: int, entry: SitemapEntry) -> None:
        assert entry.is_sitemap and entry.url == sitemaps[index]

    count, peak = peak_memory_of_reading(document, check)

    assert count == 50_000
    assert peak < len(document) // 8, f"peak {peak:,} bytes for a document of {len(document):,}"


STREAMED_READ = """
import resource, sys
from crawler.sitemaps import read_sitemap

def streamed():
    yield b'<?xml version="1.0"?><urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">'
    for block in range(100):
        yield b"".join(b"<url><loc> https://shop.example/product/%d </loc><lastmod>2024-01-01</lastmod>"
                       b"<changefreq>daily</changefreq></url>\\n" % (block * 1000 + n) for n in range(1000))
    yield b"<url><loc>https://shop.example/one-entry-of-a-million-elements</loc>"
    for block in range(50):
        yield b"<x/>" * 10_000
    yield b"</url></urlset>"

before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
count = sum(1 for _ in read_sitemap(streamed(), max_entries=10**6))
print(count, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)
"""


def test_the_parsers_tree_is_dropped_as_it_is_read() -> None:
    # tracemalloc sees Python's memory only; libxml2's tree is measured in a process of its own.
    # 100,000 entries in 12 MB given in big chunks, then one entry of 500,000 elements: as one
    # tree, about 180 MB.
    done = subprocess.run([sys.executable, "-c", STREAMED_READ], capture_output=True, text=True, timeout=60, check=True)
    count, grown_kib = map(int, done.stdout.split())
    assert count == 100_001
    assert grown_kib < 32 * 1024, f"the reader's process grew by {grown_kib:,} KiB"


def test_sitemaps_with_namespaces_or_none_bom_whitespace_alternates_and_extensions() -> None:
    with_everything = (
        '\ufeff\n  <?xml version="1.0" encoding="UTF-8"?>\n'
        f'<urlset xmlns="{NAMESPACE}" xmlns:xhtml="http://www.w3.org/1999/xhtml"'
        ' xmlns:image="http://www.google.com/schemas/sitemap-image/1.1">'
        "<url>\n  <loc>\n   https://shop.example/a?x=1&amp;y=2  \n</loc>\n  <lastmod> 2024-05-01 </lastmod>"
        '<xhtml:link rel="alternate" hreflang="de" href=" https://shop.example/de/a "/>'
        '<xhtml:link rel="stylesheet" href="https://shop.example/style.css"/>'
        "<image:image><image:loc>https://shop.example/a.png</image:loc></image:image></url>"
        "<!-- a comment --><url><loc>https://shop.example/b</loc><priority>0.5</priority></url>"
        "</urlset>"
    ).encode()
    assert read_all(with_everything) == [
        SitemapEntry("https://shop.example/a?x=1&y=2", "2024-05-01", ("https://shop.example/de/a",)),
        SitemapEntry("https://shop.example/b"),
    ]
    without_namespace = b"<sitemapindex><sitemap><loc>https://shop.example/s.xml</loc></sitemap></sitemapindex>"
    assert read_all(without_namespace) == [SitemapEntry("https://shop.example/s.xml", is_sitemap=True)]
    in_utf16 = '<?xml version="1.0" encoding="UTF-16"?><urlset><url><loc>https://shop.example/café</loc></url></urlset>'
    assert read_all(in_utf16.encode("utf-16")) == [SitemapEntry("https://shop.example/café")]
    as_text = b"\xef\xbb\xbfhttps://shop.example/1\r\n\n  HTTPS://shop.example/2  \nhttp://shop.example/3"
    assert [entry.url for entry in read_all(as_text)] == ["https://shop.example/1", "HTTPS://shop.example/2", "http://shop.example/3"]
    # Gzip by its bytes, a byte at a time, and in members one after another, as gzip reads them.
    two_members = gzip.compress(b"<urlset><url><loc>https://shop.example/1</loc></url>") + gzip.compress(
        b"<url><loc>https://shop.example/2</loc></url></urlset>"
    )
    one_byte_chunks = (two_members[index : index + 1] for index in range(len(two_members)))
    assert [entry.url for entry in read_sitemap(one_byte_chunks)] == ["https://shop.example/1", "https://shop.example/2"]
    assert read_all(b"<urlset/>") == []


def test_lastmod_is_read_in_every_w3c_form() -> None:
    utc = parse_lastmod("2024-05-17T10:30:00Z")
    assert utc is not None and utc.isoformat() == "2024-05-17T10:30:00+00:00"
    assert parse_lastmod("2024-05-17T12:30:00.5+02:00") == parse_lastmod("2024-05-17T10:30:00.5Z")
    assert parse_lastmod("2024-05-17") == parse_lastmod("2024-05-17T00:00:00+00:00")
    assert parse_lastmod("2024-05") == parse_lastmod("2024-05-01") and parse_lastmod("2024") == parse_lastmod("2024-01-01")
    assert parse_lastmod("last tuesday") is None and parse_lastmod("") is None


@pytest.mark.parametrize(
    ("body", "reason", "kept"),
    [
        (b"", "not_sitemap", []),
        (b"<!DOCTYPE html><html><head><title>Not found</title></head><body><p>no</p></body></html>", "not_sitemap", []),
        (b"\x00" * 100_000, "not_sitemap", []),
        (gzip.compress(b"\x00" * 10_000_000), "not_sitemap", []),  # a bomb of zeros: refused at its first block
        (urlset(product_urls(5_000)).removesuffix(b"</urlset>\n") + b"<url><loc>https://x/</loc></u", "xml", product_urls(5_000)),
        (gzip.compress(urlset(product_urls(5_000)))[:-9], "gzip", product_urls(5_000)),  # all but gzip's own end
        (gzip.compress(urlset(product_urls(3))) + b"trailing junk", "gzip", product_urls(3)),
        (b"https://shop.example/1\nthis is no URL\nhttps://shop.example/2\n", "text", ["https://shop.example/1"]),
        (urlset(product_urls(11)), "too_many", product_urls(10)),
        # Short URLs in 64 MiB: refused at the entry past the limit, before the size is reached.
        (gzip_bomb(URLSET_START, b"<url><loc>https://shop.example/bomb</loc></url>\n", 2**26), "too_many",
         ["https://shop.example/bomb"] * 10),
        (gzip_bomb(URLSET_START, b"<x/>" + b" " * 4092, 2**28), "too_large", []),
    ],
    ids=["empty", "html", "zeros", "zeros-gzip", "broken-xml", "cut-gzip", "gzip-junk", "text", "too-many",
         "url-bomb", "bomb"],
)
def test_a_broken_sitemap_keeps_what_came_before_the_break(body: bytes, reason: str, kept: list[str]) -> None:
    entries, error = read_until_error(body, max_entries=10 if reason == "too_many" else 50_000)
    assert error.reason == reason
    assert [entry.url for entry in entries] == kept


def test_entities_are_never_expanded_from_outside(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("https://evil.example/stolen")
    xxe = (
        f'<?xml version="1.0"?><!DOCTYPE urlset [<!ENTITY xxe SYSTEM "file://{secret}">]>'
        "<urlset><url><loc>https://shop.example/&xxe;</loc></url><url><loc>https://shop.example/ok</loc></url></urlset>"
    ).encode()
    # The loc with the entity is unreadable, not cut down to the text around it.
    assert read_all(xxe) == [SitemapEntry(""), SitemapEntry("https://shop.example/ok")]
    started = time.monotonic()
    entries, error = read_until_error(billion_laughs())
    assert (entries, error.reason) == ([], "xml")  # libxml2 stops the expansion, at once
    assert time.monotonic() - started < 1


# -- the callback, on pages given by hand ---------------------------------------------------------


class Rules(Spider):
    name = "rules"
    sitemap_rules = [(r"/product/\d+$", "parse_product"), ("/special/", "parse_special"), ("/product/", "parse")]
    sitemap_alternate_links = True
    sitemap_after = "2024-02-01"

    def parse(self, response):
        yield {}

    def parse_product(self, response):
        yield {}

    def parse_special(self, response):
        yield {}


def test_rules_pick_the_first_matching_callback_and_alternates_are_followed_when_asked() -> None:
    spider = Rules()
    spider.crawl_stats = Stats()
    body = urlset(
        [
            "https://shop.example/product/1",
            "https://shop.example/product/1/reviews",
            "https://shop.example/special/product/2",
            "https://shop.example/about",
            "https://shop.example/product/3",
            "https://shop.example/product/4",
        ],
        [None, "2024-03-01", "2024-02-01T00:00:00+01:00", None, "2024-01-31T23:59:59Z", "not a date"],
    ).replace(
        b"<loc>https://shop.example/product/1</loc>",
        b'<loc>https://shop.example/product/1</loc><xhtml:link xmlns:xhtml="http://www.w3.org/1999/xhtml"'
        b' rel="alternate" hreflang="fr" href="https://shop.example/fr/product/1"/>',
    )
    response = fake_response("https://shop.example/sitemaps/products-1.xml", body, headers={"Content-Type": "application/xml"})

    result = run_callback(spider, "parse_sitemap", response)

    assert [(request.url, request.callback) for request in result.requests] == [
        ("https://shop.example/product/1", "parse_product"),
        ("https://shop.example/fr/product/1", "parse_product"),
        ("https://shop.example/product/1/reviews", "parse"),
        # 2024-02-01T00:00+01:00 is before the cut-off (midnight UTC): left out, as is 3.
        ("https://shop.example/product/4", "parse_product"),  # a lastmod that is no date: kept
    ]
    assert spider.crawl_stats.snapshot() == {
        "filtered:sitemap_rule": 1, "filtered:lastmod": 2, "malformed:sitemap:lastmod": 1,
    }


def test_the_sitemap_callback_takes_gzip_however_it_is_served() -> None:
    accepted = accepted_by(Spider.parse_sitemap)
    for content_type in ("application/xml", "text/xml; charset=utf-8", "text/plain", "application/gzip",
                         "application/x-gzip", "application/octet-stream", None):
        assert accepted.allows(content_type)
    assert not accepted.allows("image/png") and not accepted_by(Rules.parse_product).allows("application/gzip")
