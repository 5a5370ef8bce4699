"""Response decoding and link helpers, item validation, and the retry policy's pure functions."""

from __future__ import annotations

import codecs
import json
from collections.abc import Mapping
from decimal import Decimal
from email.utils import formatdate

import pytest
from pydantic import BaseModel, Field
from requests.structures import CaseInsensitiveDict

from crawler import Request, Response
from crawler.exceptions import (
    ConnectError,
    ConnectionLost,
    ConnectTimeout,
    HTTPStatusError,
    InvalidRequest,
    ReadTimeout,
)
from crawler.items import ItemValidator, RejectedItem
from crawler.retry import TRANSIENT_STATUSES, is_transient, parse_retry_after

PAGE_URL = "http://shop.test/catalogue/page/2"

LISTING = b"""<html><head><title>Page 2</title></head><body>
<ul>
  <li><a class="product-link" href="/product/7"> Oak Lamp </a></li>
  <li><a class="product-link" href="../product/8?ref=list#top">Steel Mug</a></li>
  <li><a class="product-link" href="https://other.test/product/9">Elsewhere</a></li>
</ul>
<li class="next"><a href="3">next</a></li>
</body></html>"""


def make_response(
    body: bytes,
    content_type: str | None = "text/html; charset=utf-8",
    url: str = PAGE_URL,
    request: Request | None = None,
) -> Response:
    headers: Mapping[str, str] = CaseInsensitiveDict()
    if content_type is not None:
        headers = CaseInsensitiveDict({"Content-Type": content_type})
    return Response(url, 200, headers, body, request or Request(url))


def codec(name: str) -> str:
    return codecs.lookup(name).name


# -- encoding -------------------------------------------------------------------------------------


def test_encoding_from_the_content_type_header() -> None:
    response = make_response("<p>café</p>".encode("iso-8859-1"), "text/html; charset=ISO-8859-1")
    assert response.text == "<p>café</p>"
    # w3lib reads latin-1 as its superset windows-1252, as browsers do.
    assert codec(response.encoding) == "cp1252"


def test_encoding_from_meta_charset_when_the_header_has_none() -> None:
    body = '<html><head><meta charset="windows-1252"></head><p>Crème €5</p></html>'.encode("cp1252")
    response = make_response(body, "text/html")
    assert codec(response.encoding) == "cp1252"
    assert "Crème €5" in response.text


def test_encoding_defaults_to_utf8() -> None:
    response = make_response("<p>Fjäll Über</p>".encode(), content_type=None)
    assert codec(response.encoding) == "utf-8"
    assert response.text == "<p>Fjäll Über</p>"


def test_header_charset_wins_over_meta_charset() -> None:
    body = '<meta charset="iso-8859-1"><p>Décor</p>'.encode()
    response = make_response(body, "text/html; charset=utf-8")
    assert codec(response.encoding) == "utf-8"
    assert "<p>Décor</p>" in response.text


def test_wrong_header_charset_does_not_raise_and_keeps_the_rest() -> None:
    # The header says UTF-8 but the body is latin-1: undecodable bytes become U+FFFD, nothing raises.
    response = make_response("<p>café ok</p>".encode("iso-8859-1"), "text/html; charset=utf-8")
    assert response.text == "<p>caf\ufffd ok</p>"


def test_unknown_header_charset_falls_back_to_meta_charset() -> None:
    body = '<meta charset="iso-8859-1"><p>café</p>'.encode("iso-8859-1")
    response = make_response(body, "text/html; charset=no-such-charset")
    assert "<p>café</p>" in response.text


def test_byte_order_mark_wins_over_a_wrong_header() -> None:
    response = make_response(codecs.BOM_UTF8 + "<p>café</p>".encode(), "text/html; charset=iso-8859-1")
    assert response.text == "<p>café</p>"


def test_header_names_are_case_insensitive() -> None:
    body = "<p>café</p>".encode("iso-8859-1")
    response = Response(PAGE_URL, 200, {"content-type": "text/html; charset=iso-8859-1"}, body, Request(PAGE_URL))
    assert response.text == "<p>café</p>"


# -- selectors and links --------------------------------------------------------------------------


def test_css_and_xpath_select_from_the_decoded_text() -> None:
    response = make_response(LISTING)
    assert response.css("title::text").get() == "Page 2"
    assert response.xpath("//li[@class='next']/a/@href").get() == "3"
    assert response.css("a.product-link::text").getall() == [" Oak Lamp ", "Steel Mug", "Elsewhere"]
    assert response.xpath("//a[text()=$name]/@href", name="Steel Mug").get() == "../product/8?ref=list#top"


