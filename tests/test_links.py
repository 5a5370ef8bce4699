"""Link extraction and crawl rules: which links a LinkExtractor takes (on the practice site's own
pages and on pages written here), ``follow_all``'s link options, and spiders that crawl by rules."""

from __future__ import annotations

import dataclasses
import json
import pickle
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from crawler import Request, Response, Spider
from crawler.callbacks import missing_callbacks
from crawler.config import Config
from crawler.links import DEFAULT_DENY_EXTENSIONS, RULE_CALLBACK, Link, LinkExtractor, Rule
from crawler.practice import PracticeSite
from crawler.practice.catalogue import Catalogue, product
from crawler.runner import run_crawl
from crawler.testing import fake_response, run_callback
from helpers import TIMEOUT

PAGE = "http://shop.test/catalogue/page/2"


def page(body: str, url: str = PAGE, head: str = "") -> Response:
    return fake_response(url, f"<!DOCTYPE html><html><head>{head}</head><body>{body}</body></html>")


def anchors(*hrefs: str) -> str:
    return "".join(f'<a href="{href}">{index}</a>' for index, href in enumerate(hrefs))


def urls_of(extractor: LinkExtractor, response: Response) -> list[str]:
    return [link.url for link in extractor.extract_links(response)]


def served(site: PracticeSite, session: requests.Session, path: str) -> Response:
    """The practice site's page at ``path``, as the crawl would hand it to a callback."""
    answer = session.get(site.url + path, timeout=TIMEOUT)
    assert answer.status_code == 200
    return fake_response(answer.url, answer.content, headers=dict(answer.headers))


# -- the practice site's pages ---------------------------------------------------------------------


def test_a_listing_page_gives_every_link_in_page_order_with_its_text(site: PracticeSite, session) -> None:
    links = LinkExtractor().extract_links(served(site, session, "/catalogue/page/2"))
    assert [link.url for link in links] == [
        f"{site.url}/",
        *(f"{site.url}/product/{number}" for number in range(21, 41)),
        f"{site.url}/catalogue/page/1",
        f"{site.url}/catalogue/page/3",
    ]
    assert links[0] == Link(f"{site.url}/", "Home")
    assert links[1].text == product(21)["name"] and not links[1].nofollow
    assert links[-1].text == "next"


def test_restrict_css_and_xpaths_take_only_links_inside_what_they_select(site: PracticeSite, session) -> None:
    listing = served(site, session, "/catalogue/page/2")
    pager = [f"{site.url}/catalogue/page/1", f"{site.url}/catalogue/page/3"]
    products = [f"{site.url}/product/{number}" for number in range(21, 41)]

    assert urls_of(LinkExtractor(restrict_css="ul.pager"), listing) == pager
    assert urls_of(LinkExtractor(restrict_xpaths="//ol[@class='products']"), listing) == products
    # A selector may select the links themselves.
    assert urls_of(LinkExtractor(restrict_css="a.product-link"), listing) == products
    # Several parts, overlapping and named in another order than the page's: page order, once each.
    both = LinkExtractor(restrict_css=["ul.pager", "li.next", "body"], restrict_xpaths="//ol")
    assert urls_of(both, listing) == urls_of(LinkExtractor(), listing)
    # A part that is not there has no links; a text or an attribute selected holds none either.
    assert urls_of(LinkExtractor(restrict_css="div.nowhere"), listing) == []
    assert urls_of(LinkExtractor(restrict_xpaths="//ul[@class='pager']//a/@href"), listing) == []


def test_allow_and_deny_on_a_product_page(site: PracticeSite, session) -> None:
    response = served(site, session, "/product/7")
    related = [f"{site.url}/product/{number}" for number in Catalogue(120, 20).related(7)]
    assert urls_of(LinkExtractor(allow=r"/product/\d+$"), response) == related
    kept = LinkExtractor(allow=[r"/product/\d+$", r"/catalogue/"], deny=re.escape(related[0]) + "$")
    assert urls_of(kept, response) == [*related[1:], f"{site.url}/catalogue/page/1"]


