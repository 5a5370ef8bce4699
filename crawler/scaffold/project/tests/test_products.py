"""The example spider's callbacks on a saved page: no network, no crawl (see crawler.testing)."""

from pathlib import Path

from crawler.testing import fake_response, run_callback
from spiders.products import ProductsSpider

PAGES = Path(__file__).parent / "pages"


def test_a_product_page_gives_one_valid_item_and_follows_related_products():
    response = fake_response("http://127.0.0.1:8650/product/1", file=PAGES / "product-1.html")
    result = run_callback(ProductsSpider(), "parse_product", response)

    assert not result.rejected, result.rejected
    (item,) = result.items
    assert item["id"] == 1 and item["sku"] == "SKU-00001"
    assert result.requests and all(request.callback == "parse_product" for request in result.requests)
