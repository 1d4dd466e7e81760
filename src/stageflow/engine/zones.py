"""Time zones by IANA name, for the engine's schedules, alert deadlines and sensors.

One lookup with one policy: a name that is not a string, not a normalized relative
key, or not in the system's (or tzdata's) database is no zone (``None``), never an
exception; ``"UTC"`` is the standard library's ``UTC`` without a lookup. Callers
turn ``None`` into their own message naming their field.
"""

from __future__ import annotations

from datetime import UTC, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = ["zone_or_none"]


def zone_or_none(name: object) -> tzinfo | None:
    """The zone called ``name`` (``Europe/Paris``), or ``None`` when there is none."""
    if not isinstance(name, str):
        return None
    if name == "UTC":
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return None
