"""Rows to records by field name: the record type's own field list says what to copy, so a
new field needs no mapping code (records are frozen dataclasses or pydantic models)."""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

from pydantic import BaseModel

__all__ = ["record", "values"]

R = TypeVar("R")


_NAMES: dict[type[Any], tuple[str, ...]] = {}


def _names(cls: type[Any]) -> tuple[str, ...]:
    names = _NAMES.get(cls)
    if names is None:
        if issubclass(cls, BaseModel):
            names = tuple(cls.model_fields)
        else:
            names = tuple(f.name for f in dataclasses.fields(cls))
        _NAMES[cls] = names
    return names


def record(cls: type[R], row: object, **given: Any) -> R:
    """A `cls` from the attributes of `row` with the same names, plus `given` ones.

    Pydantic records are built without validation: rules apply to what is written, and a row
    stored before a rule was tightened must still load.
    """
    found = {name: getattr(row, name) for name in _names(cls) if name not in given}
    if issubclass(cls, BaseModel):
        built: R = cls.model_construct(**found, **given)
        return built
    return cls(**found, **given)


def values(item: object, **given: Any) -> dict[str, Any]:
    """The fields of a record as a dict (for an INSERT), with `given` ones replaced."""
    names = [n for n in _names(type(item)) if n not in given]
    return {**{name: getattr(item, name) for name in names}, **given}
