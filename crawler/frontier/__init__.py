"""Crawl state backends behind one contract (see ``base``): SQLite, the embedded default."""

from .base import Backend, Committed, Completion, Entry, Frontier, FrontierCounts, Lease, State, Store
from .sqlite import Checkpoint, SQLiteBackend, SQLiteFrontier

__all__ = [
    "Backend", "Checkpoint", "Committed", "Completion", "Entry", "Frontier", "FrontierCounts", "Lease",
    "SQLiteBackend", "SQLiteFrontier", "State", "Store",
]
