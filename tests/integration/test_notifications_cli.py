"""Pipeline hooks end to end through the real ``stageflow`` CLI: ``stageflow run`` of a
failing pipeline tells its ``on_failure`` webhook before it exits (a secret URL never
shown or stored in clear); ``on_retry`` tells each retry; a dead channel never changes
the run's outcome; seed 002's ``email``/``email_on_failure`` mails over SMTP; bad
channels exit 2 naming the field; ``stageflow notifications list`` shows the log; two
schedulers send what a process left pending exactly once (SQLite and PostgreSQL)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from helpers_notify import dead_port, hook, mailbox, wait_for
from helpers_places import Place, place_on

from stageflow.runtime.notify import Message
from stageflow.runtime.store.base import NotificationRecord

FAST = {"STAGEFLOW_NOTIFY_TRIES": "2", "STAGEFLOW_NOTIFY_BACKOFF_SECONDS": "0.1"}


def spec(tmp: Path, text: str, name: str = "p.yaml") -> Path:
    path = tmp / name
    path.write_text(text)
    return path


def listed(place: Place, *args: str) -> list[dict[str, object]]:
    r = place.cli("notifications", "list", "--format", "json", *args)
    assert r.returncode == 0, r.stderr
    found: list[dict[str, object]] = json.loads(r.stdout)
    return found


def test_run_tells_on_failure_before_it_exits(tmp_path: Path) -> None:
    with place_on("sqlite", tmp_path, Place) as place, hook() as got:
        path = spec(
            tmp_path,
            "name: churn\n"
            "on_failure:\n"
            "  - webhook: ${secret:SF_TEST_HOOK}\n"
            "on_success:\n"
            "  - webhook: ${secret:SF_TEST_HOOK}\n"
            "tasks:\n"
            "  - {id: train, operator: bash, parameters: {command: 'echo diverged; exit 3'}}\n",
        )
        r = place.cli(
            "run", str(path), SF_TEST_HOOK=got.url(), STAGEFLOW_PUBLIC_URL="https://sf.example"
        )
        assert r.returncode == 1, r.stderr
        assert len(got.posts) == 1  # sent before the process ended
        [(_, body)] = got.posts
        run_id = body["run_id"]
        assert (body["kind"], body["pipeline"], body["task"]) == ("on_failure", "churn", "train")
        assert body["error"] == "bash command exited with code 3; last output:\ndiverged"
        assert body["link"] == f"https://sf.example/api/v1/runs/{run_id}"
        assert f"pipeline 'churn', run {run_id}: failed" in str(body["text"])
        [n] = listed(place, "--run", str(run_id))
        assert (n["state"], n["channel"], n["target"], n["kind"]) == (
            "delivered",
            "webhook",
            "secret:SF_TEST_HOOK",
            "on_failure",
        )
        text = place.cli("notifications", "list")
        assert text.returncode == 0 and "secret:SF_TEST_HOOK" in text.stdout
        for shown in (r.stdout, r.stderr, text.stdout, text.stderr):
            assert "s3cr3t-path" not in shown
        stored = b"".join(p.read_bytes() for p in place.home.rglob("*") if p.is_file())
        assert b"s3cr3t-path" not in stored


def test_on_retry_tells_each_retry_and_on_success_the_end(tmp_path: Path) -> None:
    marker = tmp_path / "tried"
    with place_on("sqlite", tmp_path, Place) as place, hook() as got:
        path = spec(
            tmp_path,
            "name: flaky\n"
            f"on_retry: [{{webhook: '{got.url('/retry')}'}}]\n"
            f"on_success: [{{webhook: '{got.url('/done')}'}}]\n"
            "tasks:\n"
            "  - id: fetch\n"
            "    operator: bash\n"
            "    retry: {max_retries: 2, delay_seconds: 0}\n"
            "    parameters:\n"
            f"      command: 'test -e {marker} || {{ touch {marker}; echo timeout; exit 1; }}'\n",
        )
        r = place.cli("run", str(path))
        assert r.returncode == 0, r.stderr
        paths = [p for p, _ in got.posts]
        assert sorted(paths) == ["/done", "/retry"]
        retry = next(b for p, b in got.posts if p == "/retry")
        assert (retry["kind"], retry["task"], retry["severity"]) == ("on_retry", "fetch", "warning")
        assert "task 'fetch' attempt 1 failed" in str(retry["subject"])
        assert "timeout" in str(retry["error"])
        done = next(b for p, b in got.posts if p == "/done")
        assert (done["kind"], done["task"], done["error"]) == ("on_success", None, None)


def test_a_dead_channel_leaves_the_run_as_it_was(tmp_path: Path) -> None:
    with place_on("sqlite", tmp_path, Place) as place:
        path = spec(
            tmp_path,
            "name: quiet\n"
            f"on_success: [{{webhook: 'http://127.0.0.1:{dead_port()}/x'}}]\n"
            "tasks:\n"
            "  - {id: a, operator: bash, parameters: {command: 'true'}}\n",
        )
        started = time.monotonic()
        r = place.cli("run", str(path), **FAST)
        assert r.returncode == 0, r.stderr
        assert time.monotonic() - started < 20
        [n] = listed(place, "--state", "failed")
        assert (n["state"], n["attempts"]) == ("failed", 2)
        assert "cannot reach http://127.0.0.1:" in str(n["last_error"])
        shown = place.cli("runs", "list", "--format", "json")
        assert [run["state"] for run in json.loads(shown.stdout)] == ["success"]


def test_seed_002_email_on_failure_mails_over_smtp(tmp_path: Path) -> None:
    with place_on("sqlite", tmp_path, Place) as place, mailbox() as box:
        path = tmp_path / "airflow.json"
        path.write_text(
            json.dumps(
                {
                    "pipeline_id": "nightly",
                    "default_args": {
                        "owner": "ml_team",
                        "email": ["ml-alerts@company.com"],
                        "email_on_failure": True,
                        "email_on_retry": False,
                    },
                    "tasks": [
                        {"task_id": "dump", "task_type": "bash", "parameters": {"command": "false"}}
                    ],
                }
            )
        )
        r = place.cli(
            "run",
            str(path),
            STAGEFLOW_SMTP_URL=f"smtp://127.0.0.1:{box.port}",
            STAGEFLOW_SMTP_FROM="stageflow@company.com",
        )
        assert r.returncode == 1, r.stderr
        [mail] = box.messages
        assert box.recipients == [["ml-alerts@company.com"]]
        assert mail["Subject"].startswith("stageflow: pipeline 'nightly' run ")
        assert mail["Subject"].endswith(" failed")
        assert "task 'dump' failed (attempt 1)" in mail.get_payload()


def test_bad_channels_exit_2_naming_the_field(tmp_path: Path) -> None:
    with place_on("sqlite", tmp_path, Place) as place:
        path = spec(
            tmp_path,
            "name: bad\n"
            "on_failure:\n"
            "  - webhook: https://hooks.example.com/x\n"
            "  - webhook: hooks.example.com\n"
            "on_retry: [{email: [nobody]}]\n"
            "tasks:\n"
            "  - {id: a, operator: bash, parameters: {command: 'true'}}\n",
        )
        for command in ("validate", "run"):
            r = place.cli(command, str(path))
            assert r.returncode == 2, r.stderr
            assert "field 'on_failure[1].webhook': must be an http:// or https:// URL" in r.stderr
            assert "field 'on_retry[0].email': 'nobody' is not an e-mail address" in r.stderr
            assert "Traceback" not in r.stderr
        bad = place.cli("notifications", "list", "--state", "lost")
        assert bad.returncode == 2 and "--state" in bad.stderr
        bad = place.cli("notifications", "list", "--run", "../x")
        assert bad.returncode == 2 and "--run" in bad.stderr and "Traceback" not in bad.stderr


def left_pending(url: str, index: int) -> NotificationRecord:
    message = Message(kind="on_failure", subject="s", text="t", pipeline="churn")
    return NotificationRecord(
        id=0,
        key="left-by-a-dead-process",
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
        message=message.as_json(),
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def test_two_schedulers_send_what_was_left_exactly_once(tmp_path: Path, backend: str) -> None:
    with place_on(backend, tmp_path, Place) as place, hook() as got:
        with place.store() as store:
            store.add_notifications([left_pending(got.url(f"/n{i}"), i) for i in range(10)])
        for name in ("one", "two"):
            place.start(name, "scheduler", "--poll-seconds", "0.2")
        wait_for(lambda: len(got.posts) >= 10, "both schedulers passed", timeout=60)
        time.sleep(1.0)  # a second post of any would come by now
        assert sorted(p for p, _ in got.posts) == sorted(f"/n{i}" for i in range(10))
        assert {n["state"] for n in listed(place)} == {"delivered"}