def test_the_hostile_bad_links_page_gives_its_good_links_in_the_one_url_form(site: PracticeSite, session) -> None:
    response = served(site, session, "/hostile/bad-links?offsite=1")
    target = f"{site.url}/hostile/bad-links/target"
    long_path = "/long?pad=" + "x" * (3000 - len("/hostile/bad-links/target/long?pad="))
    on_site = [
        f"{site.url}/links/target/1",
        f"{target}/%zz",
        f"{target}/%",
        f"{target}/%203",
        f"{target}/a%20b",
        f"{target}/%C3%BCn%C3%AF",
        target + long_path,
    ]
    # javascript:, mailto:, tel:, data:, "//", "http://", an unclosed IPv6 host, a space in a
    # host and port 99999 are no pages to visit; the host in Unicode is IDNA-encoded.
    assert urls_of(LinkExtractor(), response) == [*on_site, "http://xn--bcher-kva.example/", f"{site.url}/links/target/2"]
    assert urls_of(LinkExtractor(allow_domains="127.0.0.1"), response) == [*on_site, f"{site.url}/links/target/2"]
    assert urls_of(LinkExtractor(deny_domains="bücher.example"), response) == [*on_site, f"{site.url}/links/target/2"]


def test_malformed_html_gives_its_links_as_a_browser_reads_them(site: PracticeSite, session) -> None:
    response = served(site, session, "/hostile/malformed-html")
    # Unquoted, upper-case, inside an unclosed item: all found; the one a script would write is text.
    assert urls_of(LinkExtractor(), response) == [f"{site.url}/links/target/{number}" for number in (1, 2, 3, 4)]


def test_a_link_written_many_times_is_taken_once_unless_asked(site: PracticeSite, session) -> None:
    response = served(site, session, "/links?n=5&repeat=3")
    targets = [f"{site.url}/links/target/{number}" for number in range(5)]
    assert urls_of(LinkExtractor(), response) == targets
    assert urls_of(LinkExtractor(unique=False), response) == [url for url in targets for _ in range(3)]


# -- URLs: fragments, duplicates, <base href>, tricky hrefs ------------------------------------------


def test_fragments_are_dropped_and_then_duplicates_with_the_first_text() -> None:
    response = page('<a href="/a#one">first</a><a href="/a#two">second</a><a href="/a">third</a>'
                    '<a href="/b#">b</a><a href="#top">top</a><a href="">self</a><a href="/a?x=1#f">q</a>')
    links = LinkExtractor().extract_links(response)
    assert links == [
        Link("http://shop.test/a", "first"),
        Link("http://shop.test/b", "b"),
        Link(PAGE, "top"),  # a link to a part of this page is a link to this page
        Link("http://shop.test/a?x=1", "q"),
    ]
    assert urls_of(LinkExtractor(unique=False), response) == [
        "http://shop.test/a", "http://shop.test/a", "http://shop.test/a", "http://shop.test/b", PAGE, PAGE,
        "http://shop.test/a?x=1",
    ]


def test_relative_links_start_from_the_first_base_href() -> None:
    body = anchors("guide", "/root", "../up", "?q=1", "https://elsewhere.test/x")
    head = '<base target="_blank"><base href="https://cdn.test/docs/v2/"><base href="http://ignored.test/">'
    assert urls_of(LinkExtractor(), page(body, head=head)) == [
        "https://cdn.test/docs/v2/guide",
        "https://cdn.test/root",
        "https://cdn.test/docs/up",
        "https://cdn.test/docs/v2/?q=1",
        "https://elsewhere.test/x",
    ]
    # A relative base is relative to the page; a base that is no web URL leaves the page's.
    assert urls_of(LinkExtractor(), page(anchors("x"), head='<base href="../other/">')) == ["http://shop.test/catalogue/other/x"]
    for useless in ("javascript:void(0)", "http://[::1", "mailto:a@b.test"):
        assert urls_of(LinkExtractor(), page(anchors("x"), head=f'<base href="{useless}">')) == ["http://shop.test/catalogue/page/x"]
    # follow_all takes links the same way.
    assert [request.url for request in page(body, head=head).follow_all(allow="cdn")][:1] == ["https://cdn.test/docs/v2/guide"]


