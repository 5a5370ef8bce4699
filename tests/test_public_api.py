"""The public surface of ``crawler``: it changes only on purpose."""

from __future__ import annotations

import importlib
import importlib.metadata
import logging
import re

import crawler

EXPECTED_PUBLIC_NAMES = {
    "CrawlerError",
    "DropItem",
    "FetchError",
    "HeaderAuth",
    "LinkExtractor",
    "LoginFailed",
    "Request",
    "Response",
    "Rule",
    "Spider",
    "__version__",
    "accepts",
    "crawl",
}


def test_all_is_sorted() -> None:
    assert crawler.__all__ == sorted(crawler.__all__)


def test_all_is_exactly_the_expected_surface() -> None:
    assert len(crawler.__all__) == len(set(crawler.__all__))
    assert set(crawler.__all__) == EXPECTED_PUBLIC_NAMES


def test_every_public_name_is_importable() -> None:
    module = importlib.import_module("crawler")
    for name in crawler.__all__:
        assert getattr(module, name) is not None, name
    namespace: dict[str, object] = {}
    exec("from crawler import *", namespace)  # noqa: S102 - exercising the star import itself
    assert EXPECTED_PUBLIC_NAMES <= namespace.keys()


def test_public_classes_come_from_their_home_modules() -> None:
    from crawler.exceptions import CrawlerError, FetchError
    from crawler.request import Request
    from crawler.response import Response
    from crawler.spider import Spider

    assert (crawler.CrawlerError, crawler.FetchError) == (CrawlerError, FetchError)
    assert (crawler.Request, crawler.Response, crawler.Spider) == (Request, Response, Spider)
    assert issubclass(crawler.FetchError, crawler.CrawlerError)
    from crawler.links import LinkExtractor, Rule
    from crawler.pipelines import DropItem

    assert (crawler.LinkExtractor, crawler.Rule, crawler.DropItem) == (LinkExtractor, Rule, DropItem)


def test_version_is_a_release_number_matching_the_package_metadata() -> None:
    assert re.fullmatch(r"\d+\.\d+\.\d+", crawler.__version__)
    assert crawler.__version__ == importlib.metadata.version("synccrawl")


def test_package_logger_has_a_null_handler() -> None:
    logger = logging.getLogger("crawler")
    assert any(isinstance(handler, logging.NullHandler) for handler in logger.handlers)
    # Only the CLI configures logging: importing the library adds no handler that prints.
    assert all(isinstance(handler, logging.NullHandler) for handler in logger.handlers)


def test_names_outside_the_public_api_are_not_found_on_the_package() -> None:
    # The package imports its public names on first use; anything else is still an error.
    try:
        crawler.no_such_name  # noqa: B018
    except AttributeError as error:
        assert "no_such_name" in str(error)
    else:
        raise AssertionError("crawler.no_such_name was found")
