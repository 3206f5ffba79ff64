"""Options declared once and shared by several commands: a frozen dataclass whose fields are
Typer-annotated parameters, added to each command that names it (as click's stacked option
decorators are) and handed to the command as one value."""

from __future__ import annotations

import dataclasses
import functools
import inspect
import typing
from collections.abc import Callable
from typing import Any

Command = Callable[..., None]


def option_group(group: type[Any], *, into: str) -> Callable[[Command], Command]:
    """Give the decorated command `group`'s fields as options of its own; it receives them as
    one `group` instance in its keyword-only parameter `into`."""
    group_hints = typing.get_type_hints(group, include_extras=True)
    group_fields = [field.name for field in dataclasses.fields(group)]
    added = [
        inspect.Parameter(
            field.name,
            inspect.Parameter.KEYWORD_ONLY,
            default=field.default,
            annotation=group_hints[field.name],
        )
        for field in dataclasses.fields(group)
    ]

    def decorate(command: Command) -> Command:
        signature = inspect.signature(command)
        # Typer reads each parameter's annotation from the signature: resolved here (this
        # module's `from __future__ import annotations` leaves the command's as strings).
        hints = typing.get_type_hints(command, include_extras=True)
        kept = [
            parameter.replace(annotation=hints.get(name, parameter.annotation))
            for name, parameter in signature.parameters.items()
            if name != into
        ]

        @functools.wraps(command)
        def with_group(*args: Any, **kwargs: Any) -> None:
            values = {name: kwargs.pop(name) for name in group_fields}
            command(*args, **kwargs, **{into: group(**values)})

        with_group.__signature__ = signature.replace(  # type: ignore[attr-defined]
            parameters=[*kept, *added]
        )
        with_group.__annotations__ = {
            **{name: hint for name, hint in hints.items() if name != into},
            **{parameter.name: parameter.annotation for parameter in added},
        }
        return with_group

    return decorate
