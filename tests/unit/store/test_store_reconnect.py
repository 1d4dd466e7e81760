"""A PostgreSQL store whose connection is ended under it (the server restarted, an
administrator ran ``pg_terminate_backend``): the call that finds it broken raises
``StoreUnreachable`` naming the store, and the next call reopens the connection;
a committer with such a store retries its batch and commits it once."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from stageflow.errors import StoreUnreachable
from stageflow.runtime.committer import Committer
from stageflow.runtime.store import Batch, EventRecord, Fence, RunRecord, SqlStore, open_store
from support.postgres import POSTGRES_URL, postgres_schema, require_postgres

pytestmark = pytest.mark.postgres


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqlStore]:
    require_postgres()
    with postgres_schema() as url:
        opened = open_store(url, tmp_path)
        assert isinstance(opened, SqlStore)
        try:
            yield opened
        finally:
            opened.close()


def end_connection(store: SqlStore) -> None:
    """``pg_terminate_backend`` on the store's own server session."""
    import psycopg

    (pid,) = store._fetchone("SELECT pg_backend_pid()", ())
    with psycopg.connect(POSTGRES_URL, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))


def test_a_broken_connection_is_reported_then_reopened(store: SqlStore) -> None:
    store.create_run(RunRecord("r1", "p", "v1", "queued", {}, 1.0), ["a"])
    end_connection(store)

    with pytest.raises(StoreUnreachable, match="lost the store at postgresql://"):
        store.get_run("r1")

    assert store.get_run("r1").state == "queued"  # the next call reopened it
    end_connection(store)
    with pytest.raises(StoreUnreachable):  # a write transaction too
        store.create_run(RunRecord("r2", "p", "v1", "queued", {}, 2.0), ["a"])
    store.create_run(RunRecord("r2", "p", "v1", "queued", {}, 2.0), ["a"])
    assert [r.run_id for r in store.list_runs()] == ["r2", "r1"]


def test_a_committer_retries_over_a_lost_connection_and_commits_once(store: SqlStore) -> None:
    import time

    store.create_run(RunRecord("r1", "p", "v1", "queued", {}, 1.0), ["a"])
    epoch = store.claim_run(
        "r1",
        owner="h:1",
        expected_epoch=0,
        host="h",
        pid=1,
        started_at=1.0,
        now=time.time(),
        ttl=30.0,
    )
    committer = Committer(store, lease_until=time.time() + 30.0)
    end_connection(store)

    now = time.time()
    committer.submit(
        Batch(
            events=[EventRecord("r1", "a", "running", "success", now, 1)],
            fences={"r1": Fence(epoch, now, now + 30.0)},
        )
    )
    committer.close()

    assert [(e.task_id, e.to_state) for e in store.events("r1")] == [("a", "success")]
    assert store.get_run("r1").lease_expires_at == now + 30.0
