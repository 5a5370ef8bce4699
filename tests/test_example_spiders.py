"""The shipped example spiders, tested the way a user tests theirs: pages as strings, one
callback at a time, through ``crawler.testing`` (no network, no crawl)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

from crawler import Request
from crawler.practice.catalogue import Catalogue, product
from crawler.testing import fake_response, run_callback

REPO = Path(__file__).resolve().parent.parent
SITE = "http://shop.test"
CATALOGUE = Catalogue(products=45, per_page=20)


def example(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"example_{name}", REPO / "spiders" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_products_spider_reads_a_product_page_into_a_valid_item_and_follows_related_products() -> None:
    spider = example("products").ProductsSpider(start_url=f"{SITE}/")
    page = CATALOGUE.render_product(7)
    assert page is not None
    result = run_callback(spider, "parse_product", fake_response(f"{SITE}/product/7", page))

    expected = product(7)
    (item,) = result.items
    assert item["id"] == 7 and item["name"] == expected["name"] and item["sku"] == expected["sku"]
    assert not result.rejected and not result.dropped
    related = {f"{SITE}/product/{number}" for number in CATALOGUE.related(7)}
    assert {request.url for request in result.requests} == related
    assert all(request.callback == "parse_product" for request in result.requests)


def test_the_products_spider_follows_the_pager_and_every_product_of_a_listing() -> None:
    spider = example("products").ProductsSpider(start_url=f"{SITE}/")
    page = CATALOGUE.render_listing(1)
    assert page is not None
    result = run_callback(spider, spider.parse, fake_response(f"{SITE}/catalogue/page/1", page))

    products = [request for request in result.requests if request.callback == "parse_product"]
    assert [request.url for request in products] == [f"{SITE}/product/{number}" for number in range(1, 21)]
    assert Request(f"{SITE}/catalogue/page/2", callback="parse") in result.requests
    assert not result.items


def test_an_item_that_fails_the_model_is_rejected_with_its_error() -> None:
    spider = example("products").ProductsSpider()
    page = CATALOGUE.render_product(3)
    assert page is not None
    broken = page.replace('class="rating"', 'class="no-rating"')  # the rating the model requires is gone
    result = run_callback(spider, "parse_product", fake_response(f"{SITE}/product/3", broken))
    (rejected,) = result.rejected
    assert not result.items and rejected.url == f"{SITE}/product/3" and "rating" in rejected.error