def test_urljoin_resolves_against_the_final_url() -> None:
    response = make_response(b"", url="http://shop.test/catalogue/page/2")
    assert response.urljoin("3") == "http://shop.test/catalogue/page/3"
    assert response.urljoin("/product/1") == "http://shop.test/product/1"
    assert response.urljoin("?sort=price") == "http://shop.test/catalogue/page/2?sort=price"
    assert response.urljoin("https://cdn.test/x") == "https://cdn.test/x"


def test_follow_a_relative_href() -> None:
    request = make_response(LISTING).follow(" ../product/8 ", "parse_product", priority=2, meta={"k": 1})
    assert request.url == "http://shop.test/catalogue/product/8"
    assert request.callback == "parse_product"
    assert request.priority == 2
    assert request.meta == {"k": 1}


def test_follow_an_anchor_selector_uses_its_href() -> None:
    response = make_response(LISTING)
    links = response.css("a.product-link")
    assert [response.follow(link).url for link in links] == [
        "http://shop.test/product/7",
        "http://shop.test/catalogue/product/8?ref=list#top",
        "https://other.test/product/9",
    ]


def test_follow_an_attribute_selector_uses_its_value() -> None:
    response = make_response(LISTING)
    (href,) = response.css("li.next a::attr(href)")
    assert response.follow(href).url == "http://shop.test/catalogue/page/3"


def test_follow_an_element_without_href_is_an_error() -> None:
    response = make_response(b"<div class='x'>no link</div>")
    with pytest.raises(ValueError, match="no href"):
        response.follow(response.css("div.x")[0])


def test_follow_all_keeps_order_and_options() -> None:
    response = make_response(LISTING)
    requests = response.follow_all(response.css("a.product-link"), "parse_product", dont_filter=True)
    assert [request.url.rsplit("/", 1)[-1] for request in requests] == ["7", "8?ref=list#top", "9"]
    assert all(request.callback == "parse_product" and request.dont_filter for request in requests)


def test_follow_accepts_a_bound_method_as_callback() -> None:
    class Shop:
        def parse_product(self, response: Response) -> None: ...

    request = make_response(LISTING).follow("/product/7", Shop().parse_product)
    assert request.callback == "parse_product"


def test_json_body() -> None:
    response = make_response('{"items": [1, 2], "name": "Über"}'.encode(), "application/json")
    assert response.json() == {"items": [1, 2], "name": "Über"}


def test_json_body_that_is_not_json_raises_value_error() -> None:
    with pytest.raises(ValueError):
        make_response(b"<html></html>").json()


def test_meta_comes_from_the_request() -> None:
    request = Request(PAGE_URL, meta={"category": "Lighting", "depth": 2})
    response = make_response(b"", request=request)
    assert response.meta == {"category": "Lighting", "depth": 2}
    assert response.request is request
    assert make_response(b"").meta == {}


# -- items ----------------------------------------------------------------------------------------


class Product(BaseModel):
    id: int
    name: str = Field(min_length=1)
    price: Decimal = Field(ge=0)


def test_dict_item_is_validated_and_serialized_by_the_model() -> None:
    checked = ItemValidator(Product).check({"id": "7", "name": "Café Lamp", "price": "12.50"}, PAGE_URL)
    assert isinstance(checked, str)
    assert json.loads(checked) == {"id": 7, "name": "Café Lamp", "price": "12.50"}
    assert "Café" in checked  # not \u-escaped


def test_invalid_dict_item_is_rejected_naming_fields_and_keeping_data() -> None:
    item = {"id": "seven", "price": "-1"}
    checked = ItemValidator(Product).check(item, PAGE_URL)

    assert isinstance(checked, RejectedItem)
    assert checked.url == PAGE_URL
    assert checked.error.split("; ") == [
        "id: Input should be a valid integer, unable to parse string as an integer",
        "name: Field required",
        "price: Input should be greater than or equal to 0",
    ]
    assert json.loads(checked.data) == item


def test_model_instance_is_serialized_as_is() -> None:
    checked = ItemValidator(Product).check(Product(id=1, name="Mug", price=Decimal("3")), PAGE_URL)
    assert isinstance(checked, str)
    assert json.loads(checked) == {"id": 1, "name": "Mug", "price": "3"}


def test_dict_item_without_a_model_is_kept_as_json() -> None:
    checked = ItemValidator(None).check({"a": [1, {"b": None}], "name": "Über"}, PAGE_URL)
    assert checked == '{"a":[1,{"b":null}],"name":"Über"}'


