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

A driver error caused by the store's surroundings, not by stageflow (a full or
failing disk, a damaged SQLite file, a read-only one, a lost server), is told
apart by ``Dialect.trouble``, which words it with what to do; the store raises
those as ``StoreError``.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import quote, unquote

from stageflow.errors import MissingExtra, StoreError, StoreUnreachable

__all__ = [
    "POSTGRESQL",
    "SQLITE",
    "Connection",
    "Cursor",
    "Dialect",
    "connect_sqlite_read_only",
    "one_line",
]

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
    #: Inserts a run's pending task runs in one statement from
    #: (run_id, text_list([task_id, ...])).
    insert_pending_bulk: str
    #: A list of strings as one parameter: a ``text[]`` (PostgreSQL), a JSON array
    #: that ``json_each`` reads (SQLite).
    text_list: Callable[[list[str]], Any]
    #: ``connect(target, display_url)``: an autocommit connection, or ``StoreError``.
    connect: Callable[[str, str], Connection]
    #: The driver's base exception class (imports the driver lazily).
    driver_error: Callable[[], type[Exception]]
    #: ``trouble(exc, display_url)``: what is wrong with the store and what to do,
    #: when a driver error comes from its surroundings (disk, file, server); else
    #: ``None`` (a bug, or an error the caller handles, such as a duplicate key).
    trouble: Callable[[BaseException, str], str | None]

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


def _sqlite_trouble(exc: BaseException, display_url: str) -> str | None:
    """A full, failing, damaged, read-only or locked SQLite file, said plainly."""
    name = getattr(exc, "sqlite_errorname", "") or ""
    reason = one_line(exc)
    path = _sqlite_path(display_url)
    if _damaged(exc):
        return (
            f"the store at {display_url} is damaged ({reason}); move {path} (and its -wal "
            "and -shm files) aside and run "
            f"again to start a new store (`sqlite3 {path} .recover | sqlite3 recovered.db` "
            "saves what the damaged file still holds)"
        )
    if name.startswith("SQLITE_FULL"):
        return (
            f"the store at {display_url} cannot be written: {reason}; free space on the "
            f"disk that holds {path}"
        )
    if name.startswith("SQLITE_IOERR"):
        return (
            f"the store at {display_url} cannot be read or written: {reason}; check the "
            f"disk that holds {path} (free space, errors)"
        )
    if name.startswith("SQLITE_READONLY"):
        return (
            f"the store at {display_url} is read-only ({reason}); make {path} and its "
            "folder writable by this user"
        )
    if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")):
        return (
            f"the store at {display_url} stayed locked by another process for "
            f"{SQLITE_BUSY_TIMEOUT_MS // 1000}s ({reason}); try again when it is done"
        )
    if name.startswith("SQLITE_CANTOPEN"):
        return f"the store at {display_url} cannot be opened ({reason}); check {path}"
    return None


def _damaged(exc: BaseException) -> bool:
    name = getattr(exc, "sqlite_errorname", "") or ""
    return name.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB")) or "malformed" in one_line(exc)


def _sqlite_path(display_url: str) -> str:
    """The file an SQLite store URL names (``sqlite:///PATH``)."""
    _, sep, path = display_url.partition(":///")
    return unquote(path) if sep else display_url


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
        raise StoreError(_connect_failure(exc, display_url)) from None
    try:
        # WAL: readers never block the writer; NORMAL: no fsync per commit (safe in WAL).
        _switch_to_wal(conn)
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA foreign_keys=ON")
    except sqlite3.Error as exc:
        conn.close()
        raise StoreError(_connect_failure(exc, display_url)) from None
    return conn


def connect_sqlite_read_only(path: str, display_url: str) -> Connection:
    """An autocommit connection to the existing SQLite file ``path`` that cannot
    write (``mode=ro``): reading commands work on a read-only folder.

    A WAL database read-only needs its ``-shm`` index: where it is missing and
    cannot be made (a read-only folder after the last writer closed cleanly, so
    everything committed is in the file itself), the file is opened ``immutable``.
    ``StoreError`` when it cannot be opened at all, or is damaged.
    """
    uri = "file:" + quote(path, safe="/") + "?mode=ro"
    last: sqlite3.Error | None = None
    for suffix in ("", "&immutable=1"):
        try:
            conn = sqlite3.connect(
                uri + suffix,
                uri=True,
                timeout=SQLITE_BUSY_TIMEOUT_MS / 1000,
                isolation_level=None,
                check_same_thread=False,
            )
        except sqlite3.Error as exc:
            last = exc
            continue
        try:
            conn.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
            conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
        except sqlite3.Error as exc:
            conn.close()
            last = exc
            if _damaged(exc):
                break
            continue
        return conn
    assert last is not None
    raise StoreError(_connect_failure(last, display_url))


def _connect_failure(exc: BaseException, display_url: str) -> str:
    return (
        _sqlite_trouble(exc, display_url) or f"could not connect to {display_url}: {one_line(exc)}"
    )


def _connect_postgres(target: str, display_url: str) -> Connection:
    try:
        import psycopg
    except ImportError:
        raise MissingExtra(
            "a PostgreSQL store needs psycopg; install it with pip install 'stageflow[postgres]'"
        ) from None
    try:
        return psycopg.connect(target, autocommit=True)
    except psycopg.OperationalError as exc:  # no server there, refused, timed out
        raise StoreUnreachable(f"could not connect to {display_url}: {one_line(exc)}") from None
    except psycopg.Error as exc:
        raise StoreError(f"could not connect to {display_url}: {one_line(exc)}") from None


def _postgres_trouble(exc: BaseException, display_url: str) -> str | None:
    """A server that went away or refuses work (``OperationalError``), said plainly."""
    import psycopg  # already imported by _connect_postgres

    if isinstance(exc, psycopg.OperationalError):
        return f"lost the store at {display_url}: {one_line(exc)}; check that the server is up"
    return None


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
    # One statement: its rows are made in SQLite's C, not bound one by one
    # (0.33 against 0.50 ms for 200 rows with executemany, measured).
    insert_pending_bulk=(
        "INSERT INTO task_runs (run_id, task_id, seq, state, attempts) "
        "SELECT ?, value, key, 'pending', 0 FROM json_each(?)"
    ),
    text_list=json.dumps,
    connect=_connect_sqlite,
    driver_error=_sqlite_error,
    trouble=_sqlite_trouble,
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
    text_list=list,
    connect=_connect_postgres,
    driver_error=_psycopg_error,
    trouble=_postgres_trouble,
)