def test_tricky_hrefs_are_taken_as_the_crawl_takes_them_or_left_out() -> None:
    kept = {
        "  /ok \n": "http://shop.test/ok",  # surrounding whitespace is stripped
        "\t/tabbed\r\n": "http://shop.test/tabbed",
        "//other.test/x": "http://other.test/x",  # the page's scheme, another host
        "HTTP://OTHER.test:80/Path/../Case": "http://other.test/Case",
        "https://shop.test:443/secure": "https://shop.test/secure",
        "http://0x7f.1/ip": "http://127.0.0.1/ip",
        "http://ｓｈｏｐ．test/wide": "http://shop.test/wide",
        "/p?q=a b": "http://shop.test/p?q=a%20b",
        "/back?slash=\\": "http://shop.test/back?slash=\\",  # in the query, parsers agree on it
    }
    left_out = [
        "/a\\b", "\\\\evil.test/x", "http://evil.test\\@shop.test/",  # backslashes: read two ways
        "http://user:pw@shop.test/", "http://a%40b@shop.test/", "//user@other.test/",  # userinfo
        "/x\ty", "/x\ny", "/x\x01y", "/x&#127;y", "java\tscript:alert(1)",  # control characters inside
        "javascript:alert(1)", "JavaScript:void(0)", " javascript:x", "mailto:a@shop.test",
        "tel:+441234", "data:text/html,hi", "ftp://shop.test/file", "about:blank",
        "//", "http://", "https:///path", "http://[::1", "http://shop.test:99999/", "http://exa mple.test/",
    ]
    response = page("".join(f'<a href="{href}">x</a>' for href in [*kept, *left_out]))
    assert urls_of(LinkExtractor(), response) == list(kept.values())
    https_page = page(anchors("//other.test/x"), url="https://shop.test/")
    assert urls_of(LinkExtractor(), https_page) == ["https://other.test/x"]


# -- the options -----------------------------------------------------------------------------------


def test_allow_and_deny_are_searched_in_the_absolute_url() -> None:
    response = page(anchors("/product/1", "product/2", "https://other.test/product/3", "/product/4?ref=x", "/about"))
    assert urls_of(LinkExtractor(allow=r"^http://shop\.test/product/"), response) == [
        "http://shop.test/product/1", "http://shop.test/product/4?ref=x",
    ]
    # Relative links are matched as the absolute URLs they are ("product/2" is under the page's folder).
    assert urls_of(LinkExtractor(allow=r"/catalogue/page/product/\d$"), response) == ["http://shop.test/catalogue/page/product/2"]
    # One allow pattern is enough; any deny pattern is one too many, and deny wins.
    either = LinkExtractor(allow=[re.compile(r"/product/1$"), r"/about$"], deny=r"about")
    assert urls_of(either, response) == ["http://shop.test/product/1"]
    assert urls_of(LinkExtractor(deny=[r"\?", "other"]), response) == [
        "http://shop.test/product/1", "http://shop.test/catalogue/page/product/2", "http://shop.test/about",
    ]


def test_domains_match_their_subdomains_and_are_read_as_hosts_are() -> None:
    response = page(anchors("http://shop.test/1", "http://www.SHOP.test/2", "http://notshop.test/3",
                            "http://shop.test.evil.test/4", "http://xn--bcher-kva.example/5", "/6"))
    assert urls_of(LinkExtractor(allow_domains="shop.test"), response) == [
        "http://shop.test/1", "http://www.shop.test/2", "http://shop.test/6",
    ]
    assert urls_of(LinkExtractor(allow_domains=[".Shop.Test", "bücher.example"]), response) == [
        "http://shop.test/1", "http://www.shop.test/2", "http://xn--bcher-kva.example/5", "http://shop.test/6",
    ]
    assert urls_of(LinkExtractor(deny_domains="www.shop.test"), response) == [
        "http://shop.test/1", "http://notshop.test/3", "http://shop.test.evil.test/4",
        "http://xn--bcher-kva.example/5", "http://shop.test/6",
    ]
    assert urls_of(LinkExtractor(allow_domains="shop.test", deny_domains="www.shop.test"), response) == [
        "http://shop.test/1", "http://shop.test/6",
    ]


