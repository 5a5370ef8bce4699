"""Crawl state backends behind one contract (see ``base``): SQLite, the embedded default."""

from .base import Completion, Frontier, FrontierCounts, Lease, Pending, State
from .sqlite import Checkpoint, SQLiteFrontier

__all__ = ["Checkpoint", "Completion", "Frontier", "FrontierCounts", "Lease", "Pending", "SQLiteFrontier", "State"]
