"""Item pipelines: small steps each committed item passes through, in order, before it reaches
the output file and the sinks.

A pipeline is any object with ``process(item, spider)``, and optionally ``open(spider)`` and
``close(spider)``; config names them per spider by import path (``pipelines = ["myproject.
pipelines:Prices"]``). ``process`` returns the item to pass on (the same dict, changed, or a new
one), or drops it: ``raise DropItem("reason")``, or return None (the reason is then the pipeline's
name). Drops are counted by reason (``dropped:<reason>``) and shown in the summary.

Pipelines run on committed items, in commit order, in the one process that writes the output
(never in worker processes). After a crash they see again the items past the point the output
and sinks had recorded, so a pipeline sees an item at least once; what it passes on reaches each
consumer once (see ``crawler.delivery``). A pipeline that raises anything else has a bug: the
item is dropped as ``dropped:error in <pipeline>`` (it stays in the checkpoint), the traceback is
logged once per pipeline, and the crawl goes on.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from .frontier.base import StoredItem
from .stats import Stats

if TYPE_CHECKING:
    from .spider import Spider

logger = logging.getLogger(__name__)


class DropItem(Exception):
    """Raised by a pipeline's ``process`` to drop the item; ``reason`` is counted."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@runtime_checkable
class Pipeline(Protocol):
    def process(self, item: dict[str, Any], spider: Spider) -> dict[str, Any] | None: ...


def pipeline_name(pipeline: object) -> str:
    return type(pipeline).__qualname__


class PipelineChain:
    """A spider's pipelines, in order, opened once and closed once."""

    def __init__(self, pipelines: Sequence[Pipeline], spider: Spider, stats: Stats) -> None:
        self.pipelines = list(pipelines)
        self.spider = spider
        self.stats = stats
        self._reported: set[str] = set()
        self._opened: list[Pipeline] = []

    def __bool__(self) -> bool:
        return bool(self.pipelines)

    def open(self) -> None:
        for pipeline in self.pipelines:
            if (opening := getattr(pipeline, "open", None)) is not None:
                opening(self.spider)
            self._opened.append(pipeline)

    def close(self) -> None:
        # Each opened pipeline is closed, even when one after it fails to close.
        for pipeline in reversed(self._opened):
            if (closing := getattr(pipeline, "close", None)) is not None:
                try:
                    closing(self.spider)
                except Exception:  # noqa: BLE001 - reported, and the others still close
                    logger.exception("%s: closing pipeline %s failed", self.spider.name, pipeline_name(pipeline))
        self._opened.clear()

    def process(self, batch: list[StoredItem]) -> list[StoredItem]:
        """The items of ``batch`` that pass every pipeline, as their pipelines left them."""
        if not self.pipelines:
            return batch
        passed = []
        for stored in batch:
            item: dict[str, Any] | None = json.loads(stored.data)
            for pipeline in self.pipelines:
                item = self._one(pipeline, item)
                if item is None:
                    break
            if item is not None:
                passed.append(StoredItem(stored.id, json.dumps(item, ensure_ascii=False, default=str)))
        return passed

    def _one(self, pipeline: Pipeline, item: dict[str, Any]) -> dict[str, Any] | None:
        name = pipeline_name(pipeline)
        try:
            result = pipeline.process(item, self.spider)
        except DropItem as drop:
            self.stats.inc(f"dropped:{drop.reason}")
            return None
        except Exception:  # noqa: BLE001 - a bug in the pipeline: counted, logged once, crawl goes on
            self.stats.inc(f"dropped:error in {name}")
            if name not in self._reported:
                self._reported.add(name)
                logger.exception("%s: pipeline %s raised; its items are dropped (counted)", self.spider.name, name)
            return None
        if result is None:
            self.stats.inc(f"dropped:{name}")
            return None
        if not isinstance(result, dict):
            self.stats.inc(f"dropped:error in {name}")
            if name not in self._reported:
                self._reported.add(name)
                logger.error("%s: pipeline %s returned a %s, not a dict; its items are dropped (counted)",
                             self.spider.name, name, type(result).__name__)
            return None
        return result
