"""Opening stores by URL, and never showing a password."""

from __future__ import annotations

import contextlib
import re
import time
from pathlib import Path

import pytest

from stageflow.errors import StoreError
from stageflow.runtime.store import RunRecord, SqlStore, mask_url, open_store
from stageflow.runtime.store.dialect import POSTGRESQL, SQLITE
from stageflow.runtime.store.url import parse_store_url

RUN = RunRecord("r1", "p", "v", "queued", {}, 1.0)


def test_no_url_means_a_file_in_home_which_is_created(tmp_path: Path) -> None:
    home = tmp_path / "a" / ".stageflow"
    with contextlib.closing(open_store(None, home)) as store:
        store.create_run(RUN, [])
        assert store.url == f"sqlite:///{home / 'stageflow.db'}"
    assert (home / "stageflow.db").is_file()
    with contextlib.closing(open_store(None, home)) as store:
        assert store.get_run("r1") == RUN


def test_relative_sqlite_url_is_relative_to_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with contextlib.closing(open_store("sqlite:///sub/dir/x.db", tmp_path / "unused")) as store:
        store.create_run(RUN, [])
    assert (tmp_path / "sub" / "dir" / "x.db").is_file()
    assert not (tmp_path / "unused").exists()


def test_absolute_sqlite_url_has_four_slashes(tmp_path: Path) -> None:
    path = tmp_path / "abs.db"
    with contextlib.closing(open_store(f"sqlite:///{path}", tmp_path)) as store:
        store.create_run(RUN, [])
    assert path.is_file()


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///:memory:"])
def test_memory_stores_are_private_to_each_store(url: str, tmp_path: Path) -> None:
    with (
        contextlib.closing(open_store(url, tmp_path)) as one,
        contextlib.closing(open_store(url, tmp_path)) as two,
    ):
        one.create_run(RUN, ["a"])
        assert [r.run_id for r in one.list_runs()] == ["r1"]
        assert two.list_runs() == []
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("url", "dialect", "target"),
    [
        pytest.param("sqlite:///rel/x.db", SQLITE, "rel/x.db", id="sqlite-relative"),
        pytest.param("sqlite:////abs/x.db", SQLITE, "/abs/x.db", id="sqlite-absolute"),
        pytest.param("sqlite://", SQLITE, ":memory:", id="sqlite-memory"),
        pytest.param("SQLITE:///:memory:", SQLITE, ":memory:", id="sqlite-memory-path"),
        pytest.param(
            "postgresql://u@h:5433/db",
            POSTGRESQL,
            "postgresql://u@h:5433/db?connect_timeout=10",
            id="postgresql",
        ),
        pytest.param(
            "postgres://u@h/db?sslmode=require",
            POSTGRESQL,
            "postgresql://u@h/db?sslmode=require&connect_timeout=10",
            id="postgres",
        ),
        pytest.param(
            "postgresql+psycopg://u:pw@h/db?connect_timeout=2",
            POSTGRESQL,
            "postgresql://u:pw@h/db?connect_timeout=2",
            id="postgresql+psycopg",
        ),
    ],
)
def test_accepted_url_forms(url: str, dialect: object, target: str) -> None:
    parsed = parse_store_url(url)
    assert parsed.dialect is dialect
    assert parsed.target == target


@pytest.mark.parametrize(
    "url",
    [
        "mysql://u:secret@h/db",
        "postgresql+asyncpg://u:secret@h/db",
        "sqlite3:///x.db",
        "not a url with password=secret",
        "sqlite://host/x.db",
        "sqlite:///x.db?password=secret",
        "postgresql://u:secret@h:notaport/db",
    ],
)
def test_bad_urls_raise_store_error_with_the_password_masked(url: str) -> None:
    with pytest.raises(StoreError) as info:
        open_store(url, Path("/nonexistent-home"))
    message = str(info.value)
    assert "secret" not in message
    assert "cannot open the store at " in message
    assert "sqlite:///relative/path.db" in message
    assert "postgresql://user:password@host:port/database" in message


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("postgresql://u:secret@h/db", "postgresql://u:***@h/db"),
        ("postgresql://u@h/db", "postgresql://u@h/db"),
        ("postgresql://u:s/e@c@h:5432/db?x=1", "postgresql://u:***@h:5432/db?x=1"),
        (
            "postgresql://h/db?user=u&password=secret&x=1",
            "postgresql://h/db?user=u&password=***&x=1",
        ),
        ("postgresql://h/db?PASSWORD=secret", "postgresql://h/db?PASSWORD=***"),
        ("sqlite:////tmp/x.db", "sqlite:////tmp/x.db"),
        ("host=h password=secret dbname=d", "host=h password=*** dbname=d"),
        ("host=h password = 'a b\\' c' x=1", "host=h password = *** x=1"),
        ("x?password=secret", "x?password=***"),
    ],
)
def test_mask_url(url: str, masked: str) -> None:
    assert mask_url(url) == masked


def test_unreachable_postgres_fails_fast_with_a_one_line_reason() -> None:
    pytest.importorskip("psycopg")
    started = time.monotonic()
    with pytest.raises(StoreError) as info:
        open_store("postgresql://u:secret@127.0.0.1:1/db", Path("/nonexistent-home"))
    assert time.monotonic() - started < 5
    message = str(info.value)
    assert message.startswith("could not connect to postgresql://u:***@127.0.0.1:1/db: ")
    assert "secret" not in message
    assert "\n" not in message
    assert info.value.__cause__ is None


def test_a_password_echoed_by_the_driver_is_scrubbed() -> None:
    pytest.importorskip("psycopg")
    # libpq rejects the option and quotes it back; the password must not come with it.
    with pytest.raises(StoreError) as info:
        open_store("postgresql://u@127.0.0.1:1/db?password=hunter2&bogus=1", Path("/x"))
    assert "hunter2" not in str(info.value)


def test_a_file_that_is_not_a_database_raises_store_error(tmp_path: Path) -> None:
    path = tmp_path / "notes.db"
    path.write_bytes(b"this is not an SQLite database, just some text" * 100)
    damaged = f"the store at sqlite:///{path} is damaged (file is not a database); move {path}"
    with pytest.raises(StoreError, match=re.escape(damaged)):
        open_store(f"sqlite:///{path}", tmp_path)


def test_an_uncreatable_folder_raises_store_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(StoreError, match=r"cannot create .*file/sub"):
        open_store(None, tmp_path / "file" / "sub")


def test_open_store_returns_a_sql_store(tmp_path: Path) -> None:
    with contextlib.closing(open_store("sqlite://", tmp_path)) as store:
        assert isinstance(store, SqlStore)
        assert repr(store) == "SqlStore('sqlite://')"
