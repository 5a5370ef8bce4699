"""Testing spiders without a network: a ``Response`` made from a string or a file, and one
callback run on it the way the crawl runs it.

    from crawler.testing import fake_response, run_callback

    response = fake_response("https://shop.example/product/1", file="tests/pages/product.html")
    result = run_callback(ProductsSpider(), "parse_product", response)
    assert result.items == [{"id": 1, ...}] and not result.rejected

``run_callback`` checks what the callback yields as the crawl does: each item against the
spider's ``item_model`` (an item that fails is in ``rejected``, with the validation error),
each request's URL put in its normal form and resolved against the page; a request the crawl
would drop (a malformed URL, a scheme it does not fetch) is left out and counted in ``dropped``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from requests.structures import CaseInsensitiveDict

from .admission import checked_request
from .items import ItemValidator, RejectedItem
from .request import Request
from .response import Response
from .spider import Spider
from .stats import Stats


def fake_response(
    url: str,
    body: str | bytes = b"",
    *,
    file: str | Path | None = None,
    status: int = 200,
    headers: Mapping[str, str] | None = None,
    encoding: str = "utf-8",
    request: Request | None = None,
) -> Response:
    """A response for ``url``: its body from ``body`` (text is encoded with ``encoding``) or
    read from ``file``; ``Content-Type`` defaults to HTML in ``encoding``."""
    if file is not None:
        body = Path(file).read_bytes()
    if isinstance(body, str):
        body = body.encode(encoding)
    header_map = CaseInsensitiveDict({"Content-Type": f"text/html; charset={encoding}"})
    header_map.update(headers or {})
    return Response(url, status, header_map, body, request or Request(url))


@dataclass
class CallbackResult:
    """What one callback yielded, as the crawl would take it in."""

    requests: list[Request] = field(default_factory=list)
    items: list[dict[str, Any]] = field(default_factory=list)  # validated, as they are written out
    rejected: list[RejectedItem] = field(default_factory=list)
    dropped: dict[str, int] = field(default_factory=dict)  # requests left out, by reason


def run_callback(spider: Spider, callback: str | Callable[..., Any], response: Response) -> CallbackResult:
    """Run ``callback`` (a method name, or the bound method) of ``spider`` on ``response``."""
    method = getattr(spider, callback) if isinstance(callback, str) else callback
    validator = ItemValidator(spider.item_model)
    stats = Stats()
    result = CallbackResult()
    for output in method(response) or ():
        if isinstance(output, Request):
            if (checked := checked_request(output, stats, spider.name, base_url=response.url)) is not None:
                result.requests.append(checked)
        elif isinstance(output, (BaseModel, dict)):
            checked_item = validator.check(output, response.url)
            if isinstance(checked_item, RejectedItem):
                result.rejected.append(checked_item)
            else:
                result.items.append(json.loads(checked_item))
        else:
            raise TypeError(f"{spider.name}.{method.__name__} yielded a {type(output).__name__}; expected a Request, a dict or a model")
    result.dropped = stats.snapshot()
    return result