def test_links_to_binary_files_are_left_out_by_default() -> None:
    hrefs = ("/photo.jpg", "/REPORT.PDF", "/archive.tar.gz", "/clip.mp4", "/sheet.xlsx", "/font.woff2",
             "/setup.exe", "/page.html", "/download.php?file=report.pdf", "/plain", "/v1.2/", "/doc.pdf#page=2")
    response = page(anchors(*hrefs))
    assert urls_of(LinkExtractor(), response) == [
        "http://shop.test/page.html", "http://shop.test/download.php?file=report.pdf", "http://shop.test/plain",
        "http://shop.test/v1.2/",
    ]
    assert len(urls_of(LinkExtractor(deny_extensions=()), response)) == len(hrefs)
    assert urls_of(LinkExtractor(deny_extensions=["PDF", ".exe"], allow=r"\.(pdf|PDF|exe|html)"), response) == [
        "http://shop.test/page.html", "http://shop.test/download.php?file=report.pdf",
    ]
    with_pdfs = LinkExtractor(deny_extensions=DEFAULT_DENY_EXTENSIONS - {".pdf"}, allow=r"(?i)pdf")
    assert urls_of(with_pdfs, response) == [
        "http://shop.test/REPORT.PDF", "http://shop.test/download.php?file=report.pdf", "http://shop.test/doc.pdf",
    ]


def test_tags_and_attrs_say_which_elements_hold_links() -> None:
    response = page('<a href="/a">a</a><map><area href="/area" alt="zone"></map><link href="/style">'
                    '<img src="/logo.png"><img src="/chart"><div data-href="/div"><a data-href="/data" href="/both">b</a></div>')
    assert urls_of(LinkExtractor(), response) == ["http://shop.test/a", "http://shop.test/area", "http://shop.test/both"]
    assert urls_of(LinkExtractor(tags="IMG", attrs="src"), response) == ["http://shop.test/chart"]
    assert urls_of(LinkExtractor(tags="img", attrs="src", deny_extensions=()), response) == [
        "http://shop.test/logo.png", "http://shop.test/chart",
    ]
    # Attributes in the order given, for each element in page order.
    assert urls_of(LinkExtractor(tags=("a", "div"), attrs=("data-href", "href")), response) == [
        "http://shop.test/a", "http://shop.test/div", "http://shop.test/data", "http://shop.test/both",
    ]
    assert urls_of(LinkExtractor(tags=()), response) == []


def test_link_text_is_collapsed_and_nofollow_is_told() -> None:
    response = page('<a href="/x" rel="NoFollow noopener">  Oak\n   <b>Lamp</b> <!-- not text -->\t(new) </a>'
                    '<a href="/y" rel="nofollowing">y</a>')
    assert LinkExtractor().extract_links(response) == [
        Link("http://shop.test/x", "Oak Lamp (new)", nofollow=True),
        Link("http://shop.test/y", "y", nofollow=False),
    ]


def test_a_json_body_has_no_links_and_xhtml_as_xml_has() -> None:
    json_response = fake_response(PAGE, '{"links": ["/a"]}', headers={"Content-Type": "application/json"})
    assert LinkExtractor().extract_links(json_response) == []
    xhtml = ('<?xml version="1.0" encoding="utf-8"?>\n<html xmlns="http://www.w3.org/1999/xhtml"><head>'
             '<base href="http://cdn.test/"/></head><body><p><a href="a">a</a></p><a href="b">b</a></body></html>')
    response = fake_response(PAGE, xhtml, headers={"Content-Type": "application/xhtml+xml"})
    assert urls_of(LinkExtractor(), response) == ["http://cdn.test/a", "http://cdn.test/b"]
    assert urls_of(LinkExtractor(restrict_xpaths="//*[local-name()='p']"), response) == ["http://cdn.test/a"]


