"""Where a spider's committed items go, made from the config: its pipelines, its output file
(or standard output) and its sinks, in one ItemFeed (see ``crawler.delivery``)."""

from __future__ import annotations

import hashlib
import inspect
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from ..config import Config, PostgresSinkConfig, SinkConfig, SqliteSinkConfig
from ..delivery import ItemConsumer, ItemFeed
from ..exceptions import ConfigError
from ..exporters import OutputFile, OutputStream, make_format
from ..frontier.base import Frontier
from ..loader import load_object
from ..pipelines import Pipeline, PipelineChain
from ..spider import Spider
from ..stats import Stats
from ..urls import holds_password
from .owner import machine_name

if TYPE_CHECKING:
    from ..parquet import ParquetFile


def load_pipelines(config: Config, index: int) -> list[Pipeline]:
    """The ``[[spiders]] pipelines`` of entry ``index``, made, in order; a reference that does
    not import or is not a pipeline is a config error naming it."""
    pipelines: list[Pipeline] = []
    problems = []
    for position, reference in enumerate(config.spiders[index].pipelines):
        field = f"spiders[{index}].pipelines[{position}]"
        try:
            found = load_object(reference, config.base_dir)
            pipeline = found() if inspect.isclass(found) else found
        except LookupError as error:
            problems.append(f"{field}: {error}")
            continue
        except Exception as error:  # its constructor raised
            problems.append(f"{field}: making {reference} raised {type(error).__name__}: {error}")
            continue
        if not callable(getattr(pipeline, "process", None)):
            problems.append(f"{field}: {reference} is not a pipeline: it has no process(item, spider) method")
            continue
        pipelines.append(pipeline)  # type: ignore[arg-type]  # checked just above
    if problems:
        raise ConfigError(problems)
    return pipelines


def check_sinks(config: Config, index: int, environ: Mapping[str, str]) -> None:
    """Refuse, before anything opens, a sink whose environment variables are not set."""
    problems = []
    for position, sink in enumerate(config.spiders[index].sinks):
        if isinstance(sink, PostgresSinkConfig):
            field = f"spiders[{index}].sinks[{position}]"
            for name, variable in (("url_env", sink.url_env), ("password_env", sink.password_env)):
                if variable is not None and not environ.get(variable):
                    problems.append(f"{field}.{name}: environment variable {variable} is not set")
            if holds_password(environ.get(sink.url_env, "")):
                problems.append(
                    f"{field}.url_env: {sink.url_env} holds a password; put it in the variable password_env names"
                )
    if problems:
        raise ConfigError(problems)


def item_feed(
    config: Config, index: int, spider: Spider, frontier: Frontier, stats: Stats, environ: Mapping[str, str], *,
    pipelines: Sequence[Pipeline], sinks: bool = True,
) -> ItemFeed:
    """The feed of entry ``index``'s items: through ``pipelines`` (its, made by
    ``load_pipelines``) to its output and (with ``sinks``) its sinks."""
    entry = config.spiders[index]
    chain = PipelineChain(pipelines, spider, stats) if pipelines else None
    consumers = [_sink(config, spider, frontier, sink, environ) for sink in entry.sinks] if sinks else []
    return ItemFeed(frontier, output_of(config, spider, frontier), sinks=consumers, pipelines=chain)


def output_of(config: Config, spider: Spider, frontier: Frontier) -> OutputFile | OutputStream | ParquetFile:
    item_format = make_format(config.output, spider)
    if config.output.path == "-":
        return OutputStream(sys.stdout.buffer, item_format)
    path = config.output_path(spider.name)
    if config.output.format == "parquet":
        return parquet_file(path, spider, shared=config.checkpoint.backend == "redis")
    if config.checkpoint.backend == "sqlite":
        return OutputFile(path, frontier, item_format)
    # A checkpoint shared by machines: each machine keeps its own file, with its own progress
    # (under the name the machine goes by in the crawl), written by one of its processes at a time.
    state_key = f"export:{machine_name(config.checkpoint.machine)}:{path}"
    return OutputFile(path, frontier, item_format, state_key=state_key, shared=True)


def parquet_file(path: Path, spider: Spider, *, shared: bool) -> ParquetFile:
    # Imported here: pyarrow is an optional dependency (the parquet extra).
    try:
        from ..parquet import ParquetFile
    except ImportError:
        raise ConfigError(["output.format: \"parquet\" needs pyarrow: pip install 'synccrawl[parquet]'"]) from None
    return ParquetFile(path, spider.item_model, shared=shared)


def _sink(config: Config, spider: Spider, frontier: Frontier, sink: SinkConfig, environ: Mapping[str, str]) -> ItemConsumer:
    target = str(config.resolve(sink.path)) if isinstance(sink, SqliteSinkConfig) else f"${sink.url_env}"
    state_key = f"sink:{sink.type}:{target}:{sink.table}"
    lock = None
    if config.checkpoint.backend == "redis":
        # As with output files: each machine delivers from its own position, one of its
        # processes at a time; with a key, the rows all machines write are each item once.
        state_key = f"sink:{machine_name(config.checkpoint.machine)}:{target}:{sink.table}"
        digest = hashlib.sha256(state_key.encode()).hexdigest()[:16]
        lock = config.resolve(config.checkpoint.path).with_name(f"sink-{digest}.lock")
    fields = dict(frontier=frontier, table=sink.table, key=sink.key, model=spider.item_model, state_key=state_key, lock=lock)
    if isinstance(sink, SqliteSinkConfig):
        from ..sinks.sqlite import SqliteSink

        return SqliteSink(config.resolve(sink.path), **fields)
    # Imported here: psycopg is an optional dependency (the postgres extra), needed only by a
    # crawl that writes to PostgreSQL.
    try:
        from ..sinks.postgres import PostgresSink
    except ImportError:
        raise ConfigError(["sinks: type = \"postgres\" needs psycopg: pip install 'synccrawl[postgres]'"]) from None
    password = environ.get(sink.password_env) if sink.password_env else None
    return PostgresSink(environ[sink.url_env], password, f"${sink.url_env}, table {sink.table}", **fields)
