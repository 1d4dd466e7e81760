"""Shared PostgreSQL test support: reachability, skip-or-fail, a fresh schema per test.

The server is ``STAGEFLOW_TEST_POSTGRES_URL`` (default: the local server, trust
auth, database ``test``). Unreachable: tests are skipped with a one-line notice,
or fail when ``STAGEFLOW_REQUIRE_POSTGRES=1`` (as ``.ci/run`` sets).
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from urllib.parse import quote

import pytest

from stageflow.runtime.store import mask_url

DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"
POSTGRES_URL = os.environ.get("STAGEFLOW_TEST_POSTGRES_URL", DEFAULT_POSTGRES_URL)
REQUIRE_POSTGRES = os.environ.get("STAGEFLOW_REQUIRE_POSTGRES") == "1"

_reachable: dict[str, str | None] = {}  # url -> None when reachable, else the reason


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