def test_a_selector_that_cannot_be_read_is_an_error_when_the_extractor_is_made() -> None:
    with pytest.raises(ValueError, match="restrict_css 'ul..pager' is not a CSS selector"):
        LinkExtractor(restrict_css="ul..pager")
    with pytest.raises(ValueError, match="restrict_xpaths '//div\\[@class=' is not an XPath expression"):
        LinkExtractor(restrict_xpaths="//div[@class=")
    with pytest.raises(re.error):
        LinkExtractor(allow="product/(")


def test_an_extractor_is_an_immutable_value_shared_by_threads_and_processes() -> None:
    extractor = LinkExtractor(allow=r"/product/\d+$", restrict_css="ol", deny_domains="other.test")
    with pytest.raises(dataclasses.FrozenInstanceError):
        extractor.unique = False  # type: ignore[misc]
    assert pickle.loads(pickle.dumps(extractor)) == extractor
    rule = Rule(extractor, callback="parse_product", follow=True, process_request="tag")
    assert pickle.loads(pickle.dumps(rule)) == rule and hash(rule) == hash(pickle.loads(pickle.dumps(rule)))

    catalogue = Catalogue(products=400, per_page=40)
    pages = [fake_response(f"http://shop.test/catalogue/page/{number}", catalogue.render_listing(number) or "")
             for number in range(1, 11)]
    expected = [urls_of(extractor, response) for response in pages]
    assert expected[3] == [f"http://shop.test/product/{number}" for number in range(121, 161)]
    # Sixteen threads over fresh copies of the pages, each page parsed by one thread as in the crawl.
    copies = [fake_response(response.url, response.body) for response in pages * 8]
    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(lambda response: urls_of(extractor, response), copies))
    assert results == expected * 8


# -- follow_all ------------------------------------------------------------------------------------


LISTING = Catalogue(products=45, per_page=20).render_listing(2) or ""


def test_follow_all_takes_the_link_options_and_gives_the_rest_to_the_requests() -> None:
    response = fake_response("http://shop.test/catalogue/page/2", LISTING)
    requests_ = response.follow_all(allow=r"/product/\d+$", callback="parse_product", priority=3, meta={"page": 2})
    assert [request.url for request in requests_] == [f"http://shop.test/product/{number}" for number in range(21, 41)]
    assert all(request.callback == "parse_product" and request.priority == 3 and request.meta == {"page": 2}
               for request in requests_)
    pager = response.follow_all(restrict_css="ul.pager", callback=Spider.parse)
    assert pager == [Request("http://shop.test/catalogue/page/1", "parse"), Request("http://shop.test/catalogue/page/3", "parse")]
    # Without urls or options: every link of the page.
    assert [request.url for request in response.follow_all()] == urls_of(LinkExtractor(), response)
    assert response.follow_all(restrict_xpaths="//nav", deny_domains="shop.test") == []


def test_follow_all_still_takes_urls_and_selectors_but_not_both_ways_at_once() -> None:
    response = fake_response("http://shop.test/catalogue/page/2", LISTING)
    by_hand = response.follow_all(response.css("ul.pager a"), "parse", dont_filter=True)
    assert [request.url for request in by_hand] == ["http://shop.test/catalogue/page/1", "http://shop.test/catalogue/page/3"]
    assert all(request.dont_filter for request in by_hand)
    with pytest.raises(TypeError, match="urls or link options, not both: allow, restrict_css"):
        response.follow_all(["/a"], allow="a", restrict_css="ul")
    with pytest.raises(TypeError, match="alow"):
        response.follow_all(alow="product")


# -- rules -----------------------------------------------------------------------------------------


