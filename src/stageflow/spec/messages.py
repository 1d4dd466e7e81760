"""Validation errors as a person writes them.

pydantic words an error for a programmer: ``Value error, unknown algorithm ...``
(a validator's own message behind a prefix), ``Input should be less than 1``.
``readable_error`` turns one of its error dicts into the clause a spec problem
ends with: a validator's message as it was written (it names the value itself),
anything else as ``should be less than 1, got 2``. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["readable_error", "shown_value"]

#: Prefixes pydantic puts before the message of a validator that raised.
_PREFIXES = ("Value error, ", "Assertion failed, ")
_SHOWN_CHARS = 60


def readable_error(err: Mapping[str, Any]) -> str:
    """The message of one pydantic error dict (``ValidationError.errors()``), without
    pydantic's prefixes; a message of pydantic's own ends with the value given."""
    msg = str(err.get("msg", ""))
    for prefix in _PREFIXES:
        if msg.startswith(prefix):
            return msg[len(prefix) :]
    # "Input should be less than 1" -> "should be less than 1"
    msg = msg[len("Input ") :] if msg.startswith("Input should be ") else msg[:1].lower() + msg[1:]
    return f"{msg}, got {shown_value(err.get('input'))}" if "input" in err else msg


def shown_value(value: object) -> str:
    """``repr(value)``, cut to 60 characters."""
    text = repr(value)
    return text if len(text) <= _SHOWN_CHARS else text[: _SHOWN_CHARS - 3] + "..."
