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
