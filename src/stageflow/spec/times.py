"""Times and durations as a person writes them in a spec, on the CLI or to the API.

``parse_instant``: an ISO-8601 date or time (``2026-03-01``, ``2026-03-01T12:00``,
``...Z`` or with an offset; UTC when it names none) as float epoch seconds.
``parse_duration``: seconds, or a number with a unit (``90s``, ``10m``, ``2h``,
``1d``). Each raises ``UsageError`` naming ``field`` with an example of what works.
No state.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

from stageflow.errors import UsageError

__all__ = ["parse_duration", "parse_instant"]

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*")


def parse_instant(text: str, field: str) -> float:
    """An ISO-8601 date or time (``2026-03-01``, ``2026-03-01T12:00``, ``...Z`` or with an
    offset; UTC when it names none) as seconds since the epoch; ``UsageError`` naming
    ``field`` otherwise."""
    value = text.strip()
    try:
        moment = datetime.fromisoformat(value[:-1] + "+00:00" if value.endswith("Z") else value)
    except ValueError:
        raise UsageError(
            f"{field} {text!r} is not a date or time; give ISO-8601, e.g. 2026-03-01 or "
            "2026-03-01T12:00:00Z",
            field=field.lstrip("-"),  # the option's name: --every is field every
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def parse_duration(text: str | float, field: str) -> float:
    """Seconds (a number), or a number with a unit: ``90s``, ``10m``, ``2h``, ``1d``;
    ``UsageError`` naming ``field`` otherwise. Not checked for being positive."""
    if isinstance(text, int | float) and not isinstance(text, bool):
        return float(text)
    match = _DURATION.fullmatch(str(text))
    if match is None:
        raise UsageError(
            f"{field} {text!r} is not a duration; give seconds or a number with a unit: "
            "90s, 10m, 2h, 1d",
            field=field.lstrip("-"),  # the option's name: --every is field every
        )
    return float(match.group(1)) * _UNITS[match.group(2) or "s"]
