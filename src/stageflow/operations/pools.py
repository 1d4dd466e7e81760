"""Global pools (``runtime.pools``): kept in the store, shared by every process on it.

``list_pools`` first creates the pools of ``STAGEFLOW_POOLS`` that the store lacks,
as a run would. A bad name or size, or an unknown pool to remove, raises
``UsageError`` naming it.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from stageflow.operations.stores import writing
from stageflow.runtime.settings import Settings

__all__ = ["list_pools", "remove_pool", "set_pool"]

if TYPE_CHECKING:
    from stageflow.runtime.pools import PoolStatus


def set_pool(settings: Settings, name: str, slots: str | int) -> int:
    """Create pool ``name`` with ``slots`` slots, or change its size (holders keep
    theirs); the size it now has."""
    from stageflow.runtime import pools

    with writing(settings) as store:
        return pools.set_pool(store, name, slots, time.time())


def list_pools(settings: Settings) -> list[PoolStatus]:
    """Every pool, its size and the attempts holding its slots now."""
    from stageflow.runtime import pools
    from stageflow.runtime.resources import configured_pools

    with writing(settings) as store:
        return pools.list_pools(store, configured_pools(), time.time())


def remove_pool(settings: Settings, name: str) -> None:
    """Delete pool ``name`` and its holdings."""
    from stageflow.runtime import pools

    with writing(settings) as store:
        pools.remove_pool(store, name)
