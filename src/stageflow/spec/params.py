"""Run parameters: ``${params.NAME}`` substitution and ``--param k=v`` parsing.

A string that is exactly ``${params.NAME}`` becomes the parameter's value with
its type; inside a longer string the value is formatted into the text.
Substitution is plain text replacement: nothing is evaluated.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from typing import Any

__all__ = ["parse_param_value", "references", "substitute"]

_REF = re.compile(r"\$\{params\.([A-Za-z_][A-Za-z0-9_]*)\}")


def references(text: str) -> Iterator[str]:
    """The parameter names ``text`` refers to."""
    for match in _REF.finditer(text):
        yield match.group(1)


def substitute(value: Any, params: Mapping[str, Any]) -> Any:
    """``value`` with every ``${params.NAME}`` replaced (recursively in lists/dicts).

    Raises ``KeyError`` naming a parameter that is not in ``params``.
    """
    if isinstance(value, str):
        if "${" not in value:
            return value
        whole = _REF.fullmatch(value)
        if whole:
            return params[whole.group(1)]
        return _REF.sub(lambda m: _text(params[m.group(1)]), value)
    if isinstance(value, dict):
        return {k: substitute(v, params) for k, v in value.items()}
    if isinstance(value, list):
        return [substitute(v, params) for v in value]
    return value


def parse_param_value(text: str) -> Any:
    """A ``--param`` value: JSON when it parses (numbers, true, lists), else the text."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)
