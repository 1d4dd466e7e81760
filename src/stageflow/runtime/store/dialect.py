"""What differs between the SQLite and PostgreSQL stores, and how each is opened.

The store is written once against the DB-API (PEP 249); a :class:`Dialect` holds
the few differences: the placeholder (``?`` or ``%s``), column types, the events
id column, how a write transaction begins, and how a connection is opened.
SQL is written with ``?`` placeholders and translated once per store, never per
call.

Both connections run in autocommit mode; the store opens every transaction
itself with ``dialect.begin`` and ends it with ``COMMIT`` or ``ROLLBACK``, so
reads take no locks and a ``Batch`` is exactly one transaction.

``psycopg`` is imported only when a PostgreSQL store is opened: the CLI must
start fast and SQLite users need not install it.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from stageflow.errors import MissingExtra, StoreError

__all__ = ["POSTGRESQL", "SQLITE", "Connection", "Cursor", "Dialect"]

#: Seconds a PostgreSQL connection attempt may take unless the URL says otherwise.
DEFAULT_CONNECT_TIMEOUT = 10
#: Milliseconds an SQLite writer waits for another writer's lock.
SQLITE_BUSY_TIMEOUT_MS = 10_000


class Cursor(Protocol):
    """The part of a DB-API cursor the store uses."""

    @property
    def rowcount(self) -> int: ...

    def execute(self, sql: str, params: Sequence[Any] = ..., /) -> object: ...

    def executemany(self, sql: str, params: Sequence[Sequence[Any]], /) -> object: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...


class Connection(Protocol):
    """The part of a DB-API connection the store uses."""

    def cursor(self) -> Cursor: ...

    def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Dialect:
    """The differences between the SQL databases the store runs on."""

    name: str
    placeholder: str
    real: str
    blob: str
    bigint: str
    id_column: str
    begin: str
    #: Answers whether a table exists where CREATE TABLE would put it; one parameter.
    table_exists: str
    #: Runs first in a migration transaction so concurrent openers migrate one at a time.
    migration_lock: str | None
    #: Inserts a run's pending task runs in one statement from (run_id, [task_id, ...]);
    #: ``None``: one ``executemany`` row per task.
    insert_pending_bulk: str | None
    #: ``connect(target, display_url)``: an autocommit connection, or ``StoreError``.
    connect: Callable[[str, str], Connection]
    #: The driver's base exception class (imports the driver lazily).
    driver_error: Callable[[], type[Exception]]

    def sql(self, text: str) -> str:
        """``text`` with its ``?`` placeholders in this dialect's style."""
        return text if self.placeholder == "?" else text.replace("?", self.placeholder)

    def ddl(self, template: str) -> str:
        """``template`` with ``{real}``, ``{blob}``, ``{bigint}``, ``{id}`` filled in."""
        return template.format(
            real=self.real, blob=self.blob, bigint=self.bigint, id=self.id_column
        )


def one_line(exc: BaseException) -> str:
    """The first non-empty line of a driver error: its reason, without a traceback."""
    for line in str(exc).splitlines():
        if line.strip():
            return line.strip()
    return type(exc).__name__


def _switch_to_wal(conn: sqlite3.Connection) -> None:
    """``PRAGMA journal_mode=WAL``, retried: on a brand-new file that several
    processes open at once, SQLite can answer "database is locked" at once,
    without waiting in the busy handler."""
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def _connect_sqlite(target: str, display_url: str) -> Connection:
    try:
        # isolation_level=None: autocommit; the store issues BEGIN/COMMIT itself.
        conn = sqlite3.connect(
            target,
            timeout=SQLITE_BUSY_TIMEOUT_MS / 1000,
            isolation_level=None,
            check_same_thread=False,
        )
    except sqlite3.Error as exc:
        raise StoreError(f"could not connect to {display_url}: {one_line(exc)}") from None
    try:
        # WAL: readers never block the writer; NORMAL: no fsync per commit (safe in WAL).
        _switch_to_wal(conn)
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA foreign_keys=ON")
    except sqlite3.Error as exc:
        conn.close()
        raise StoreError(f"could not connect to {display_url}: {one_line(exc)}") from None
    return conn


def _connect_postgres(target: str, display_url: str) -> Connection:
    try:
        import psycopg
    except ImportError:
        raise MissingExtra(
            "a PostgreSQL store needs psycopg; install it with pip install 'stageflow[postgres]'"
        ) from None
    try:
        return psycopg.connect(target, autocommit=True)
    except psycopg.Error as exc:
        raise StoreError(f"could not connect to {display_url}: {one_line(exc)}") from None


def _sqlite_error() -> type[Exception]:
    return sqlite3.Error


def _psycopg_error() -> type[Exception]:
    import psycopg  # already imported by _connect_postgres

    return psycopg.Error


SQLITE = Dialect(
    name="sqlite",
    placeholder="?",
    real="REAL",
    blob="BLOB",
    bigint="INTEGER",
    # Not AUTOINCREMENT: rowids still grow while rows are only appended, and
    # AUTOINCREMENT adds a write to sqlite_sequence to every commit.
    id_column="INTEGER PRIMARY KEY",
    # IMMEDIATE takes the write lock up front, so a writer waits (busy_timeout)
    # instead of failing when it upgrades a read lock.
    begin="BEGIN IMMEDIATE",
    table_exists="SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
    migration_lock=None,
    # executemany is fast enough in-process (100,000 rows in ~0.25 s).
    insert_pending_bulk=None,
    connect=_connect_sqlite,
    driver_error=_sqlite_error,
)

POSTGRESQL = Dialect(
    name="postgresql",
    placeholder="%s",
    real="DOUBLE PRECISION",
    blob="BYTEA",
    bigint="BIGINT",
    id_column="BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY",
    begin="BEGIN",
    # Not to_regclass(): its cached "no such table" can outlive another
    # process's committed migration; a query on pg_tables sees it.
    table_exists=(
        "SELECT 1 FROM pg_catalog.pg_tables WHERE schemaname = current_schema() AND tablename = %s"
    ),
    # Any constant works; it only has to be the same for every stageflow process.
    migration_lock="SELECT pg_advisory_xact_lock(5714290117)",
    # One array parameter instead of a round of messages per row: ~4x faster.
    insert_pending_bulk=(
        "INSERT INTO task_runs (run_id, task_id, seq, state, attempts) "
        "SELECT %s, t.task_id, t.seq - 1, 'pending', 0 "
        "FROM unnest(%s::text[]) WITH ORDINALITY AS t (task_id, seq)"
    ),
    connect=_connect_postgres,
    driver_error=_psycopg_error,
)