class RuledShop(Spider):
    name = "ruled"
    rules = (
        Rule(LinkExtractor(restrict_css="ul.pager")),
        Rule(LinkExtractor(allow=r"/product/\d+$", deny=r"/product/2\d$"), callback="parse_product"),
        # Also takes the pager's and the first rule's links: those go where the earlier rule said.
        Rule(LinkExtractor(allow=[r"/product/", r"/catalogue/"]), callback="parse_other", process_request="tagged"),
    )

    def parse_product(self, response: Response) -> Iterator[dict[str, object]]:
        yield {"product": response.url}

    def parse_other(self, response: Response) -> Iterator[dict[str, object]]:
        yield {"other": response.url}

    def tagged(self, request: Request, response: Response) -> Request | None:
        if request.url.endswith("/product/25"):
            return None
        return request.replace(priority=-1, meta={"from": response.url})


def test_a_rule_defaults_to_following_without_a_callback_and_not_with_one() -> None:
    assert Rule().follow is True and Rule().callback is None and Rule().link_extractor == LinkExtractor()
    assert Rule(LinkExtractor(), "parse_item").follow is False
    assert Rule(LinkExtractor(), RuledShop.parse_product, follow=True).callback == "parse_product"
    assert Rule(process_request=RuledShop.tagged).process_request == "tagged"
    with pytest.raises(ValueError, match="no callback and follow=False"):
        Rule(LinkExtractor(), follow=False)


def test_parse_applies_the_rules_in_order_each_link_to_the_first_rule_that_takes_it() -> None:
    response = fake_response("http://shop.test/catalogue/page/2", LISTING)
    result = run_callback(RuledShop(), "parse", response)
    assert not result.items and not result.dropped
    pager = [Request(f"http://shop.test/catalogue/page/{number}", "parse") for number in (1, 3)]
    products = [Request(f"http://shop.test/product/{number}", "parse_product") for number in (30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40)]
    others = [Request(f"http://shop.test/product/{number}", "parse_other", priority=-1, meta={"from": response.url})
              for number in (*range(21, 25), *range(26, 30))]
    assert result.requests == [*pager, *products, *others]
    # They are what the checkpoint stores and gives back.
    assert [Request.from_json(request.to_json()) for request in result.requests] == result.requests


def test_a_rule_with_a_callback_that_follows_runs_the_callback_and_then_the_rules() -> None:
    class Related(Spider):
        name = "related"
        rules = (Rule(LinkExtractor(restrict_css="section.related"), callback="parse_product", follow=True),)

        def parse_product(self, response: Response) -> Iterator[dict[str, object]]:
            yield {"id": int(response.css("article.product::attr(data-id)").get() or 0)}

    catalogue = Catalogue(products=45, per_page=20)
    related = [f"http://shop.test/product/{number}" for number in catalogue.related(7)]
    start = fake_response("http://shop.test/product/7", catalogue.render_product(7) or "")
    first = run_callback(Related(), "parse", start)
    assert not first.items  # a start page is only followed: no rule led to it
    assert first.requests == [Request(url, "parse", meta={RULE_CALLBACK: "parse_product"}) for url in related]
    stored = Request.from_json(first.requests[0].to_json())
    assert json.loads(stored.to_json()) == {"url": related[0], "callback": "parse", "meta": {"rule_callback": "parse_product"}}

    # Its page, as the crawl hands it back: the callback's item, then the page's own related links.
    number = catalogue.related(7)[0]
    linked = fake_response(stored.url, catalogue.render_product(number) or "", request=stored)
    second = run_callback(Related(), stored.callback or "parse", linked)
    assert second.items == [{"id": number}]
    assert [request.url for request in second.requests] == [f"http://shop.test/product/{other}" for other in catalogue.related(number)]


def test_a_spider_without_rules_still_has_to_write_its_parse() -> None:
    class Plain(Spider):
        name = "plain"

    with pytest.raises(NotImplementedError, match="Plain.parse is not defined"):
        run_callback(Plain(), "parse", page(anchors("/a")))


