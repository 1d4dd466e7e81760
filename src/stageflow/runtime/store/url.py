"""Opening a store from a URL, and showing a URL without its password.

Accepted forms (SQLAlchemy-style, so an existing ``DATABASE_URL`` works)::

    None                              SQLite file HOME/stageflow.db (HOME is created)
    sqlite:///relative/path.db        SQLite file, relative to the working directory
    sqlite:////absolute/path.db       SQLite file, absolute path
    sqlite:// or sqlite:///:memory:   SQLite in memory (gone when the store is closed)
    postgresql://user:pass@host:port/db?options=...
    postgres://...  postgresql+psycopg://...

Every message shows the URL through :func:`mask_url`: secrets are never printed.

``open_store(..., read_only=True)`` is for commands that only read (``runs list``,
``runs show``, ``logs``, ...): an SQLite file is opened ``mode=ro``, so they work
on a folder this user cannot write; a file that does not exist yet reads as an
empty store (nothing is created), and one whose schema is older than this code
is opened for writing once, to migrate it.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlsplit

from stageflow.errors import StoreError
from stageflow.runtime.store.base import Store
from stageflow.runtime.store.dialect import (
    DEFAULT_CONNECT_TIMEOUT,
    POSTGRESQL,
    SQLITE,
    Connection,
    Dialect,
    connect_sqlite_read_only,
)
from stageflow.runtime.store.migrations import LATEST_VERSION, migrate, read_schema_version
from stageflow.runtime.store.sql import SqlStore

__all__ = ["ACCEPTED_FORMS", "StoreTarget", "mask_url", "open_store", "parse_store_url"]

ACCEPTED_FORMS = (
    "sqlite:///relative/path.db, sqlite:////absolute/path.db, sqlite:// (in memory), "
    "postgresql://user:password@host:port/database (also postgres:// and postgresql+psycopg://)"
)

_POSTGRES_SCHEMES = ("postgresql", "postgres", "postgresql+psycopg")
# password=... in a URL query or a libpq "key=value" string (quoted values too).
_SECRET_PARAM = re.compile(r"(?i)((?:^|[?&\s])password\s*=\s*)('(?:[^'\\]|\\.)*'?|[^&\s]*)")
_MASK = "***"


@dataclass(frozen=True, slots=True)
class StoreTarget:
    """Where a URL points: the dialect, what its driver connects to, and a printable URL."""

    dialect: Dialect
    target: str  # a file path, ":memory:" or a libpq connection URI
    display_url: str  # the URL with any password masked
    secrets: tuple[str, ...] = ()  # passwords to scrub from driver messages


def open_store(url: str | None, home: Path, *, read_only: bool = False) -> Store:
    """Open (and migrate) the store at ``url``; ``None`` means ``home / "stageflow.db"``.

    ``read_only``: for reading only (see the module docstring); a write raises.
    Raises ``StoreError`` for a URL of an unknown form, a database that cannot be
    reached or is damaged, or one whose schema is newer than this stageflow;
    ``MissingExtra`` when a PostgreSQL URL is given without psycopg installed.
    """
    if url is None:
        path = (home / "stageflow.db").absolute()
        target = StoreTarget(SQLITE, str(path), f"sqlite:///{path}")
    else:
        target = parse_store_url(url)
    if read_only and target.dialect is SQLITE and target.target != ":memory:":
        reader = _open_sqlite_reader(target)
        if reader is not None:
            return reader
    if target.dialect is SQLITE and target.target != ":memory:":
        folder = Path(target.target).parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(
                f"could not connect to {target.display_url}: cannot create {folder}: "
                f"{exc.strerror or exc}"
            ) from None
    conn = _connect(target)
    try:
        migrate(conn, target.dialect, target.display_url)
    except BaseException:
        conn.close()
        raise
    # A lost connection is reopened the same way (no migration: the schema is there).
    reopen = functools.partial(_connect, target) if target.dialect is POSTGRESQL else None
    return SqlStore(conn, target.dialect, url=target.display_url, reopen=reopen)


def _connect(target: StoreTarget) -> Connection:
    """A new connection to ``target``; ``StoreError`` (its class kept:
    ``StoreUnreachable`` says "try again later") with the secrets scrubbed."""
    try:
        return target.dialect.connect(target.target, target.display_url)
    except StoreError as exc:
        raise type(exc)(_scrub(str(exc), target.secrets)) from None


def _open_sqlite_reader(target: StoreTarget) -> Store | None:
    """The SQLite store ``target`` opened ``mode=ro``; an empty in-memory one when
    its file does not exist; ``None`` when its schema must be migrated first."""
    path = Path(target.target)
    if not path.exists():
        conn: Connection = SQLITE.connect(":memory:", target.display_url)
        migrate(conn, SQLITE, target.display_url)
        conn.cursor().execute("PRAGMA query_only = 1")  # read-only, as a file would be
        return SqlStore(conn, SQLITE, url=target.display_url)
    conn = connect_sqlite_read_only(target.target, target.display_url)
    try:
        version = read_schema_version(conn, SQLITE, target.display_url)
    except BaseException:
        conn.close()
        raise
    if version != LATEST_VERSION:  # older: migrate it (a newer one was refused)
        conn.close()
        return None
    return SqlStore(conn, SQLITE, url=target.display_url)


def parse_store_url(url: str) -> StoreTarget:
    """Classify ``url``; raise ``StoreError`` (URL masked) when it is no accepted form."""
    display = mask_url(url)
    scheme, sep, rest = url.partition("://")
    scheme = scheme.lower()
    if sep and scheme == "sqlite":
        return _sqlite_target(rest, display)
    if sep and scheme in _POSTGRES_SCHEMES:
        return _postgres_target(rest, display)
    raise StoreError(f"cannot open the store at {display}: unknown URL form; use {ACCEPTED_FORMS}")


def mask_url(url: str) -> str:
    """``url`` with the password (in the authority or a ``password=`` parameter) masked."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return _SECRET_PARAM.sub(rf"\1{_MASK}", url)
    head, qmark, query = rest.partition("?")
    # The last '@' ends the user info, even when an unencoded password holds '/' or '@'.
    userinfo, at, hostpart = head.rpartition("@")
    if at and ":" in userinfo:
        user = userinfo.partition(":")[0]
        head = f"{user}:{_MASK}@{hostpart}"
    if qmark:
        query = _SECRET_PARAM.sub(rf"\1{_MASK}", "?" + query)[1:]
    return f"{scheme}{sep}{head}{qmark}{query}"


