"""Notification delivery arithmetic: when a failed delivery is tried again, how a
channel's target is shown.

Policy. A delivery gets ``tries`` tries in all. After failed try number ``n`` (1-based)
the next one is due ``base * 4 ** (n - 1)`` seconds later (1 s, 4 s, 16 s with the
default base of 1 s), capped at ``MAX_DELAY`` seconds; after the last try there is no
next one (the delivery is ``failed``). A channel's target is shown without what may be
secret: a webhook URL as its scheme and host (its path and query are its credentials),
a ``${secret:NAME}`` reference as ``secret:NAME`` (never its value), an e-mail
channel's addresses, a command's program. Pure: no I/O, no clock.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

__all__ = ["BACKOFF_FACTOR", "MAX_DELAY", "next_try_delay", "shown_target", "shown_url"]

BACKOFF_FACTOR = 4.0
MAX_DELAY = 3600.0  # an hour: past that, a dead channel is better marked failed
_SECRET = re.compile(r"\$\{secret:([A-Za-z_][A-Za-z0-9_]*)\}")


def next_try_delay(attempts: int, tries: int, base: float) -> float | None:
    """Seconds from the failure of try number ``attempts`` to the next try; ``None``
    when that was the last of ``tries`` (at least one try is always made)."""
    if attempts >= max(tries, 1):
        return None
    return min(base * BACKOFF_FACTOR ** max(attempts - 1, 0), MAX_DELAY)


def shown_url(url: str) -> str:
    """``url`` as it may be shown: ``scheme://host[:port]``, or ``secret:NAME``."""
    found = _SECRET.search(url)
    if found is not None and url.startswith("${"):
        return f"secret:{found.group(1)}"
    try:
        parts = urlsplit(url)
        port = f":{parts.port}" if parts.port else ""
    except ValueError:  # a bad port: show no more than the scheme
        return f"{url.partition(':')[0]}://?"
    return f"{parts.scheme}://{parts.hostname or '?'}{port}"


def shown_target(channel: Mapping[str, Any]) -> str:
    """The channel's target as the delivery log and messages show it."""
    if channel.get("webhook") is not None:
        return shown_url(str(channel["webhook"]))
    if channel.get("email") is not None:
        return ", ".join(_shown_value(str(a)) for a in channel["email"])
    command = channel.get("command") or ["?"]
    return _shown_value(str(command[0]))


def _shown_value(value: str) -> str:
    """A reference ``${secret:NAME}`` (anywhere in ``value``) as ``secret:NAME``."""
    return _SECRET.sub(lambda m: f"secret:{m.group(1)}", value)