class MisspeltRule(Spider):
    name = "misspelt"
    rules = (
        Rule(LinkExtractor(allow="/product/"), callback="parse_prodcut"),
        Rule(LinkExtractor(allow="/catalogue/"), "parse_listing", follow=True),
    )

    def parse_listing(self, response: Response) -> Iterator[dict[str, object]]:
        yield {}


def test_a_rule_naming_a_callback_the_spider_lacks_is_found_before_the_crawl() -> None:
    (missing,) = missing_callbacks(MisspeltRule)
    assert missing.callback == "parse_prodcut" and missing.where.startswith("tests/test_links.py:")


# -- whole crawls of the practice site -------------------------------------------------------------


CATALOGUE_SPIDER = """
from crawler import Spider
from crawler.links import LinkExtractor, Rule


class CatalogueSpider(Spider):
    name = "catalogue"
    rules = (
        Rule(LinkExtractor(restrict_css=["a.catalogue", "ul.pager"])),
        Rule(LinkExtractor(allow=r"/product/\\d+$"), callback="parse_product"),
    )

    def parse_product(self, response):
        yield {
            "id": int(response.css("article.product::attr(data-id)").get()),
            "name": response.css("h1.name::text").get(),
            "price": response.css("span.price::text").get(),
            "url": response.url,
        }
"""

RELATED_SPIDER = """
from crawler import Spider
from crawler.links import LinkExtractor, Rule


class RelatedSpider(Spider):
    name = "related"
    rules = (Rule(LinkExtractor(restrict_css="section.related"), callback="parse_product", follow=True),)

    def parse_product(self, response):
        yield {"id": int(response.css("article.product::attr(data-id)").get())}
"""


def output(config: Config, spider: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in config.output_path(spider).read_text().splitlines()]


def test_a_rules_spider_crawls_the_catalogue_fetching_each_page_it_should_once(site: PracticeSite, spider_config) -> None:
    config = spider_config("catalogue", CATALOGUE_SPIDER, start_urls=[f"{site.url}/"])
    report = run_crawl(config)

    items = sorted(output(config, "catalogue"), key=lambda item: int(str(item["id"])))
    assert items == [
        {"id": number, "name": product(number)["name"], "price": product(number)["price"], "url": f"{site.url}/product/{number}"}
        for number in range(1, 121)
    ]
    assert report.results[0].finished and report.whole_crawl.failed == 0
    # The home page, the six listing pages, every product once (the related products a product
    # page links to are not followed: that rule has a callback), robots.txt; nothing else.
    assert site.counters.hits("/") == 1
    assert [site.counters.hits(f"/catalogue/page/{number}") for number in range(1, 8)] == [1, 1, 1, 1, 1, 1, 0]
    assert all(site.counters.hits(f"/product/{number}") == 1 for number in range(1, 121))
    assert site.counters.requests == 1 + 6 + 120 + 1
    assert report.stats["pages"] == 127


def test_a_rule_that_calls_back_and_follows_crawls_the_related_products_in_two_processes(
    site: PracticeSite, spider_config
) -> None:
    catalogue = Catalogue(products=120, per_page=20)
    reachable, frontier = {1}, [1]
    while frontier:
        for number in catalogue.related(frontier.pop()):
            if number not in reachable:
                reachable.add(number)
                frontier.append(number)
    config = spider_config("related", RELATED_SPIDER, "[crawl]\nprocesses = 2\nworkers = 4\n",
                           start_urls=[f"{site.url}/product/1"])
    report = run_crawl(config)

    assert report.stats["worker_processes"] == 2 and report.whole_crawl.failed == 0
    # Every product a chain of related links reaches, called back once each; the start page was
    # only followed (and the links back to it are the same request: not fetched again).
    assert sorted(int(str(item["id"])) for item in output(config, "related")) == sorted(reachable - {1})
    assert len(reachable) > 20
    assert all(site.counters.hits(f"/product/{number}") == 1 for number in reachable)
    assert site.counters.requests == len(reachable) + 1  # and robots.txt
    assert site.counters.hits("/catalogue/page/1") == 0
