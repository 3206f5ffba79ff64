"""The API's JSON into the SDK's dataclasses, one rule for all of them: each field is read from
the key of its name and converted by its annotation.

A key that is missing or null takes the field's default; failing that None where the type
allows it, an empty list or dict for a container; else the answer is refused as invalid.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Self, TypeVar, Union

from robustify.errors import InvalidResponse

T = TypeVar("T")

RAW = "raw"  # the field that keeps the JSON as it came (fields newer servers add are there too)


class ApiObject:
    """A dataclass the API answers with: `from_json` decodes it by its fields."""

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Self:
        return decode(cls, data)


def decode(cls: type[T], data: Mapping[str, Any]) -> T:
    """An instance of the dataclass `cls` from `data`, by the rule of this module."""
    if not isinstance(data, Mapping):
        raise InvalidResponse(f"expected an object for {cls.__name__}, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for field in dataclasses.fields(cls):  # type: ignore[arg-type]
        if field.name == RAW:
            values[RAW] = dict(data)
            continue
        value = data.get(field.name)
        if value is not None:
            values[field.name] = _convert(hints[field.name], value, f"{cls.__name__}.{field.name}")
        elif not _has_default(field):
            values[field.name] = _empty(hints[field.name], f"{cls.__name__}.{field.name}")
    return cls(**values)


def _has_default(field: dataclasses.Field[Any]) -> bool:
    return (
        field.default is not dataclasses.MISSING or field.default_factory is not dataclasses.MISSING
    )


def _optional_of(annotation: Any) -> Any | None:
    """X for `X | None`; None for any other annotation."""
    if typing.get_origin(annotation) not in (Union, types.UnionType):
        return None
    others = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
    return others[0] if len(others) == 1 else None


def _empty(annotation: Any, where: str) -> Any:
    if _optional_of(annotation) is not None:
        return None
    origin = typing.get_origin(annotation)
    if origin is list:
        return []
    if origin is dict:
        return {}
    raise InvalidResponse(f"the API's answer lacks {where}")


def _convert(annotation: Any, value: Any, where: str) -> Any:
    inner = _optional_of(annotation)
    if inner is not None:
        return _convert(inner, value, where)
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    try:
        if annotation is Any:
            return value
        if origin is list:
            return [_convert(args[0], each, where) for each in value]
        if origin is dict:
            return {
                _convert(args[0], key, where): _convert(args[1], each, where)
                for key, each in value.items()
            }
        if annotation is datetime:
            return datetime.fromisoformat(value)
        if isinstance(annotation, type) and issubclass(annotation, ApiObject):
            return annotation.from_json(value)
        if annotation in (str, int, float, bool):
            return annotation(value)
    except (TypeError, ValueError, AttributeError) as exc:
        raise InvalidResponse(f"the API's {where} is not a {annotation}: {value!r}") from exc
    raise TypeError(f"{where}: the SDK cannot decode a {annotation}")  # a bug of the SDK
