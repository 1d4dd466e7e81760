"""Fixtures: one store test suite, run on SQLite and on PostgreSQL.

``backend`` is parametrised ``sqlite`` (a file in ``tmp_path``) and ``postgres``
(a fresh schema per test on the server at ``STAGEFLOW_TEST_POSTGRES_URL``,
reached through ``options=-csearch_path=<schema>``, dropped afterwards).  When
PostgreSQL is unreachable its tests are skipped, or fail when
``STAGEFLOW_REQUIRE_POSTGRES=1`` (CI).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from stageflow.runtime.store import SqlStore, mask_url, open_store

DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"
POSTGRES_URL = os.environ.get("STAGEFLOW_TEST_POSTGRES_URL", DEFAULT_POSTGRES_URL)
REQUIRE_POSTGRES = os.environ.get("STAGEFLOW_REQUIRE_POSTGRES") == "1"

_reachable: dict[str, str | None] = {}  # url -> None when reachable, else the reason


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


def postgres_unreachable(url: str) -> str | None:
    """``None`` when PostgreSQL answers at ``url``, else why not (checked once per session)."""
    if url not in _reachable:
        try:
            import psycopg

            with psycopg.connect(url, connect_timeout=3, autocommit=True) as conn:
                conn.execute("SELECT 1")
            _reachable[url] = None
        except Exception as exc:
            _reachable[url] = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
    return _reachable[url]


def require_postgres() -> None:
    """Skip (or, in CI, fail) the calling test when PostgreSQL is not reachable."""
    reason = postgres_unreachable(POSTGRES_URL)
    if reason is None:
        return
    message = (
        f"PostgreSQL not reachable at {mask_url(POSTGRES_URL)}; start it or set "
        f"STAGEFLOW_TEST_POSTGRES_URL (CI sets STAGEFLOW_REQUIRE_POSTGRES=1) [{reason}]"
    )
    if REQUIRE_POSTGRES:
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


@contextlib.contextmanager
def postgres_schema() -> Iterator[str]:
    """A fresh schema; yields a URL whose search_path is that schema; drops it afterwards."""
    import psycopg

    schema = f"sf_test_{secrets.token_hex(6)}"
    with psycopg.connect(POSTGRES_URL, autocommit=True) as admin:
        admin.execute(f'CREATE SCHEMA "{schema}"')
    sep = "&" if "?" in POSTGRES_URL else "?"
    url = f"{POSTGRES_URL}{sep}options={quote(f'-csearch_path={schema}', safe='')}"
    try:
        yield url
    finally:
        with psycopg.connect(POSTGRES_URL, autocommit=True) as admin:
            admin.execute(f'DROP SCHEMA "{schema}" CASCADE')


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
