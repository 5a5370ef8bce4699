"""CSV output from real crawls of the practice site: which columns, how values are written, resume."""

from __future__ import annotations

import csv
import logging
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from crawler.config import Config
from crawler.exceptions import ConfigError
from crawler.practice import PracticeSite, product
from crawler.runner import run_crawl
from helpers import interrupt_when

# Items of two shapes, like the members spider's pages and API items: the home and listing pages
# come first (so they are what the first item looks like), the products after them.
SHAPES_SPIDER = """
from pydantic import BaseModel

from crawler import Request, Spider


class Page(BaseModel):
    kind: str
    url: str
    name: str | None = None
    price: str | None = None
    page: int | None = None


class Shapes(Spider):
    name = "shapes"
    start_url = ""

    def start_requests(self):
        yield Request(self.start_url, callback=self.parse)

    def parse(self, response):
        yield {"kind": "listing", "url": response.url, "page": int(response.css("span.current::text").get("0"))}
        yield from response.follow_all(response.css("a.catalogue, li.next a"), self.parse)
        yield from response.follow_all(response.css("a.product-link"), self.parse_product)

    def parse_product(self, response):
        yield {
            "kind": "product",
            "url": response.url,
            "name": response.css("h1.name::text").get(),
            "price": response.css("span.price::text").get(),
        }


class ModelShapes(Shapes):
    name = "model_shapes"
    item_model = Page
"""

MODEL_COLUMNS = ["kind", "url", "name", "price", "page"]

VALUES = {
    "tags": ["a", "é", 'say "hi"'],
    "dims": {"w": 2, "h": [1.5, None]},
    "none": None,
    "yes": True,
    "no": False,
    "count": 3,
    "ratio": 0.1,
    "huge": 1e20,
    "empty": "",
    "text": 'comma, "quote"\nand a line break',
    "nothing": [],
}

VALUES_SPIDER = f"""
from crawler import Spider


class Values(Spider):
    name = "values"
    size = 0

    def parse(self, response):
        yield {{"url": response.url, **{VALUES!r}, "big": "x" * self.size}}
"""

DEFAULT_FIELD_SIZE_LIMIT = 131072


@pytest.fixture
def field_size_limit() -> Iterator[None]:
    """The csv module's limit is process-wide: put it back after the test."""
    before = csv.field_size_limit()
    yield
    csv.field_size_limit(before)


def csv_config(spider_config, site: PracticeSite, spider: str, output: str = "") -> Config:
    """A config running ``spider`` from SHAPES_SPIDER with CSV output; ``output`` adds ``[output]`` keys."""
    return spider_config(spider, SHAPES_SPIDER, 'format = "csv"\n' + output, module="shapes", start_url=f"{site.url}/")


def read_csv(config: Config, spider: str) -> tuple[list[str], list[dict[str, str]]]:
    with config.output_path(spider).open(encoding="utf-8", newline="") as file:
        header, *rows = csv.reader(file)
    assert header not in rows, "the header row appears again inside the file"
    return header, [dict(zip(header, row, strict=True)) for row in rows]


def product_id(row: dict[str, str]) -> int:
    return int(row["url"].rsplit("/", 1)[1])


def products_of(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    return [row for row in rows if row["kind"] == "product"]


def no_column_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records if "no column for" in record.getMessage()]


# -- which columns ---------------------------------------------------------------------------------


def test_without_model_or_fields_the_first_item_decides_and_the_rest_is_reported(
    site: PracticeSite, spider_config, caplog: pytest.LogCaptureFixture
) -> None:
    config = csv_config(spider_config, site, "shapes")
    with caplog.at_level(logging.WARNING, logger="crawler"):
        run_crawl(config)

    header, rows = read_csv(config, "shapes")
    assert header == ["kind", "url", "page"]
    assert len(products_of(rows)) == 120
    [warning] = no_column_warnings(caplog)  # once, not once per item
    assert "'shapes'" in warning and "name" in warning and "price" in warning


def test_with_an_item_model_every_items_fields_have_a_column(
    site: PracticeSite, spider_config, caplog: pytest.LogCaptureFixture
) -> None:
    config = csv_config(spider_config, site, "model_shapes")
    with caplog.at_level(logging.WARNING, logger="crawler"):
        run_crawl(config)

    header, rows = read_csv(config, "model_shapes")
    assert header == MODEL_COLUMNS
    products = products_of(rows)
    assert sorted(map(product_id, products)) == list(range(1, 121))
    for row in products:
        assert (row["name"], row["price"]) == (product(product_id(row))["name"], product(product_id(row))["price"])
        assert row["page"] == ""  # None
    assert {row["page"] for row in rows if row["kind"] == "listing"} == {"0", "1", "2", "3", "4", "5", "6"}
    assert not no_column_warnings(caplog)


def test_output_fields_are_the_columns_without_a_model(
    site: PracticeSite, spider_config, caplog: pytest.LogCaptureFixture
) -> None:
    config = csv_config(spider_config, site, "shapes", 'fields = ["url", "name", "price", "kind"]\n')
    with caplog.at_level(logging.WARNING, logger="crawler"):
        run_crawl(config)

    header, rows = read_csv(config, "shapes")
    assert header == ["url", "name", "price", "kind"]
    for row in products_of(rows):
        assert row["name"] == product(product_id(row))["name"]
    # `page` was left out on purpose: listing it or not is the user's choice, not a loss to report.
    assert not no_column_warnings(caplog)


def test_output_fields_pick_and_order_the_models_columns(site: PracticeSite, spider_config) -> None:
    config = csv_config(spider_config, site, "model_shapes", 'fields = ["price", "url"]\n')
    run_crawl(config)

    header, rows = read_csv(config, "model_shapes")
    assert header == ["price", "url"]
    assert len(rows) == 1 + 6 + 120


