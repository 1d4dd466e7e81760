"""``runtime.notify`` against real local servers: a webhook gets Slack-compatible JSON,
an SMTP server the e-mail, a command the message on stdin; a failing channel is tried
again with backoff and ends ``failed`` with its attempts and last error; a secret
webhook URL is never stored; deliveries left pending are sent exactly once however
many duties see them (SQLite and PostgreSQL)."""

from __future__ import annotations

import json
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest
from helpers_notify import dead_port, hook, mailbox, wait_for

from stageflow.runtime import notify as notify_module
from stageflow.runtime.notify import Message, NotificationDuty, deliver, notify, wait_for_deliveries
from stageflow.runtime.settings import Settings
from stageflow.runtime.store import open_store
from stageflow.runtime.store.base import NotificationRecord, Store
from support.postgres import postgres_schema, require_postgres

MESSAGE = Message(
    kind="on_failure",
    subject="stageflow: pipeline 'churn' run r1 failed",
    text="pipeline 'churn', run r1: failed\ntask 'train' failed",
    pipeline="churn",
    run_id="r1",
    task="train",
    error="boom",
    severity="critical",
    link="http://stageflow.local/api/v1/runs/r1",
)


def settings_in(tmp_path: Path, **changes: object) -> Settings:
    base = Settings(home=tmp_path / "home", notify_tries=3, notify_backoff=0.05, notify_wait=5)
    return replace(base, **changes)  # type: ignore[arg-type]  # test knobs by name


def test_a_webhook_gets_slack_compatible_json(tmp_path: Path) -> None:
    settings = settings_in(tmp_path)
    store = open_store(None, settings.home)
    try:
        with hook() as got:
            assert notify(settings, store, [{"webhook": got.url()}], MESSAGE, key="k1") == 1
            assert notify(settings, store, [{"webhook": got.url()}], MESSAGE, key="k1") == 0
            assert wait_for_deliveries(10)
            [(path, body)] = got.posts
        assert path == "/hook/T000/B000/s3cr3t-path"
        assert body["text"] == MESSAGE.text
        assert {k: body[k] for k in ("pipeline", "run_id", "task", "error", "link")} == {
            "pipeline": "churn",
            "run_id": "r1",
            "task": "train",
            "error": "boom",
            "link": "http://stageflow.local/api/v1/runs/r1",
        }
        assert (body["severity"], body["kind"]) == ("critical", "on_failure")
        [n] = store.notifications()
        assert (n.state, n.attempts, n.target) == ("delivered", 1, f"http://127.0.0.1:{got.port}")
    finally:
        store.close()


def test_an_email_goes_over_smtp(tmp_path: Path) -> None:
    with mailbox() as box:
        settings = settings_in(
            tmp_path,
            smtp_url=f"smtp://127.0.0.1:{box.port}",
            smtp_from="stageflow@example.com",
        )
        store = open_store(None, settings.home)
        try:
            channels = [{"email": ["oncall@example.com", "ml@example.com"]}]
            assert notify(settings, store, channels, MESSAGE, key="mail") == 1
            assert wait_for_deliveries(10)
        finally:
            store.close()
        [mail] = box.messages
    assert mail["Subject"] == MESSAGE.subject
    assert mail["From"] == "stageflow@example.com"
    assert box.recipients == [["oncall@example.com", "ml@example.com"]]
    assert "task 'train' failed" in mail.get_payload()


def test_an_email_subject_of_the_channel_wins(tmp_path: Path) -> None:
    with mailbox() as box:
        settings = settings_in(tmp_path, smtp_url=f"smtp://127.0.0.1:{box.port}")
        store = open_store(None, settings.home)
        try:
            channels = [{"email": ["a@example.com"], "subject": "churn is down"}]
            notify(settings, store, channels, MESSAGE, key="mail2")
            assert wait_for_deliveries(10)
        finally:
            store.close()
        assert [m["Subject"] for m in box.messages] == ["churn is down"]


def test_email_without_an_smtp_server_fails_naming_the_setting(tmp_path: Path) -> None:
    settings = settings_in(tmp_path, notify_tries=1)
    store = open_store(None, settings.home)
    try:
        notify(settings, store, [{"email": ["a@example.com"]}], MESSAGE, key="nomail")
        assert wait_for_deliveries(10)
        [n] = store.notifications()
        assert n.state == "failed"
        assert n.last_error is not None and "STAGEFLOW_SMTP_URL" in n.last_error
    finally:
        store.close()


def test_a_command_gets_the_message_on_stdin(tmp_path: Path) -> None:
    out = tmp_path / "got.json"
    script = (
        "import json, os, sys; doc = json.load(sys.stdin); "
        "doc['env_run'] = os.environ['STAGEFLOW_NOTIFY_RUN_ID']; "
        f"open({str(out)!r}, 'w').write(json.dumps(doc))"
    )
    settings = settings_in(tmp_path)
    store = open_store(None, settings.home)
    try:
        notify(settings, store, [{"command": [sys.executable, "-c", script]}], MESSAGE, key="c")
        assert wait_for_deliveries(10)
        [n] = store.notifications()
        assert (n.state, n.target) == ("delivered", sys.executable)
    finally:
        store.close()
    doc = json.loads(out.read_text())
    assert (doc["subject"], doc["task"], doc["env_run"]) == (MESSAGE.subject, "train", "r1")


