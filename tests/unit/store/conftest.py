"""Fixtures: one store test suite, run on SQLite and on PostgreSQL.

``backend`` is parametrised ``sqlite`` (a file in ``tmp_path``) and ``postgres``
(a fresh schema per test on the server at ``STAGEFLOW_TEST_POSTGRES_URL``,
reached through ``options=-csearch_path=<schema>``, dropped afterwards).  When
PostgreSQL is unreachable its tests are skipped, or fail when
``STAGEFLOW_REQUIRE_POSTGRES=1`` (CI).
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from stageflow.runtime.store import SqlStore, open_store
from support.postgres import postgres_schema, require_postgres


@dataclass
class Backend:
    """A database for one test: its URL, and raw access for checks behind the store's back."""

    name: str
    url: str
    home: Path

    def open(self) -> SqlStore:
        store = open_store(self.url, self.home)
        assert isinstance(store, SqlStore)
        return store

    @contextlib.contextmanager
    def raw(self) -> Iterator[Any]:
        """A DB-API connection in autocommit mode (placeholders: ``self.param``)."""
        if self.name == "sqlite":
            conn: Any = sqlite3.connect(self.url.removeprefix("sqlite:///"), isolation_level=None)
        else:
            import psycopg

            conn = psycopg.connect(self.url, autocommit=True)
        try:
            yield conn
        finally:
            conn.close()

    @property
    def param(self) -> str:
        return "?" if self.name == "sqlite" else "%s"

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self.raw() as conn:
            cur = conn.cursor()
            cur.execute(sql.replace("?", self.param), params)
            return list(cur.fetchall()) if cur.description else []

    def tables(self) -> list[str]:
        if self.name == "sqlite":
            rows = self.query("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
        else:
            rows = self.query(
                "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() "
                "ORDER BY tablename"
            )
        return [row[0] for row in rows]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    home = tmp_path / "home"
    if request.param == "sqlite":
        yield Backend("sqlite", f"sqlite:///{tmp_path / 'store.db'}", home)
        return
    require_postgres()
    with postgres_schema() as url:
        yield Backend("postgres", url, home)


@pytest.fixture
def store(backend: Backend) -> Iterator[SqlStore]:
    store = backend.open()
    try:
        yield store
    finally:
        store.close()
