"""Committed items on their way out: through the spider's pipelines, to each of its consumers
(the output file or stream, and the sinks), in commit order, each from its own recorded position.

Items are committed to the checkpoint first. A consumer writes a batch, makes it durable (the
file synced to disk, the database transaction committed), and only then records, in the
checkpoint, the last item id it has: after kill -9 it is handed the items past that id again.
So a file (which also records its length, and cuts off what came after) holds each item exactly
once, and a sink receives each item again at most from its last recorded position: with a key to
upsert by, a table ends with each item exactly once.

The pipelines run once per item per pass, on the items the consumer furthest behind still needs;
a consumer already past an item skips it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from .exporters import OutputFile, OutputStream
from .frontier.base import Frontier, StoredItem
from .pipelines import PipelineChain

if TYPE_CHECKING:
    from .parquet import ParquetFile

# Items read from the checkpoint at a time: one transaction of a sink, one append to a file.
BATCH = 2000


class ItemConsumer(Protocol):
    """Where committed items go: an output file, standard output, a database table."""

    @property
    def position(self) -> int:
        """The last item id it holds, as recorded in the checkpoint (0: none yet)."""

    def ready(self) -> bool:
        """Whether it takes items now (a file another process writes in turn does not)."""

    def write(self, items: list[StoredItem], up_to: int) -> int:
        """Make ``items`` (the committed ones up to id ``up_to`` that passed the pipelines, and
        are past ``position``) durable, then record ``up_to`` as its position; how many it wrote."""

    def close(self) -> None: ...


class ItemFeed:
    """One spider's committed items, through its pipelines, to its consumers.

    ``output`` is the output file (or stream), whose count ``sync`` returns; ``sinks`` the
    others. Pipelines are opened here, and everything is closed by ``close``.
    """

    def __init__(
        self, frontier: Frontier, output: OutputFile | OutputStream | ParquetFile, *, sinks: Sequence[ItemConsumer] = (),
        pipelines: PipelineChain | None = None,
    ) -> None:
        self.frontier = frontier
        self.output = output
        self.sinks = list(sinks)
        self.pipelines = pipelines
        if pipelines is not None:
            pipelines.open()

    @property
    def path(self) -> Path:
        return self.output.path

    @property
    def writing(self) -> bool:
        """Whether this process writes the output file (see ``OutputFile.writing``)."""
        return self.output.writing

    def sync(self) -> int:
        """Bring every consumer that is ready up to the checkpoint's committed items; how many
        items the output received."""
        consumers = [consumer for consumer in (self.output, *self.sinks) if consumer.ready()]
        if not consumers:
            return 0
        written = 0
        start = min(consumer.position for consumer in consumers)
        while batch := self.frontier.items_after(start, BATCH):
            up_to = batch[-1].id
            passed = self.pipelines.process(batch) if self.pipelines else batch
            for consumer in consumers:
                if consumer.position >= up_to:
                    continue
                count = consumer.write([item for item in passed if item.id > consumer.position], up_to)
                if consumer is self.output:
                    written += count
            start = up_to
        return written

    def close(self) -> None:
        with contextlib.ExitStack() as closing:
            # Every consumer is closed, and the pipelines last, whichever fails first.
            if self.pipelines is not None:
                closing.callback(self.pipelines.close)
            for consumer in (self.output, *self.sinks):
                closing.callback(consumer.close)
