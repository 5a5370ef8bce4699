"""Where committed items go: pipelines (change, drop, pass), the JSON and Parquet output files,
and the SQLite and PostgreSQL sinks, in real crawls of the practice site and against a real
PostgreSQL server (tests/postgres_server.py). Kill -9 loops for these are in
tests/test_crash_safety.py."""

from __future__ import annotations

import json
import sqlite3
import textwrap
from decimal import Decimal
from pathlib import Path

import psycopg
import pyarrow.parquet as pq
import pytest

from crawler.config import Config, load_config
from crawler.exceptions import ConfigError
from crawler.practice import PracticeSite
from crawler.runner import export_outputs, run_crawl
from crawler.sinks.base import SinkError
from postgres_server import PASSWORD_ROLE, ROLE_PASSWORD, PostgresServer
from test_cli import assert_clean_failure, crawler_cli

REPO = Path(__file__).resolve().parent.parent
PRODUCTS = 120  # the `site` fixture's catalogue

PIPELINES = """
import json
from crawler import DropItem


class Dearest:
    '''Drops the dear ones, with a reason.'''

    def process(self, item, spider):
        if float(item["price"]) >= 400:
            raise DropItem("price of 400 or more")
        return item


class Labelled:
    '''Changes every item it passes, and says when it was opened and closed.'''

    def open(self, spider):
        self.seen = 0
        with open("events.txt", "a") as events:
            events.write(f"open {spider.name}\\n")

    def process(self, item, spider):
        self.seen += 1
        item["name"] = item["name"].upper()
        return item

    def close(self, spider):
        with open("events.txt", "a") as events:
            events.write(f"close {self.seen}\\n")


class Odd:
    '''Drops the items with an even id by returning None.'''

    def process(self, item, spider):
        return item if item["id"] % 2 else None


class Broken:
    def process(self, item, spider):
        if item["id"] == 7:
            raise KeyError("no such field")
        return item
"""


def project(folder: Path, site: PracticeSite, extra: str = "", *, entry: str = "", fmt: str = "jsonl") -> Config:
    """The shipped products spider over ``site``, with pipelines.py beside it."""
    (folder / "spiders").mkdir(exist_ok=True)
    (folder / "spiders" / "__init__.py").touch()
    (folder / "spiders" / "products.py").write_text((REPO / "spiders" / "products.py").read_text())
    (folder / "pipelines.py").write_text(PIPELINES)
    (folder / "config.toml").write_text(textwrap.dedent(f"""
        [[spiders]]
        spider = "products"
        args = {{ start_url = "{site.url}/" }}
        {textwrap.dedent(entry)}

        [output]
        format = "{fmt}"
        path = "out/{{spider}}.{{format}}"

        [checkpoint]
        path = "state/checkpoint.db"
        """) + textwrap.dedent(extra))
    return load_config(folder / "config.toml")


def catalogue(site: PracticeSite) -> dict[int, dict[str, object]]:
    """Every product the site serves, as the products spider's items have it."""
    from crawler.practice import product

    items = {}
    for number in range(1, PRODUCTS + 1):
        data = product(number)
        items[number] = {**data, "price": str(data["price"]), "url": f"{site.url}/product/{number}"}
    return items


