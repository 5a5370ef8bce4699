"""Turning what callbacks yield into checkpoint rows: accepted items as JSON, rejects with their error."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError


@dataclass(frozen=True, slots=True)
class RejectedItem:
    """An item that failed validation, kept so users can see what was dropped and why."""

    url: str
    error: str
    data: str


def _to_json(data: Any) -> str:
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"), default=str)


def describe_validation_error(error: ValidationError) -> str:
    """One line per failing field, e.g. ``price: Input should be a valid number``."""
    lines = []
    for problem in error.errors(include_url=False):
        where = ".".join(str(part) for part in problem["loc"]) or "item"
        lines.append(f"{where}: {problem['msg']}")
    return "; ".join(lines)


class ItemValidator:
    """Validates one spider's items against its ``item_model`` (if any) and serializes them."""

    def __init__(self, model: type[BaseModel] | None) -> None:
        self.model = model

    def check(self, item: BaseModel | dict[str, Any], url: str) -> str | RejectedItem:
        """The item's JSON text, or a RejectedItem if it does not validate."""
        if isinstance(item, BaseModel):
            # A model instance was validated when the callback built it.
            try:
                return item.model_dump_json()
            except (ValueError, TypeError) as error:
                return RejectedItem(url, f"cannot serialize: {error}", _to_json(repr(item)))
        if self.model is None:
            try:
                return json.dumps(item, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
            except (TypeError, ValueError) as error:
                return RejectedItem(url, f"not JSON-serializable: {error}", _to_json(item))
        try:
            return self.model.model_validate(item).model_dump_json()
        except ValidationError as error:
            return RejectedItem(url, describe_validation_error(error), _to_json(item))