@pytest.mark.parametrize("failure", ["refused", "http-500", "command-exit"])
def test_a_failing_channel_is_retried_then_failed(tmp_path: Path, failure: str) -> None:
    settings = settings_in(tmp_path, notify_tries=3, notify_backoff=0.2)
    store = open_store(None, settings.home)
    try:
        with hook(status=500) as got:
            channel: dict[str, object] = {
                "refused": {"webhook": f"http://127.0.0.1:{dead_port()}/x"},
                "http-500": {"webhook": got.url()},
                "command-exit": {
                    "command": [sys.executable, "-c", "import sys; sys.exit('no route')"]
                },
            }[failure]
            started = time.monotonic()
            assert notify(settings, store, [channel], MESSAGE, key="f") == 1
            assert wait_for_deliveries(15)
            took = time.monotonic() - started
            posts = len(got.posts)
        [n] = store.notifications()
        assert (n.state, n.attempts) == ("failed", 3)
        assert took >= 0.2 + 0.8  # the tries waited 0.2 s, then 0.8 s (x4)
        expected = {
            "refused": "cannot reach http://127.0.0.1:",
            "http-500": f"http://127.0.0.1:{got.port} answered HTTP 500",
            "command-exit": "exited 1: no route",
        }[failure]
        assert n.last_error is not None and expected in n.last_error, n.last_error
        assert posts == (3 if failure == "http-500" else 0)
    finally:
        store.close()


def test_a_secret_webhook_url_is_resolved_only_to_send(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = settings_in(tmp_path)
    store = open_store(None, settings.home)
    try:
        with hook() as got:
            monkeypatch.setenv("SF_HOOK_URL", got.url())
            notify(settings, store, [{"webhook": "${secret:SF_HOOK_URL}"}], MESSAGE, key="s")
            assert wait_for_deliveries(10)
            assert len(got.posts) == 1
        [n] = store.notifications()
        assert (n.state, n.target, n.channel) == (
            "delivered",
            "secret:SF_HOOK_URL",
            {"webhook": "${secret:SF_HOOK_URL}"},
        )
    finally:
        store.close()
    raw = b"".join(p.read_bytes() for p in settings.home.glob("*.db*"))
    assert b"s3cr3t-path" not in raw


def test_a_missing_secret_fails_naming_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SF_NO_SUCH_HOOK", raising=False)
    settings = settings_in(tmp_path, notify_tries=1)
    store = open_store(None, settings.home)
    try:
        notify(settings, store, [{"webhook": "${secret:SF_NO_SUCH_HOOK}"}], MESSAGE, key="m")
        assert wait_for_deliveries(10)
        [n] = store.notifications()
        assert n.state == "failed" and "secret 'SF_NO_SUCH_HOOK' is not set" in (n.last_error or "")
    finally:
        store.close()


def pending(url: str, index: int) -> NotificationRecord:
    return NotificationRecord(
        id=0,
        key="left-pending",
        channel_index=index,
        created_at=time.time(),
        kind="on_failure",
        pipeline="churn",
        run_id=None,
        task=None,
        owner=None,
        channel_kind="webhook",
        target="http://127.0.0.1",
        channel={"webhook": url},
        message=MESSAGE.as_json(),
    )


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def test_pending_deliveries_are_sent_once_by_racing_duties(tmp_path: Path, backend: str) -> None:
    """Deliveries a dead process left pending: four duties, each on its own connection,
    pass at once; each delivery is posted exactly once."""
    import contextlib

    with contextlib.ExitStack() as stack:
        url = None
        if backend == "postgres":
            require_postgres()
            url = stack.enter_context(postgres_schema())
        settings = settings_in(tmp_path, database_url=url)
        stores: list[Store] = [open_store(url, settings.home) for _ in range(4)]
        for s in stores:
            stack.callback(s.close)
        got = stack.enter_context(hook())
        ids = stores[0].add_notifications([pending(got.url(f"/n{i}"), i) for i in range(12)])
        barrier = threading.Barrier(len(stores))

        def race(store: Store) -> None:
            barrier.wait()
            now = time.time()
            for nid in store.due_notifications(now):
                deliver(settings, store, nid, now)

        threads = [threading.Thread(target=race, args=(s,)) for s in stores]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert sorted(p for p, _ in got.posts) == sorted(f"/n{i}" for i in range(12))
        assert {n.state for n in stores[0].notifications()} == {"delivered"}
        assert len(ids) == 12


def test_the_duty_hands_due_deliveries_to_the_sender(tmp_path: Path) -> None:
    settings = settings_in(tmp_path)
    store = open_store(None, settings.home)
    try:
        with hook() as got:
            store.add_notifications([pending(got.url("/left"), 0)])
            duty = NotificationDuty(settings, store)
            duty.run_pass(time.time())
            wait_for(lambda: len(got.posts) == 1, "the duty's delivery was posted")
            duty.run_pass(time.time())  # within its interval: nothing
            assert wait_for_deliveries(10)
            duty.run_pass(time.time() + 5)  # delivered: nothing is due
            assert wait_for_deliveries(10)
            assert len(got.posts) == 1
    finally:
        store.close()


def test_a_store_that_cannot_record_raises_nothing(tmp_path: Path) -> None:
    settings = settings_in(tmp_path)
    store = open_store(None, settings.home)
    store.close()
    assert notify(settings, store, [{"webhook": "http://127.0.0.1:9/x"}], MESSAGE, key="x") == 0
    assert notify_module.run_link(settings, "r1") is None
    linked = replace(settings, public_url="https://stageflow.example.com/")
    assert notify_module.run_link(linked, "r1") == "https://stageflow.example.com/api/v1/runs/r1"