def _sqlite_target(rest: str, display: str) -> StoreTarget:
    if "?" in rest or "#" in rest:
        raise StoreError(
            f"cannot open the store at {display}: SQLite URLs take no query; use {ACCEPTED_FORMS}"
        )
    if rest in ("", "/", "/:memory:"):
        return StoreTarget(SQLITE, ":memory:", display)
    if not rest.startswith("/"):
        # sqlite://host/path: SQLite has no host.
        raise StoreError(
            f"cannot open the store at {display}: an SQLite URL has no host "
            f"(three slashes before a relative path, four before an absolute one); "
            f"use {ACCEPTED_FORMS}"
        )
    return StoreTarget(SQLITE, unquote(rest[1:]), display)


def _postgres_target(rest: str, display: str) -> StoreTarget:
    try:
        parts = urlsplit("postgresql://" + rest)
        query = parse_qsl(parts.query, keep_blank_values=True)
        _ = parts.port  # raises ValueError when the port is not a number
    except ValueError as exc:
        raise StoreError(
            f"cannot open the store at {display}: {exc}; use {ACCEPTED_FORMS}"
        ) from None
    secrets = [p for p in (parts.password, _raw_password(rest)) if p]
    secrets += [value for key, value in query if key.lower() == "password" and value]
    target = "postgresql://" + rest
    if not any(key == "connect_timeout" for key, _ in query):
        # A dead host must fail in seconds, not the OS's minutes.
        target += ("&" if parts.query else ("" if target.endswith("?") else "?")) + (
            f"connect_timeout={DEFAULT_CONNECT_TIMEOUT}"
        )
    return StoreTarget(POSTGRESQL, target, display, tuple(secrets))


def _raw_password(rest: str) -> str | None:
    userinfo, at, _ = rest.partition("?")[0].rpartition("@")
    if at and ":" in userinfo:
        return userinfo.partition(":")[2]
    return None


def _scrub(message: str, secrets: tuple[str, ...]) -> str:
    for secret in secrets:
        message = message.replace(secret, _MASK)
    return message
