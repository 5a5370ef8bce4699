"""Crawls the bundled practice site's catalogue: listing pages, then every product page."""

from collections.abc import Iterator
from decimal import Decimal

from pydantic import BaseModel, Field

from crawler import Request, Response, Spider


class Product(BaseModel):
    id: int
    name: str = Field(min_length=1)
    price: Decimal = Field(ge=0)
    sku: str
    category: str
    description: str
    stock: int = Field(ge=0)
    rating: int = Field(ge=1, le=5)
    url: str


class ProductsSpider(Spider):
    name = "products"
    item_model = Product
    # config.toml passes the URL it serves the site on; by default, where
    # `python -m crawler.practice` serves it.
    start_url = "http://127.0.0.1:8650/"

    def start_requests(self) -> Iterator[Request]:
        yield Request(self.start_url, callback=self.parse)

    def parse(self, response: Response) -> Iterator[Request]:
        """The home page and the listing pages: follow the pager and every product."""
        for link in response.css("a.catalogue, li.next a"):
            yield response.follow(link, self.parse)
        for link in response.css("a.product-link"):
            yield response.follow(link, self.parse_product)

    def parse_product(self, response: Response) -> Iterator[Request | dict]:
        yield {
            "id": response.css("article.product::attr(data-id)").get(),
            "name": response.css("h1.name::text").get(),
            "price": response.css("span.price::text").get(),
            "sku": response.css("span.sku::text").get(),
            "category": response.css("span.category::text").get(),
            "description": response.css("p.description::text").get(),
            "stock": response.css("span.stock::text").get(),
            "rating": response.css("span.rating::text").get(),
            "url": response.url,
        }
        for link in response.css("a.related-link"):
            yield response.follow(link, self.parse_product)
