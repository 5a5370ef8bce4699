"""Deterministic product catalogue of the practice site, and its HTML pages.

Every product is generated from ``random.Random(product_id)``, so the same id
always yields the same data on every run and in every process: tests can crawl
the site and compare what they scraped with :func:`product`.

URL scheme of the catalogue (absolute paths, no trailing slash; a path with a
trailing slash or a number with leading zeros is a 404, so every page has
exactly one canonical URL, which keeps dedupe tests honest):

``/``
    Home page; links to the first listing page with ``<a class="catalogue">``.
``/catalogue``
    301 redirect to ``/catalogue/page/1`` (served by the site module).
``/catalogue/page/<n>``
    Listing page ``n`` (1-based, ``ceil(products / per_page)`` pages, at least
    one). Links to every product on the page (``a.product-link``) and to the
    neighbouring listing pages (``li.previous a`` / ``li.next a``). An
    out-of-range page is a 404.
``/product/<id>``
    Detail page of product ``id`` (``1..products``). CSS hooks: ``h1.name``,
    ``span.price`` (plain decimal, e.g. ``12.34``), ``span.sku``,
    ``span.category``, ``p.description``, ``span.stock`` (integer),
    ``span.rating`` (1-5). Links to three related products
    (``a.related-link``) and back to its listing page (``a.back``).

Some names and categories contain non-ASCII characters ("Café", "Über",
"Décor"...) so that encoding handling is exercised; no generated text contains
characters that need HTML escaping, so ``::text`` of a hook equals the field.
"""

from __future__ import annotations

import functools
import random
from dataclasses import dataclass
from html import escape
from typing import TypedDict

# Small word lists: names are "<adjective> <material> <noun>". Four of the
# adjectives are non-ASCII so roughly one product in five exercises UTF-8.
_ADJECTIVES = (
    "Classic", "Rustic", "Modern", "Vintage", "Compact", "Deluxe", "Ergonomic",
    "Handmade", "Nordic", "Smart", "Sturdy", "Elegant", "Minimal", "Portable",
    "Café", "Über", "Crème", "Fjäll",
)
_MATERIALS = (
    "Oak", "Walnut", "Steel", "Copper", "Linen", "Ceramic", "Bamboo",
    "Leather", "Glass", "Wool", "Marble", "Cotton",
)
_NOUNS = (
    "Lamp", "Chair", "Kettle", "Notebook", "Backpack", "Clock", "Mug",
    "Blanket", "Speaker", "Vase", "Desk", "Teapot", "Bookshelf", "Umbrella",
    "Candle", "Wallet",
)
_CATEGORIES = (
    "Kitchen", "Furniture", "Lighting", "Stationery", "Travel", "Décor",
    "Audio", "Textiles",
)
_OPENERS = ("A", "Our best-selling", "A customer favourite:", "Meet the")
_CLAUSES = (
    "built to last", "designed in a small workshop", "made for everyday use",
    "finished by hand", "packed in recycled cardboard", "with a two-year warranty",
)


class Product(TypedDict):
    """Exactly the fields a product detail page shows (``url`` is its path)."""

    id: int
    name: str
    price: str
    sku: str
    category: str
    description: str
    stock: int
    rating: int
    url: str


@functools.lru_cache(maxsize=65536)
def _product(product_id: int) -> tuple[tuple[str, object], ...]:
    # Cached as an immutable tuple; product() hands out a fresh dict each call
    # so a caller mutating its copy cannot corrupt later answers.
    rng = random.Random(product_id)
    adjective = rng.choice(_ADJECTIVES)
    material = rng.choice(_MATERIALS)
    noun = rng.choice(_NOUNS)
    cents = rng.randint(199, 49_999)
    description = (
        f"{rng.choice(_OPENERS)} {adjective.lower()} {noun.lower()} "
        f"in {material.lower()}, {rng.choice(_CLAUSES)}."
    )
    data: Product = {
        "id": product_id,
        "name": f"{adjective} {material} {noun}",
        "price": f"{cents // 100}.{cents % 100:02d}",
        "sku": f"SKU-{product_id:05d}",
        "category": rng.choice(_CATEGORIES),
        "description": description,
        "stock": rng.randint(0, 250),
        "rating": rng.randint(1, 5),
        "url": f"/product/{product_id}",
    }
    return tuple(data.items())


def product(product_id: int) -> Product:
    """Return the data shown on ``/product/<product_id>`` (any id >= 1).

    The data does not depend on the catalogue size; whether the id is served
    depends on the site's ``products`` setting.
    """
    if product_id < 1:
        raise ValueError(f"product ids start at 1, got {product_id}")
    return dict(_product(product_id))  # type: ignore[return-value]