def test_output_fields_the_model_does_not_have_stop_the_run_in_one_line(site: PracticeSite, spider_config) -> None:
    config = csv_config(spider_config, site, "model_shapes", 'fields = ["url", "nmae"]\n')
    with pytest.raises(ConfigError) as raised:
        run_crawl(config)

    [problem] = raised.value.problems
    assert problem.startswith("output.fields: ")
    assert "'nmae'" in problem and "model_shapes" in problem and "kind, url, name, price, page" in problem
    assert not config.output_path("model_shapes").exists()
    assert site.counters.requests == 0


# -- how values are written ------------------------------------------------------------------------


def test_lists_and_dicts_are_json_none_is_empty_and_scalars_are_json_text(site: PracticeSite, spider_config) -> None:
    config = spider_config("values", VALUES_SPIDER, 'format = "csv"\n', start_urls=[f"{site.url}/"])
    run_crawl(config)

    header, [row] = read_csv(config, "values")
    assert header == ["url", *VALUES, "big"]
    assert row["tags"] == '["a","é","say \\"hi\\""]'
    assert row["dims"] == '{"w":2,"h":[1.5,null]}'
    assert row["nothing"] == "[]"
    assert (row["none"], row["empty"]) == ("", "")
    assert (row["yes"], row["no"]) == ("true", "false")
    assert (row["count"], row["ratio"], row["huge"]) == ("3", "0.1", "1e+20")
    assert row["text"] == VALUES["text"]


def test_a_field_over_the_csv_readers_default_limit_reads_back(
    site: PracticeSite, spider_config, field_size_limit: None
) -> None:
    size = 2 * DEFAULT_FIELD_SIZE_LIMIT
    config = spider_config("values", VALUES_SPIDER, 'format = "csv"\n', start_urls=[f"{site.url}/"], size=size)
    run_crawl(config)

    csv.field_size_limit(DEFAULT_FIELD_SIZE_LIMIT)
    with pytest.raises(csv.Error, match="field larger than field limit"):
        read_csv(config, "values")
    csv.field_size_limit(2**31 - 1)  # what the README tells users to do
    _, [row] = read_csv(config, "values")
    assert row["big"] == "x" * size


# -- resume ----------------------------------------------------------------------------------------


def test_a_resumed_crawl_keeps_the_header_and_columns_it_started_with(
    spider_config, caplog: pytest.LogCaptureFixture
) -> None:
    with PracticeSite(products=60, latency=0.03) as slow_site:
        config = csv_config(spider_config, slow_site, "model_shapes")
        watcher = interrupt_when(lambda: slow_site.counters.requests >= 20)
        first = run_crawl(config)
        watcher.join()
        assert first.interrupted
        _, before = read_csv(config, "model_shapes")
        assert 0 < len(before) < 1 + 3 + 60

        # Changing the columns mid-crawl would put a second, different header inside the file.
        config = csv_config(spider_config, slow_site, "model_shapes", 'fields = ["url", "name"]\n')
        with caplog.at_level(logging.WARNING, logger="crawler"):
            second = run_crawl(config)

    assert second.results[0].finished
    header, rows = read_csv(config, "model_shapes")
    assert header == MODEL_COLUMNS
    assert rows[: len(before)] == before
    assert sorted(map(product_id, products_of(rows))) == list(range(1, 61))
    assert len(rows) == 1 + 3 + 60
    [kept] = [record.getMessage() for record in caplog.records if "started with the columns" in record.getMessage()]
    assert "kind, url, name, price, page" in kept and "--fresh" in kept


# -- checking output.fields ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("output", "message"),
    [
        ('format = "csv"\nfields = []\n', "must name at least one field"),
        ('format = "csv"\nfields = ["url", "name", "url"]\n', "listed more than once: url"),
        ('format = "csv"\nfields = ["url", " "]\n', "field names must not be empty"),
        ('format = "csv"\nfields = "url"\n', "must be a valid list"),
        ('format = "csv"\nfields = ["url", 1]\n', "must be a valid string"),
        ('fields = ["url"]\n', 'only used with format = "csv"'),
    ],
)
def test_bad_output_fields_are_one_line_naming_the_field(spider_config, output: str, message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        spider_config("shapes", SHAPES_SPIDER, output, module="shapes", start_url="http://127.0.0.1:9/")
    [problem] = raised.value.problems
    assert problem.split(": ", 1)[1].startswith("output.fields")
    assert problem.endswith(message)


def test_crawler_check_names_output_fields(spider_config, tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        spider_config("shapes", SHAPES_SPIDER, 'format = "csv"\nfields = ["url", "url"]\n', module="shapes")
    done = subprocess.run(
        [sys.executable, "-m", "crawler.cli", "check", "config.toml"],
        cwd=tmp_path, capture_output=True, text=True, encoding="utf-8", timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr.splitlines() == ["config.toml: output.fields: listed more than once: url"]


def test_crawler_check_finds_output_fields_the_item_model_does_not_have(site: PracticeSite, spider_config, tmp_path: Path) -> None:
    csv_config(spider_config, site, "model_shapes", 'fields = ["url", "nmae"]\n')
    done = subprocess.run(
        [sys.executable, "-m", "crawler.cli", "check", "config.toml"],
        cwd=tmp_path, capture_output=True, text=True, encoding="utf-8", timeout=60,
    )
    assert done.returncode == 2
    [line] = done.stderr.splitlines()
    assert line.startswith("output.fields: no field 'nmae' in ") and "model_shapes" in line
