"""The one URL form's limits beyond the WHATWG parse (tests/test_credential_scope.py has the
table of tricky URLs, checked against what servers received)."""

from __future__ import annotations

import pytest

from crawler.exceptions import MalformedURL
from crawler.urls import normalize_url


@pytest.mark.parametrize(
    "url",
    ["http://" + "a" * 64 + ".example/", "http://" + ".".join(["abcdefghi"] * 26) + "/"],
    ids=["label-over-63", "name-over-253"],
)
def test_a_host_name_dns_cannot_carry_is_malformed(url: str) -> None:
    with pytest.raises(MalformedURL) as refused:
        normalize_url(url)
    assert refused.value.reason == "host name too long"


def test_the_longest_names_dns_carries_are_kept() -> None:
    label = "a" * 63
    assert normalize_url(f"http://{label}.example/") == f"http://{label}.example/"
    name = ".".join(["abcdefghi"] * 25)  # 249 characters
    assert normalize_url(f"https://{name}:8443/x") == f"https://{name}:8443/x"


BASES = [
    "http://example.com/a/b/page.html?q=1#frag",
    "https://example.com:8443/deep/er/",
    "http://127.0.0.2:8080",
    "http://[::1]:8000/x?y#z",
    "https://xn--bcher-kva.example/b%C3%BCcher/",
    "http://example.com?only=query",
    "http://example.com#only-fragment",
]
ABSOLUTE_PATHS = [
    "/", "/product/1.html", "/a/../b/./c", "/../../up", "/x?y=1&z=%41#top", "/with space/ü", "/%2e%2e/enc",
    "/;params", "/a//b", "/?", "/#", "/x?#f", "/x#", "/x#a?", "/x?a#",
]


@pytest.mark.parametrize("base", BASES)
def test_an_absolute_path_resolves_as_urljoin_resolves_it(base: str) -> None:
    # Links that are absolute paths take a short way to their base's origin; it must land where
    # RFC 3986 resolution (urljoin) does, for every base shape.
    from urllib.parse import urljoin

    base = normalize_url(base)
    for path in ABSOLUTE_PATHS:
        assert normalize_url(path, base) == normalize_url(urljoin(base, path)), path


@pytest.mark.parametrize("reference", ["//other.example/x", "page.html", "../up", "?q", "#f", ""])
def test_other_references_resolve_as_urljoin_resolves_them(reference: str) -> None:
    from urllib.parse import urljoin

    base = normalize_url(BASES[0])
    assert normalize_url(reference, base) == normalize_url(urljoin(base, reference))


def test_an_absolute_path_keeps_the_refusals_of_any_link() -> None:
    base = normalize_url(BASES[0])
    for path, reason in (("/a\\b", "backslash"), ("/a\tb", "control character")):
        with pytest.raises(MalformedURL) as refused:
            normalize_url(path, base)
        assert refused.value.reason == reason