def layout(title: str, body: str) -> str:
    """Wrap ``body`` (already-escaped HTML) in a complete UTF-8 document."""
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{escape(title)}</title>\n</head>\n<body>\n{body}\n</body>\n</html>\n"
    )


@dataclass(frozen=True)
class Catalogue:
    """A catalogue of ``products`` products shown ``per_page`` per listing page."""

    products: int = 1000
    per_page: int = 20

    def __post_init__(self) -> None:
        if self.products < 0:
            raise ValueError("products must be >= 0")
        if self.per_page < 1:
            raise ValueError("per_page must be >= 1")

    @property
    def pages(self) -> int:
        # At least one (possibly empty) page so the home page link never 404s.
        return max(1, -(-self.products // self.per_page))

    def page_of(self, product_id: int) -> int:
        """The listing page that links to ``product_id``."""
        return (product_id - 1) // self.per_page + 1

    def related(self, product_id: int) -> list[int]:
        """Three other product ids (fewer in a tiny catalogue), deterministic."""
        # A seed distinct from the product's own keeps the two streams apart.
        rng = random.Random(-product_id)
        picks = rng.sample(range(1, self.products), min(3, self.products - 1))
        # Sampling from 1..products-1 and shifting skips product_id itself.
        return [p + 1 if p >= product_id else p for p in picks]

    def render_home(self) -> str:
        body = (
            '<h1 class="site-title">Practice Store</h1>\n'
            f'<p>{self.products} products on {self.pages} pages.</p>\n'
            '<p><a class="catalogue" href="/catalogue/page/1">Browse the catalogue</a></p>'
        )
        return layout("Practice Store", body)

    def render_listing(self, page: int) -> str | None:
        """HTML of listing page ``page``, or ``None`` when it is out of range."""
        if not 1 <= page <= self.pages:
            return None
        first = (page - 1) * self.per_page + 1
        last = min(page * self.per_page, self.products)
        items = []
        for product_id in range(first, last + 1):
            item = product(product_id)
            items.append(
                f'<li class="product"><a class="product-link" href="{item["url"]}">'
                f'{escape(item["name"])}</a> <span class="price">{item["price"]}</span></li>'
            )
        pager = []
        if page > 1:
            pager.append(f'<li class="previous"><a href="/catalogue/page/{page - 1}">'
                         "previous</a></li>")
        if page < self.pages:
            pager.append(f'<li class="next"><a href="/catalogue/page/{page + 1}">next</a></li>')
        body = (
            '<nav class="breadcrumb"><a href="/">Home</a></nav>\n'
            "<h1>Catalogue</h1>\n"
            f'<p class="page-info">Page <span class="current">{page}</span> of '
            f'<span class="total">{self.pages}</span></p>\n'
            '<ol class="products">\n' + "\n".join(items) + "\n</ol>\n"
            '<ul class="pager">\n' + "\n".join(pager) + "\n</ul>"
        )
        return layout(f"Catalogue - page {page} of {self.pages}", body)

    def render_product(self, product_id: int) -> str | None:
        """HTML of a product detail page, or ``None`` for an unknown id."""
        if not 1 <= product_id <= self.products:
            return None
        item = product(product_id)
        related = "\n".join(
            f'<li><a class="related-link" href="/product/{other}">'
            f'{escape(product(other)["name"])}</a></li>'
            for other in self.related(product_id)
        )
        body = (
            '<nav class="breadcrumb"><a href="/">Home</a></nav>\n'
            f'<article class="product" data-id="{product_id}">\n'
            f'<h1 class="name">{escape(item["name"])}</h1>\n'
            f'<p>Price: <span class="price">{item["price"]}</span></p>\n'
            f'<p>SKU: <span class="sku">{item["sku"]}</span></p>\n'
            f'<p>Category: <span class="category">{escape(item["category"])}</span></p>\n'
            f'<p>In stock: <span class="stock">{item["stock"]}</span></p>\n'
            f'<p>Rating: <span class="rating">{item["rating"]}</span> / 5</p>\n'
            f'<p class="description">{escape(item["description"])}</p>\n'
            "</article>\n"
            '<section class="related">\n<h2>Related products</h2>\n'
            f"<ul>\n{related}\n</ul>\n</section>\n"
            f'<p><a class="back" href="/catalogue/page/{self.page_of(product_id)}">'
            "Back to the catalogue</a></p>"
        )
        return layout(item["name"], body)
