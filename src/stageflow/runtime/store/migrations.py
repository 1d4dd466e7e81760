"""Versioned schema migrations of the metadata store.

``MIGRATIONS`` is an ordered list; step *n* takes the schema from version *n-1*
to *n* and holds its SQL for each dialect.  The table ``stageflow_schema`` holds
one row: the version the database is at (no table means version 0, empty).

Opening a store calls :func:`migrate`: it reads the version without writing,
refuses a database newer than this code knows (a newer stageflow wrote it; an
older one must not guess), and otherwise applies every pending step and the new
version in ONE transaction, so a failed migration leaves the database as it was.
Concurrent openers are serialised (SQLite: ``BEGIN IMMEDIATE``; PostgreSQL: a
transaction-scoped advisory lock) and re-read the version once they hold the lock.

To change the schema, append a step; never edit a released one.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from stageflow.errors import StoreError
from stageflow.runtime.store.dialect import (
    POSTGRESQL,
    SQLITE,
    Connection,
    Cursor,
    Dialect,
    one_line,
)

__all__ = [
    "LATEST_VERSION",
    "MIGRATIONS",
    "Migration",
    "migrate",
    "read_schema_version",
    "schema_version",
]


@dataclass(frozen=True, slots=True)
class Migration:
    """One schema step: from ``version - 1`` to ``version``."""

    version: int
    description: str
    sqlite: tuple[str, ...]
    postgresql: tuple[str, ...]

    def statements(self, dialect: Dialect) -> tuple[str, ...]:
        return self.sqlite if dialect is SQLITE else self.postgresql


def _for_both(version: int, description: str, *templates: str) -> Migration:
    """A step whose SQL differs between dialects only in column types."""
    return Migration(
        version,
        description,
        sqlite=tuple(SQLITE.ddl(t) for t in templates),
        postgresql=tuple(POSTGRESQL.ddl(t) for t in templates),
    )


_EVENT_BATCHES = """CREATE TABLE event_batches (
    id {id},
    run_id TEXT NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
    events TEXT NOT NULL
)"""
_EVENT_BATCHES_INDEX = "CREATE INDEX event_batches_by_run_id ON event_batches (run_id, id)"

MIGRATIONS: list[Migration] = [
    _for_both(
        1,
        "pipelines, runs, task runs, attempts, events, outputs",
        """CREATE TABLE pipelines (
            name TEXT NOT NULL,
            version TEXT NOT NULL,
            spec_json TEXT NOT NULL,
            created_at {real} NOT NULL,
            PRIMARY KEY (name, version)
        )""",
        """CREATE TABLE runs (
            run_id TEXT PRIMARY KEY,
            pipeline TEXT NOT NULL,
            pipeline_version TEXT NOT NULL,
            state TEXT NOT NULL,
            params_json TEXT NOT NULL,
            created_at {real} NOT NULL,
            started_at {real},
            ended_at {real},
            owner_host TEXT,
            owner_pid {bigint},
            owner_started_at {real},
            heartbeat_at {real},
            executor TEXT,
            source TEXT
        )""",
        "CREATE INDEX runs_by_created_at ON runs (created_at, run_id)",
        "CREATE INDEX runs_by_pipeline ON runs (pipeline, created_at, run_id)",
        """CREATE TABLE task_runs (
            run_id TEXT NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
            task_id TEXT NOT NULL,
            seq INTEGER NOT NULL,
            state TEXT NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0,
            started_at {real},
            ended_at {real},
            error TEXT,
            PRIMARY KEY (run_id, task_id)
        )""",
        "CREATE UNIQUE INDEX task_runs_by_seq ON task_runs (run_id, seq)",
        """CREATE TABLE attempts (
            run_id TEXT NOT NULL,
            task_id TEXT NOT NULL,
            attempt INTEGER NOT NULL,
            state TEXT NOT NULL,
            started_at {real},
            ended_at {real},
            error TEXT,
            PRIMARY KEY (run_id, task_id, attempt),
            FOREIGN KEY (run_id, task_id) REFERENCES task_runs (run_id, task_id)
                ON DELETE CASCADE
        )""",
        """CREATE TABLE events (
            id {id},
            run_id TEXT NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
            task_id TEXT,
            from_state TEXT,
            to_state TEXT NOT NULL,
            at {real} NOT NULL,
            attempt INTEGER NOT NULL DEFAULT 0,
            message TEXT
        )""",
        "CREATE INDEX events_by_run_id ON events (run_id, id)",
        """CREATE TABLE outputs (
            run_id TEXT NOT NULL,
            task_id TEXT NOT NULL,
            kind TEXT NOT NULL CHECK (kind IN ('inline', 'file')),
            serializer TEXT NOT NULL,
            size {bigint} NOT NULL,
            sha256 TEXT NOT NULL,
            data {blob},
            uri TEXT,
            PRIMARY KEY (run_id, task_id),
            FOREIGN KEY (run_id, task_id) REFERENCES task_runs (run_id, task_id)
                ON DELETE CASCADE
        )""",
    ),
    _for_both(
        2,
        "cache entries, circuit breakers, task run notes (cached / fallback)",
        """CREATE TABLE cache_entries (
            cache_key TEXT PRIMARY KEY,
            pipeline TEXT NOT NULL,
            run_id TEXT NOT NULL,
            task_id TEXT NOT NULL,
            kind TEXT NOT NULL CHECK (kind IN ('inline', 'file')),
            serializer TEXT NOT NULL,
            size {bigint} NOT NULL,
            sha256 TEXT NOT NULL,
            data {blob},
            uri TEXT,
            created_at {real} NOT NULL,
            expires_at {real}
        )""",
        "CREATE INDEX cache_entries_by_expires_at ON cache_entries (expires_at)",
        """CREATE TABLE circuits (
            name TEXT PRIMARY KEY,
            state TEXT NOT NULL CHECK (state IN ('closed', 'open', 'half_open')),
            failures INTEGER NOT NULL DEFAULT 0,
            opened_until {real},
            trial_started {real},
            updated_at {real}
        )""",
        "ALTER TABLE task_runs ADD COLUMN note TEXT",
    ),
    _for_both(
        3,
        "control requests (cancel, pause, unpause, approve, reject) from other processes",
        """CREATE TABLE control_requests (
            id {id},
            run_id TEXT NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
            request TEXT NOT NULL
                CHECK (request IN ('cancel', 'pause', 'unpause', 'approve', 'reject')),
            task_id TEXT,
            requested_at {real} NOT NULL,
            requested_by TEXT NOT NULL,
            comment TEXT
        )""",
        "CREATE INDEX control_requests_by_run_id ON control_requests (run_id, id)",
    ),
    _for_both(
        4,
        "reproducibility records and artifact lineage (runtime/lineage.py)",
        """CREATE TABLE run_records (
            run_id TEXT PRIMARY KEY REFERENCES runs (run_id) ON DELETE CASCADE,
            record_json TEXT NOT NULL,
            updated_at {real} NOT NULL
        )""",
        """CREATE TABLE artifact_links (
            run_id TEXT NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
            task_id TEXT NOT NULL,
            direction TEXT NOT NULL CHECK (direction IN ('read', 'write')),
            uri TEXT NOT NULL,
            sha256 TEXT,
            kind TEXT,
            PRIMARY KEY (run_id, task_id, direction, uri)
        )""",
        "CREATE INDEX artifact_links_by_sha256 ON artifact_links (sha256)",
        "CREATE INDEX artifact_links_by_uri ON artifact_links (uri)",
    ),
    _for_both(
        5,
        "attempts: queue time, resources requested and assigned, measured usage",
        "ALTER TABLE attempts ADD COLUMN queued_at {real}",
        "ALTER TABLE attempts ADD COLUMN request_json TEXT",
        "ALTER TABLE attempts ADD COLUMN gpu_devices TEXT",
        "ALTER TABLE attempts ADD COLUMN cpu_seconds {real}",
        "ALTER TABLE attempts ADD COLUMN peak_rss_mb {real}",
        "ALTER TABLE attempts ADD COLUMN gpu_seconds {real}",
    ),
    _for_both(
        6,
        "runs: leases (owner, epoch, expiry; engine.lease) and priority",
        "ALTER TABLE runs ADD COLUMN lease_owner TEXT",
        "ALTER TABLE runs ADD COLUMN lease_epoch {bigint} NOT NULL DEFAULT 0",
        "ALTER TABLE runs ADD COLUMN lease_expires_at {real}",
        "ALTER TABLE runs ADD COLUMN priority INTEGER NOT NULL DEFAULT 0",
        # An unfinished run recorded before leases existed gets the lease its last
        # heartbeat would have given (15 s, the default): a run whose process died
        # long ago is taken over at once, one that was just running is not.
        """UPDATE runs SET lease_owner = owner_host || ':' || CAST(owner_pid AS TEXT),
            lease_expires_at = heartbeat_at + 15
            WHERE state IN ('queued', 'running', 'paused') AND owner_host IS NOT NULL
            AND owner_pid IS NOT NULL AND heartbeat_at IS NOT NULL""",
    ),
    _for_both(
        7,
        "global pools (deployment-wide slots) and their holdings (runtime/pools.py)",
        """CREATE TABLE pools (
            name TEXT PRIMARY KEY,
            slots INTEGER NOT NULL CHECK (slots >= 0),
            updated_at {real} NOT NULL
        )""",
        # A holding is live while its run's lease is (same epoch, not expired, run
        # not final): Store.acquire_pool_slot deletes the others as it goes.
        """CREATE TABLE pool_slots (
            pool TEXT NOT NULL REFERENCES pools (name) ON DELETE CASCADE,
            run_id TEXT NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
            task_id TEXT NOT NULL,
            attempt INTEGER NOT NULL,
            lease_epoch {bigint} NOT NULL,
            acquired_at {real} NOT NULL,
            PRIMARY KEY (pool, run_id, task_id)
        )""",
        "CREATE INDEX pool_slots_by_run_id ON pool_slots (run_id)",
    ),
    _for_both(
        8,
        "attempts: table rows in and out (runtime/attempt.py counts them)",
        "ALTER TABLE attempts ADD COLUMN rows_in {bigint}",
        "ALTER TABLE attempts ADD COLUMN rows_out {bigint}",
    ),
    _for_both(
        9,
        "runs: the queue's index (Store.claim_next, claimable_runs): only unfinished runs",
        # Partial: a store with 100,000 finished runs keeps a claim as cheap as an
        # empty one (the planners use it: the queries repeat this WHERE clause).
        "CREATE INDEX runs_in_queue ON runs (priority DESC, created_at, run_id) "
        "WHERE state IN ('queued', 'running')",
    ),
    Migration(
        10,
        "events: one row per run per commit (event_batches), not one per transition",
        # A commit writes a run's transitions as one JSON array of [task_id, from_state,
        # to_state, at, attempt, message] rows: a 200-task run commits 600 of them.
        # Each old event becomes a batch of one, under its old id (their order stays).
        # Both backends keep every digit of a time: SQLite's json_array would write a
        # REAL with 15 significant digits, so ``at`` goes in as its 17-digit text
        # (printf's '!' keeps the '.0' of a whole number); PostgreSQL's json does.
        sqlite=(
            SQLITE.ddl(_EVENT_BATCHES),
            _EVENT_BATCHES_INDEX,
            "INSERT INTO event_batches (id, run_id, events) SELECT id, run_id, "
            "json_array(json_array(task_id, from_state, to_state, "
            "json(printf('%!.17g', at)), attempt, message)) FROM events",
            "DROP TABLE events",
        ),
        postgresql=(
            POSTGRESQL.ddl(_EVENT_BATCHES),
            _EVENT_BATCHES_INDEX,
            "INSERT INTO event_batches (id, run_id, events) SELECT id, run_id, "
            "json_build_array(json_build_array(task_id, from_state, to_state, at, attempt, "
            "message))::text FROM events",
            "SELECT setval(pg_get_serial_sequence('event_batches', 'id'), "
            "(SELECT MAX(id) FROM event_batches))",
            "DROP TABLE events",
        ),
    ),
    _for_both(
        11,
        "the service: owners of pipelines and runs, deleted pipelines, who triggered a "
        "run, API tokens (hashed), the audit log",
        "ALTER TABLE pipelines ADD COLUMN owner TEXT",
        "ALTER TABLE pipelines ADD COLUMN deleted_at {real}",
        "ALTER TABLE runs ADD COLUMN owner TEXT",
        "ALTER TABLE runs ADD COLUMN triggered_by TEXT",
        "CREATE INDEX runs_by_owner ON runs (owner, created_at, run_id)",
        """CREATE TABLE api_tokens (
            token_id TEXT PRIMARY KEY,
            name TEXT NOT NULL UNIQUE,
            role TEXT NOT NULL CHECK (role IN ('viewer', 'operator', 'editor', 'admin')),
            owner TEXT,
            secret_sha256 TEXT NOT NULL,
            created_at {real} NOT NULL,
            expires_at {real},
            revoked_at {real},
            last_used_at {real}
        )""",
        """CREATE TABLE audit_log (
            id {id},
            at {real} NOT NULL,
            actor TEXT NOT NULL,
            role TEXT,
            owner TEXT,
            action TEXT NOT NULL,
            target TEXT,
            client TEXT,
            status INTEGER NOT NULL,
            detail TEXT
        )""",
        "CREATE INDEX audit_log_by_at ON audit_log (at, id)",
    ),
    _for_both(
        12,
        "workers: each live worker's capacity and heartbeat; runs: how many times their "
        "lease was taken over (the service's metrics)",
        """CREATE TABLE workers (
            owner TEXT PRIMARY KEY,
            host TEXT NOT NULL,
            pid {bigint} NOT NULL,
            started_at {real} NOT NULL,
            heartbeat_at {real} NOT NULL,
            capacity_json TEXT NOT NULL,
            concurrency INTEGER NOT NULL
        )""",
        "ALTER TABLE runs ADD COLUMN takeovers INTEGER NOT NULL DEFAULT 0",
    ),
    _for_both(
        13,
        "schedules, and the run each of their ticks made (one per schedule and tick)",
        """CREATE TABLE schedules (
            name TEXT PRIMARY KEY,
            pipeline TEXT NOT NULL,
            spec_json TEXT NOT NULL,
            params_json TEXT NOT NULL,
            priority INTEGER NOT NULL DEFAULT 0,
            max_active_runs INTEGER,
            enabled INTEGER NOT NULL DEFAULT 1,
            last_tick {real},
            owner TEXT,
            created_at {real} NOT NULL,
            updated_at {real} NOT NULL,
            next_at {real}
        )""",
        "CREATE INDEX schedules_due ON schedules (next_at) WHERE enabled = 1",
        """CREATE TABLE schedule_runs (
            schedule TEXT NOT NULL,
            logical_time {real} NOT NULL,
            run_id TEXT NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
            interval_start {real},
            PRIMARY KEY (schedule, logical_time)
        )""",
        "CREATE INDEX schedule_runs_by_run_id ON schedule_runs (run_id)",
    ),
    _for_both(
        14,
        "notifications: one delivery per (key, channel index), its state and tries",
        """CREATE TABLE notifications (
            id {id},
            key TEXT NOT NULL,
            channel_index INTEGER NOT NULL,
            created_at {real} NOT NULL,
            kind TEXT NOT NULL,
            pipeline TEXT,
            run_id TEXT,
            task TEXT,
            owner TEXT,
            channel_kind TEXT NOT NULL,
            target TEXT NOT NULL,
            channel_json TEXT NOT NULL,
            message_json TEXT NOT NULL,
            state TEXT NOT NULL CHECK (state IN ('pending', 'sending', 'delivered', 'failed')),
            attempts INTEGER NOT NULL DEFAULT 0,
            last_error TEXT,
            next_try_at {real},
            claimed_until {real},
            delivered_at {real},
            UNIQUE (key, channel_index)
        )""",
        "CREATE INDEX notifications_due ON notifications (next_try_at) "
        "WHERE state IN ('pending', 'sending')",
        "CREATE INDEX notifications_by_run_id ON notifications (run_id, id)",
    ),
    _for_both(
        15,
        "alert rules, and alerts: open -> acknowledged -> resolved; one active alert per "
        "(rule, subject), one per deadline key",
        """CREATE TABLE alert_rules (
            rule_id TEXT PRIMARY KEY,
            pipeline TEXT,
            task TEXT,
            metric TEXT NOT NULL,
            condition TEXT NOT NULL,
            threshold_json TEXT NOT NULL,
            severity TEXT NOT NULL CHECK (severity IN ('info', 'warning', 'critical')),
            cooldown_seconds {real} NOT NULL,
            window_seconds {real} NOT NULL,
            k {real} NOT NULL,
            runs INTEGER NOT NULL,
            enabled INTEGER NOT NULL DEFAULT 1,
            description TEXT NOT NULL,
            channels_json TEXT NOT NULL,
            owner TEXT,
            source TEXT NOT NULL,
            created_at {real} NOT NULL,
            updated_at {real} NOT NULL
        )""",
        """CREATE TABLE alerts (
            alert_id TEXT PRIMARY KEY,
            rule_id TEXT NOT NULL,
            subject TEXT NOT NULL,
            dedup_key TEXT UNIQUE,
            state TEXT NOT NULL CHECK (state IN ('open', 'acknowledged', 'resolved')),
            severity TEXT NOT NULL,
            message TEXT NOT NULL,
            value_json TEXT,
            pipeline TEXT,
            run_id TEXT,
            task TEXT,
            owner TEXT,
            channels_json TEXT NOT NULL,
            opened_at {real} NOT NULL,
            acknowledged_by TEXT,
            acknowledged_at {real},
            resolved_by TEXT,
            resolved_at {real}
        )""",
        # Of processes evaluating one rule at once, one opens its alert for a subject.
        "CREATE UNIQUE INDEX alerts_one_active ON alerts (rule_id, subject) "
        "WHERE state <> 'resolved'",
        "CREATE INDEX alerts_by_opened_at ON alerts (opened_at, alert_id)",
        "CREATE INDEX alerts_by_rule ON alerts (rule_id, subject, opened_at)",
    ),
    _for_both(
        16,
        "metric samples: host and store gauges over time, one per (name, host, labels, "
        "slot) (runtime/monitor.py)",
        # host '' for the store's gauges (one series for the whole store); ``at`` is
        # the sampling slot's start, so processes sampling the same slot meet the key.
        """CREATE TABLE metric_samples (
            name TEXT NOT NULL,
            at {real} NOT NULL,
            host TEXT NOT NULL DEFAULT '',
            labels_json TEXT NOT NULL,
            value {real} NOT NULL,
            PRIMARY KEY (name, at, host, labels_json)
        )""",
        "CREATE INDEX metric_samples_by_at ON metric_samples (at)",
    ),
    _for_both(
        17,
        "runs: a not-before time (the queue skips a run until it); run retries (one per "
        "failed run: retry_of is unique); the objects an object schedule has seen",
        "ALTER TABLE runs ADD COLUMN not_before {real}",
        # One row per retry run: the failed run it retries (unique: of any number of
        # processes seeing the failure, one creates the retry), the first run of the
        # chain, its attempt number (the first run is attempt 1) and when it is due.
        """CREATE TABLE run_retries (
            run_id TEXT PRIMARY KEY REFERENCES runs (run_id) ON DELETE CASCADE,
            retry_of TEXT NOT NULL UNIQUE REFERENCES runs (run_id) ON DELETE CASCADE,
            first_run_id TEXT NOT NULL,
            attempt INTEGER NOT NULL,
            due_at {real} NOT NULL,
            created_at {real} NOT NULL
        )""",
        # The retry duty reads the failed runs by end time each second: a partial index.
        "CREATE INDEX runs_failed_by_ended_at ON runs (ended_at) WHERE state = 'failed'",
        # The time-out duty reads the started runs each second: a partial index.
        "CREATE INDEX runs_started ON runs (started_at) WHERE state IN ('running', 'paused')",
        # An object schedule's objects (path and modification time or etag): one row per
        # (schedule, object), written with the run it fires (run_id NULL: present when
        # the schedule was created, never fired).
        """CREATE TABLE schedule_objects (
            schedule TEXT NOT NULL,
            object_key TEXT NOT NULL,
            run_id TEXT REFERENCES runs (run_id) ON DELETE SET NULL,
            seen_at {real} NOT NULL,
            PRIMARY KEY (schedule, object_key)
        )""",
        "CREATE INDEX schedule_objects_by_run_id ON schedule_objects (run_id)",
    ),
    _for_both(
        18,
        "runs by end time: a /metrics scrape reads the attempts of the runs that ended "
        "recently (or have not ended), not the store's whole history",
        "CREATE INDEX runs_by_ended_at ON runs (ended_at)",
    ),
]

LATEST_VERSION = MIGRATIONS[-1].version

_SCHEMA_TABLE = "stageflow_schema"
_CREATE_SCHEMA_TABLE = "CREATE TABLE stageflow_schema (version INTEGER NOT NULL)"
_RESET_VERSION = "DELETE FROM stageflow_schema"
_INSERT_VERSION = "INSERT INTO stageflow_schema (version) VALUES (0)"
_SELECT_VERSION = "SELECT MAX(version) FROM stageflow_schema"
_UPDATE_VERSION = "UPDATE stageflow_schema SET version = ?"


def migrate(conn: Connection, dialect: Dialect, url: str) -> int:
    """Bring the database to ``LATEST_VERSION``; return the version it was at.

    Raises ``StoreError`` (and changes nothing) when the database is newer than
    this code, cannot be read, or a step fails.
    """
    cur = conn.cursor()
    error = dialect.driver_error()
    found = read_schema_version(conn, dialect, url)
    if found == LATEST_VERSION:
        return found
    try:
        cur.execute(dialect.begin)
        try:
            if dialect.migration_lock is not None:
                cur.execute(dialect.migration_lock)
            found = schema_version(cur, dialect)  # another process may have migrated
            _refuse_newer(found, url)
            _apply(cur, dialect, found)
            cur.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(Exception):  # the original error matters more
                cur.execute("ROLLBACK")
            raise
    except error as exc:
        raise StoreError(
            dialect.trouble(exc, url)
            or f"could not migrate the store at {url} to schema version {LATEST_VERSION}: "
            f"{one_line(exc)}"
        ) from None
    return found


def read_schema_version(conn: Connection, dialect: Dialect, url: str) -> int:
    """The database's schema version, read without writing anything.

    Raises ``StoreError`` when it cannot be read (the store's trouble said plainly:
    a damaged file, a failing disk) or is newer than this code.
    """
    try:
        found = schema_version(conn.cursor(), dialect)
    except dialect.driver_error() as exc:
        reason = dialect.trouble(exc, url)
        raise StoreError(reason or f"could not open the store at {url}: {one_line(exc)}") from None
    _refuse_newer(found, url)
    return found


def schema_version(cur: Cursor, dialect: Dialect) -> int:
    """The database's schema version; 0 when it has no ``stageflow_schema`` table."""
    cur.execute(dialect.table_exists, (_SCHEMA_TABLE,))
    if cur.fetchone() is None:
        return 0
    cur.execute(_SELECT_VERSION)
    row = cur.fetchone()
    return 0 if row is None or row[0] is None else int(row[0])


def _apply(cur: Cursor, dialect: Dialect, found: int) -> None:
    if found == LATEST_VERSION:
        return
    if found == 0:
        cur.execute(dialect.table_exists, (_SCHEMA_TABLE,))
        if cur.fetchone() is None:
            cur.execute(_CREATE_SCHEMA_TABLE)
        cur.execute(_RESET_VERSION)
        cur.execute(_INSERT_VERSION)
    for step in MIGRATIONS:
        if step.version > found:
            for statement in step.statements(dialect):
                cur.execute(statement)
    cur.execute(dialect.sql(_UPDATE_VERSION), (LATEST_VERSION,))


def _refuse_newer(found: int, url: str) -> None:
    if found > LATEST_VERSION:
        raise StoreError(
            f"the store at {url} has schema version {found} but this stageflow knows up to "
            f"{LATEST_VERSION}; upgrade stageflow (pip install -U stageflow)"
        )