def jsonl(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# -- pipelines --------------------------------------------------------------------------------------


def test_pipelines_run_in_order_and_change_drop_or_pass_each_item(tmp_path: Path, site: PracticeSite, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # Labelled writes events.txt here
    config = project(tmp_path, site, entry='pipelines = ["pipelines:Dearest", "pipelines:Labelled", "pipelines:Odd"]')
    report = run_crawl(config)
    want = {
        number: {**item, "name": str(item["name"]).upper()}
        for number, item in catalogue(site).items()
        if Decimal(str(item["price"])) < 400 and number % 2
    }
    got = jsonl(tmp_path / "out" / "products.jsonl")
    assert sorted(got, key=lambda item: int(item["id"])) == [want[number] for number in sorted(want)]
    dear = sum(1 for item in catalogue(site).values() if Decimal(str(item["price"])) >= 400)
    assert report.stats["dropped:price of 400 or more"] == dear
    assert report.stats["dropped:Odd"] == PRODUCTS - dear - len(want)
    # Labelled saw only what Dearest passed; opened once, closed once, at the end.
    assert (tmp_path / "events.txt").read_text() == f"open products\nclose {PRODUCTS - dear}\n"
    # The checkpoint keeps every item as the spider yielded it: only the output is changed.
    assert report.whole_crawl.items == PRODUCTS


def test_a_pipeline_that_raises_drops_that_item_counted_and_the_crawl_goes_on(tmp_path: Path, site: PracticeSite) -> None:
    config = project(tmp_path, site, entry='pipelines = ["pipelines:Broken"]')
    report = run_crawl(config)
    assert report.stats["dropped:error in Broken"] == 1
    ids = sorted(int(item["id"]) for item in jsonl(tmp_path / "out" / "products.jsonl"))
    assert ids == [number for number in range(1, PRODUCTS + 1) if number != 7]
    assert report.results[0].finished


def test_a_pipeline_that_does_not_import_or_is_not_one_is_one_line_each(tmp_path: Path, site: PracticeSite) -> None:
    project(tmp_path, site, entry='pipelines = ["pipelines:Missing", "json:dumps", "nowhere:Thing"]')
    lines = assert_clean_failure(crawler_cli("check", "config.toml", cwd=tmp_path), 2)
    assert lines[0] == "spiders[0].pipelines[0]: cannot import pipelines:Missing: pipelines has no Missing"
    assert lines[1] == "spiders[0].pipelines[1]: json:dumps is not a pipeline: it has no process(item, spider) method"
    assert lines[2].startswith("spiders[0].pipelines[2]: cannot import nowhere:Thing: No module named 'nowhere'")


def test_crawler_export_writes_the_file_through_the_pipelines(tmp_path: Path, site: PracticeSite) -> None:
    config = project(tmp_path, site, entry='pipelines = ["pipelines:Odd"]')
    run_crawl(config)
    output = tmp_path / "out" / "products.jsonl"
    written = output.read_text()
    output.unlink()
    (exported,) = export_outputs(config)
    assert exported.written == PRODUCTS // 2 and output.read_text() == written


# -- JSON and Parquet files ------------------------------------------------------------------------


def test_the_json_output_is_one_array_of_every_item(tmp_path: Path, site: PracticeSite) -> None:
    config = project(tmp_path, site, fmt="json")
    run_crawl(config)
    items = json.loads((tmp_path / "out" / "products.json").read_text())
    assert sorted(items, key=lambda item: item["id"]) == list(catalogue(site).values())


def test_the_parquet_output_has_the_models_columns_and_every_item(tmp_path: Path, site: PracticeSite) -> None:
    config = project(tmp_path, site, fmt="parquet")
    run_crawl(config)
    path = tmp_path / "out" / "products.parquet"
    table = pq.read_table(path)
    assert table.schema.names == ["id", "name", "price", "sku", "category", "description", "stock", "rating", "url"]
    assert str(table.schema.field("id").type) == "int64" and str(table.schema.field("price").type) == "string"
    assert sorted(table.to_pylist(), key=lambda row: row["id"]) == list(catalogue(site).values())
    assert not path.with_name("products.parquet.partial").exists()
    # Run again: the file is written whole again, from the checkpoint, each item once.
    run_crawl(config)
    assert pq.read_table(path).num_rows == PRODUCTS


# -- SQLite sink ------------------------------------------------------------------------------------


SQLITE_SINK = """
[[spiders.sinks]]
type = "sqlite"
path = "out/items.db"
table = "products"
key = "id"
"""


def test_a_sqlite_sink_gets_a_table_from_the_model_and_upserts_by_key(tmp_path: Path, site: PracticeSite) -> None:
    config = project(tmp_path, site, entry=SQLITE_SINK)
    run_crawl(config)
    run_crawl(config, fresh=True)  # the same items again: upserted, not added
    with sqlite3.connect(tmp_path / "out" / "items.db") as db:
        columns = [(row[1], row[2], row[5]) for row in db.execute("PRAGMA table_info(products)")]
        rows = db.execute("SELECT * FROM products ORDER BY id").fetchall()
    assert columns[0] == ("id", "INTEGER", 1) and ("price", "TEXT", 0) in columns and ("stock", "INTEGER", 0) in columns
    names = [name for name, _, _ in columns]
    assert [dict(zip(names, row)) for row in rows] == list(catalogue(site).values())


def test_a_given_sqlite_table_needs_the_items_columns_and_a_unique_key(tmp_path: Path, site: PracticeSite) -> None:
    (tmp_path / "out").mkdir()
    with sqlite3.connect(tmp_path / "out" / "items.db") as db:
        db.execute("CREATE TABLE products (id INTEGER, name TEXT)")
    config = project(tmp_path, site, entry=SQLITE_SINK)
    with pytest.raises(SinkError) as failure:
        run_crawl(config)
    assert "table products has no columns price, sku, category, description, stock, rating, url" in str(failure.value)


# -- PostgreSQL sink --------------------------------------------------------------------------------


def postgres_sink(table: str = "products", *, key: str | None = "id", password: bool = False) -> str:
    return textwrap.dedent(f"""
        [[spiders.sinks]]
        type = "postgres"
        url_env = "TEST_SINK_URL"
        {'password_env = "TEST_SINK_PASSWORD"' if password else ''}
        table = "{table}"
        {f'key = "{key}"' if key else ''}
        """)


def table_rows(url: str, table: str) -> list[dict[str, object]]:
    with psycopg.connect(url) as db, db.cursor() as cursor:
        cursor.execute(f"SELECT * FROM {table} ORDER BY id")
        names = [column.name for column in cursor.description or ()]
        return [dict(zip(names, row)) for row in cursor.fetchall()]


def test_a_postgres_sink_makes_a_typed_table_and_upserts_by_key(
    tmp_path: Path, site: PracticeSite, postgres_server: PostgresServer, monkeypatch
) -> None:
    url = postgres_server.new_database()
    monkeypatch.setenv("TEST_SINK_URL", url)
    config = project(tmp_path, site, entry=postgres_sink())
    run_crawl(config)
    run_crawl(config, fresh=True)
    with psycopg.connect(url) as db:
        types = dict(db.execute(
            "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = 'products'"
        ).fetchall())
    assert types["id"] == "bigint" and types["price"] == "numeric" and types["name"] == "text"
    want = [{**item, "price": Decimal(str(item["price"]))} for item in catalogue(site).values()]
    assert table_rows(url, "products") == want


def test_a_postgres_sink_logs_in_with_the_password_from_the_environment(
    tmp_path: Path, site: PracticeSite, postgres_server: PostgresServer, monkeypatch
) -> None:
    database = postgres_server.new_database().rpartition("/")[2]
    url = f"postgresql://{PASSWORD_ROLE}@127.0.0.1:{postgres_server.port}/{database}"
    monkeypatch.setenv("TEST_SINK_URL", url)
    monkeypatch.setenv("TEST_SINK_PASSWORD", "not-it")
    config = project(tmp_path, site, entry=postgres_sink(password=True))
    with pytest.raises(SinkError) as failure:
        run_crawl(config)
    assert "password authentication failed" in str(failure.value) and "not-it" not in str(failure.value)
    monkeypatch.setenv("TEST_SINK_PASSWORD", ROLE_PASSWORD)
    run_crawl(config)
    assert len(table_rows(postgres_server.url(database), "products")) == PRODUCTS
    # The password reached the server, and nothing the crawl keeps.
    for file in (tmp_path / "state").iterdir():
        assert ROLE_PASSWORD.encode() not in file.read_bytes(), file


def test_postgres_settings_are_checked_before_the_crawl(tmp_path: Path, site: PracticeSite) -> None:
    project(tmp_path, site, entry=postgres_sink(password=True))
    unset = crawler_cli("check", "config.toml", cwd=tmp_path,
                        environ={"TEST_SINK_URL": "", "TEST_SINK_PASSWORD": ""})
    assert assert_clean_failure(unset, 2) == [
        "spiders[0].sinks[0].url_env: environment variable TEST_SINK_URL is not set",
        "spiders[0].sinks[0].password_env: environment variable TEST_SINK_PASSWORD is not set",
    ]
    inline = crawler_cli("check", "config.toml", cwd=tmp_path,
                         environ={"TEST_SINK_URL": "postgresql://u:pw@127.0.0.1/db", "TEST_SINK_PASSWORD": "x"})
    (line,) = assert_clean_failure(inline, 2)
    assert line == "spiders[0].sinks[0].url_env: TEST_SINK_URL holds a password; put it in the variable password_env names"
    assert "pw@" not in inline.err


def test_a_sink_table_named_by_the_config_must_be_a_plain_name() -> None:
    with pytest.raises(ConfigError) as failure:
        Config.with_base_dir(
            {"spiders": [{"spider": "x", "sinks": [{"type": "sqlite", "path": "a.db", "table": "x; DROP TABLE y"}]}]},
            Path("."), "test",
        )
    assert failure.value.problems[0].startswith("test: spiders[0].sinks[0].sqlite.table:")
