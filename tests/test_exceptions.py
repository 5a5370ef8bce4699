"""Every error the framework raises survives pickling with what it carries: a crawl's errors
cross process boundaries (worker processes hand failures to the one that commits them)."""

from __future__ import annotations

import inspect
import pickle

import pytest

from crawler import exceptions
from crawler.http.fetcher import Redirected, UnwantedContent
from crawler.request import Request

REQUEST = Request("https://example.com/page", "parse", meta={"depth": 2})

# Constructor arguments for each error class that takes more than a message.
ARGUMENTS: dict[type[BaseException], tuple[object, ...]] = {
    exceptions.ConfigError: (["config.toml: http.timeout.read: must be greater than 0", "second problem"],),
    exceptions.CheckpointInUse: ("/tmp/checkpoint.db", "host:1234"),
    exceptions.MalformedURL: ("http://a\\b/", "a backslash before the query"),
    exceptions.SpiderError: ("products", "start_requests", "ValueError: no"),
    exceptions.HTTPStatusError: (REQUEST, 503, 2.5),
}


def error_classes() -> list[type[BaseException]]:
    found = [value for value in vars(exceptions).values()
             if inspect.isclass(value) and issubclass(value, exceptions.CrawlerError)]
    return found + [Redirected, UnwantedContent]


def example(cls: type[BaseException]) -> BaseException:
    if cls in ARGUMENTS:
        return cls(*ARGUMENTS[cls])
    if cls is Redirected:
        return cls(REQUEST)
    if cls is UnwantedContent:
        return cls("application/pdf")
    if issubclass(cls, exceptions.FetchError):
        return cls("read timeout: 30s", REQUEST)
    return cls("what went wrong")


@pytest.mark.parametrize("cls", error_classes(), ids=lambda cls: cls.__name__)
def test_an_error_survives_pickling_with_what_it_carries(cls: type[BaseException]) -> None:
    error = example(cls)
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is cls
    assert str(copy) == str(error)
    assert vars(copy) == vars(error)
