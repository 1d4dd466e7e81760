"""A store whose surroundings fail: a full disk, a damaged file, a read-only open.

Each failure is a ``StoreError`` that names the store's file and what to do,
never a raw driver error (which the CLI would show as an internal error). The
full disk is SQLite's own (``PRAGMA max_page_count``), so no root is needed; the
read-only open is checked by SQLite refusing the write, which holds for root too.
"""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

import pytest

from stageflow.errors import StoreError
from stageflow.runtime.committer import Committer
from stageflow.runtime.store import (
    Batch,
    EventRecord,
    PipelineRecord,
    RunRecord,
    SqlStore,
    open_store,
)

RUN = RunRecord("r1", "p", "v", "success", {}, 1.0)


def _store_with_a_run(home: Path) -> Path:
    with contextlib.closing(open_store(None, home)) as store:
        store.save_pipeline(PipelineRecord("p", "v", "{}", 1.0))
        store.create_run(RUN, [f"t{i}" for i in range(50)])
    return home / "stageflow.db"


def _damage(db: Path, tables: tuple[str, ...]) -> None:
    """Overwrite the root pages of ``tables`` (the schema page stays whole)."""
    with contextlib.closing(sqlite3.connect(db)) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        size = conn.execute("PRAGMA page_size").fetchone()[0]
        marks = ",".join("?" * len(tables))
        pages = [
            row[0]
            for row in conn.execute(
                f"SELECT rootpage FROM sqlite_master WHERE name IN ({marks})", tables
            )
        ]
    with open(db, "r+b") as f:
        for page in pages:
            f.seek((page - 1) * size)
            f.write(b"\xfe" * size)


def _fill_up(store: SqlStore) -> None:
    """Let the database grow no more: SQLite then fails as on a full disk."""
    conn = store._conn
    assert isinstance(conn, sqlite3.Connection)
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.execute(f"PRAGMA max_page_count = {pages}")


def test_a_full_disk_is_a_store_error_naming_the_file(tmp_path: Path) -> None:
    db = _store_with_a_run(tmp_path)
    with contextlib.closing(open_store(None, tmp_path)) as store:
        assert isinstance(store, SqlStore)
        _fill_up(store)
        with pytest.raises(StoreError) as info:
            store.create_run(
                RunRecord("r2", "p", "v", "queued", {}, 2.0), [f"task-{i}" for i in range(5000)]
            )
    message = str(info.value)
    assert "cannot be written: database or disk is full" in message
    assert f"free space on the disk that holds {db}" in message


def test_a_full_disk_under_the_committer_says_so_once(tmp_path: Path) -> None:
    _store_with_a_run(tmp_path)
    with contextlib.closing(open_store(None, tmp_path)) as store:
        assert isinstance(store, SqlStore)
        _fill_up(store)
        committer = Committer(store)
        batch = Batch()
        batch.events.extend(
            EventRecord(RUN.run_id, "t0", None, "queued", float(i), 1, "x" * 200)
            for i in range(5000)
        )
        committer.submit(batch)
        with pytest.raises(StoreError) as info:
            committer.close()
    message = str(info.value)
    assert message.startswith("could not write the run's state: the store at sqlite:///")
    assert "OperationalError" not in message
    assert "free space on the disk" in message


@pytest.mark.parametrize(
    ("read", "tables"),
    [
        pytest.param(lambda s: s.list_runs(), ("runs",), id="list_runs"),
        pytest.param(lambda s: s.task_runs("r1"), ("task_runs",), id="task_runs"),
        pytest.param(
            lambda s: s.create_run(RunRecord("r2", "p", "v", "queued", {}, 2.0), ["a"]),
            ("runs", "task_runs"),
            id="create_run",
        ),
    ],
)
def test_a_damaged_file_is_named_with_how_to_recover(
    tmp_path: Path, read: object, tables: tuple[str, ...]
) -> None:
    db = _store_with_a_run(tmp_path)
    _damage(db, tables)
    with contextlib.closing(open_store(None, tmp_path)) as store, pytest.raises(StoreError) as info:
        read(store)  # type: ignore[operator]  # one of the lambdas above
    message = str(info.value)
    assert f"the store at sqlite:///{db} is damaged (database disk image is malformed)" in message
    assert f"move {db} (and its -wal and -shm files) aside" in message
    assert f"sqlite3 {db} .recover | sqlite3 recovered.db" in message


@pytest.mark.parametrize("read_only", [False, True], ids=["read-write", "read-only"])
def test_a_file_that_is_no_database_is_named_as_damaged(tmp_path: Path, read_only: bool) -> None:
    (tmp_path / "stageflow.db").write_bytes(b"this is no SQLite database at all" * 200)
    with pytest.raises(StoreError, match=r"is damaged \(file is not a database\); move "):
        open_store(None, tmp_path, read_only=read_only)


def test_read_only_store_reads_and_never_writes(tmp_path: Path) -> None:
    db = _store_with_a_run(tmp_path)
    before = db.read_bytes()
    with contextlib.closing(open_store(None, tmp_path, read_only=True)) as store:
        assert [r.run_id for r in store.list_runs()] == ["r1"]
        assert len(store.task_runs("r1")) == 50
        with pytest.raises(
            StoreError, match=r"is read-only .*attempt to write a readonly database"
        ):
            store.save_pipeline(PipelineRecord("q", "v", "{}", 2.0))
        assert isinstance(store, SqlStore)
        conn = store._conn
        assert isinstance(conn, sqlite3.Connection)
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            conn.execute("DELETE FROM runs")
    assert db.read_bytes() == before


def test_read_only_store_of_a_missing_file_is_empty_and_creates_nothing(tmp_path: Path) -> None:
    home = tmp_path / "never-made"
    with contextlib.closing(open_store(None, home, read_only=True)) as store:
        assert store.list_runs() == []
        assert store.url == f"sqlite:///{home.absolute() / 'stageflow.db'}"
        with pytest.raises(StoreError, match="is read-only"):
            store.create_run(RUN, [])
    assert not home.exists()


def test_read_only_store_opens_without_its_index_files(tmp_path: Path) -> None:
    """A cleanly closed WAL database has no -wal/-shm beside it; read-only, with no
    right to create them, it is read as the file holds it (``immutable``)."""
    db = _store_with_a_run(tmp_path)
    for suffix in ("-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    with contextlib.closing(open_store(None, tmp_path, read_only=True)) as store:
        assert [r.run_id for r in store.list_runs()] == ["r1"]