def test_dict_item_that_is_not_json_is_rejected_with_a_readable_copy() -> None:
    checked = ItemValidator(None).check({"tags": {"a"}, "when": Decimal("1.5")}, PAGE_URL)
    assert isinstance(checked, RejectedItem)
    assert checked.error.startswith("not JSON-serializable: ")
    assert json.loads(checked.data) == {"tags": "{'a'}", "when": "1.5"}


def test_dict_item_with_nan_is_rejected_as_not_json() -> None:
    checked = ItemValidator(None).check({"x": float("nan")}, PAGE_URL)
    assert isinstance(checked, RejectedItem)


# -- Retry-After ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "seconds"),
    [("120", 120.0), ("0", 0.0), ("  7 ", 7.0), ("0.5", 0.5), ("1.25", 1.25)],
)
def test_retry_after_in_seconds(header: str, seconds: float) -> None:
    assert parse_retry_after(header) == seconds


def test_retry_after_http_date_in_the_future() -> None:
    now = 1_700_000_000.0
    assert parse_retry_after(formatdate(now + 30, usegmt=True), now=now) == 30.0


def test_retry_after_http_date_in_the_past_is_zero() -> None:
    now = 1_700_000_000.0
    assert parse_retry_after(formatdate(now - 3600, usegmt=True), now=now) == 0.0


def test_retry_after_http_date_against_the_real_clock() -> None:
    seconds = parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT")
    assert seconds == 0.0


@pytest.mark.parametrize(
    "header", [None, "", "soon", "Wed, 99 Foo 2015", "nan", "inf", "-5", "Wed, 21 Oct 2015 07:28:00 -0000"]
)
def test_retry_after_garbage_is_none(header: str | None) -> None:
    assert parse_retry_after(header) is None


# -- which errors are worth retrying --------------------------------------------------------------

GET = Request("http://shop.test/")
POST = Request("http://shop.test/", method="POST", body=b"x")
SAFE_POST = Request("http://shop.test/", method="POST", body=b"x", idempotent=True)
UNSAFE_GET = Request("http://shop.test/", idempotent=False)


@pytest.mark.parametrize("status", sorted(TRANSIENT_STATUSES))
def test_transient_status_on_get_is_retried(status: int) -> None:
    assert is_transient(HTTPStatusError(GET, status))


@pytest.mark.parametrize("status", [400, 403, 404, 501])
def test_other_statuses_are_not_retried(status: int) -> None:
    assert not is_transient(HTTPStatusError(GET, status))


def test_configured_statuses_replace_the_default_set() -> None:
    assert is_transient(HTTPStatusError(GET, 404), statuses=frozenset({404}))
    assert not is_transient(HTTPStatusError(GET, 503), statuses=frozenset({404}))


def test_server_error_on_post_is_not_retried_unless_marked_idempotent() -> None:
    assert not is_transient(HTTPStatusError(POST, 503))
    assert is_transient(HTTPStatusError(SAFE_POST, 503))
    assert not is_transient(HTTPStatusError(UNSAFE_GET, 503))


def test_429_is_retried_even_for_post() -> None:
    assert is_transient(HTTPStatusError(POST, 429))


def test_connect_errors_are_retried_for_any_method() -> None:
    assert is_transient(ConnectError("refused", POST))
    assert is_transient(ConnectTimeout("slow connect", POST))
    assert is_transient(ConnectError("refused", UNSAFE_GET))


@pytest.mark.parametrize("error_type", [ReadTimeout, ConnectionLost])
def test_errors_after_sending_follow_idempotence(error_type: type[ReadTimeout | ConnectionLost]) -> None:
    assert is_transient(error_type("late", GET))
    assert is_transient(error_type("late", SAFE_POST))
    assert not is_transient(error_type("late", POST))
    assert not is_transient(error_type("late", UNSAFE_GET))


def test_permanent_and_foreign_errors_are_not_retried() -> None:
    assert not is_transient(InvalidRequest("bad url", GET))
    assert not is_transient(ValueError("not ours"))


@pytest.mark.parametrize("method", ["GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"])
def test_idempotent_methods(method: str) -> None:
    assert Request("http://shop.test/", method=method.lower()).is_idempotent


@pytest.mark.parametrize("method", ["POST", "PATCH"])
def test_non_idempotent_methods(method: str) -> None:
    assert not Request("http://shop.test/", method=method).is_idempotent
