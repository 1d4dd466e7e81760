"""Every place that opens an object URL reaches a bucket as ``operators/object_storage.py``
configures it, and sees it as it is now, against a local S3 server (moto, on
127.0.0.1, with authentication on: ``support/s3.py``).

``AWS_ENDPOINT_URL`` points at a closed port and only ``STAGEFLOW_S3_ENDPOINT_URL``
(which wins) names the server, so a URL opened without ``object_storage`` fails.
Each test first lets the process list the prefix before the object is written:
a listing that filesystem cached must not hide it. Covered: a freshness check of
an object, a pandera schema file in a bucket, a file sensor (poked in-process,
and waiting in a real ``stageflow run``), and an object schedule polled by a
real ``stageflow scheduler`` that fires once per new (or rewritten) object.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers_places import Place, kill_group, place_on
from helpers_tasks import clean_environ, store_of, wait_until

from stageflow.operators import object_storage
from stageflow.operators.base import TaskFailed
from stageflow.runtime.artifacts import artifact_store, load_output
from stageflow.runtime.store.sql_run_retries import object_url
from support.s3 import S3Server, child_env, s3_server, use_in_this_process

pytestmark = pytest.mark.slow

STAGEFLOW = Path(sys.executable).with_name("stageflow")
CLOSED = "http://127.0.0.1:9"  # nothing listens there: only stageflow's own setting works


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    with s3_server() as server:
        yield server


def _settings(server: S3Server) -> dict[str, str]:
    return {"AWS_ENDPOINT_URL": CLOSED, "STAGEFLOW_S3_ENDPOINT_URL": server.endpoint}


@pytest.fixture
def here(s3: S3Server, monkeypatch: pytest.MonkeyPatch) -> S3Server:
    """``s3``, with this process pointed at it as the module docstring says."""
    use_in_this_process(monkeypatch, s3)
    for name, value in _settings(s3).items():
        monkeypatch.setenv(name, value)
    return s3


def _list_before(server: S3Server, url: str) -> None:
    """Write another object beside ``url`` and list their folder as this process's
    filesystem (which caches the listing)."""
    bucket, key = url.removeprefix("s3://").split("/", 1)
    folder = key.rsplit("/", 1)[0]
    server.client().put_object(Bucket=bucket, Key=f"{folder}/before.txt", Body=b"")
    fs, path = object_storage.filesystem(url)
    assert fs.ls(path.rsplit("/", 1)[0]) == [f"{bucket}/{folder}/before.txt"]


# -- data_validation: freshness of an object, a pandera schema in a bucket ---------------


def _validate(tmp_path: Path, **params: Any) -> dict[str, Any]:
    pd = pytest.importorskip("pandas")
    from stageflow.operators.ml.validation import DataValidation, ValidationParams
    from support.ml import make_ctx

    ctx = make_ctx(tmp_path, "validate", pipeline_dir=tmp_path)
    try:
        DataValidation().run(
            ValidationParams.model_validate(params), {"ingest": pd.DataFrame({"a": [1]})}, ctx
        )
    finally:
        report = tmp_path / "artifacts" / "runs" / "r1" / "validate" / "validation_report.json"
        found: dict[str, Any] = json.loads(report.read_text()) if report.exists() else {}
    return found


def test_freshness_of_an_s3_object_is_its_last_modified_time(
    here: S3Server, tmp_path: Path
) -> None:
    bucket = here.bucket()
    url = f"s3://{bucket}/drop/orders.csv"
    _list_before(here, url)
    here.client().put_object(Bucket=bucket, Key="drop/orders.csv", Body=b"id\n1\n")
    written = here.client().head_object(Bucket=bucket, Key="drop/orders.csv")["LastModified"]

    report = _validate(tmp_path, freshness={"path": url, "max_age": "1h"})

    (check,) = report["checks"]
    assert check["passed"] is True, check
    assert check["newest"] == written.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert 0 <= check["age_seconds"] < 60
    with pytest.raises(TaskFailed) as info:  # a failed check fails the task
        _validate(tmp_path, freshness={"path": f"s3://{bucket}/drop/none.csv", "max_age": "1h"})
    assert f"no file at s3://{bucket}/drop/none.csv" in str(info.value)


def test_freshness_with_refused_credentials_says_what_to_check(
    here: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bucket = here.bucket()
    here.client().put_object(Bucket=bucket, Key="drop/orders.csv", Body=b"id\n1\n")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong-" + "8" * 30)

    with pytest.raises(TaskFailed) as info:
        _validate(tmp_path, freshness={"path": f"s3://{bucket}/drop/orders.csv", "max_age": "1h"})

    message = str(info.value)
    assert message.startswith(
        f"data_validation: freshness: cannot read s3://{bucket}/drop/orders.csv: access denied "
        f"at {here.endpoint}"
    ), message
    assert "8" * 30 not in message
    assert info.value.retryable is False


def test_a_pandera_schema_file_is_read_from_a_bucket(here: S3Server) -> None:
    from stageflow.operators.ml.pandera_schema import read_schema_file

    bucket = here.bucket()
    url = f"s3://{bucket}/schemas/orders.yaml"
    _list_before(here, url)
    schema = "schema_type: dataframe\ncolumns:\n  id: {dtype: int64}\n"
    here.client().put_object(Bucket=bucket, Key="schemas/orders.yaml", Body=schema.encode())

    assert read_schema_file(url) == schema
    with pytest.raises(TaskFailed) as info:
        read_schema_file(f"s3://{bucket}/schemas/none.yaml")
    assert str(info.value) == (
        f"data_validation: pandera.file: cannot read s3://{bucket}/schemas/none.yaml: "
        "no such object"
    )


# -- the file sensor ---------------------------------------------------------------------


def test_a_file_sensor_on_s3_sees_each_new_object_at_its_next_poke(here: S3Server) -> None:
    from stageflow.operators.sensor import SensorParams, poke

    bucket = here.bucket()
    params = SensorParams(kind="file", path=f"s3://{bucket}/in/*.csv")
    here.client().put_object(Bucket=bucket, Key="in/notes.txt", Body=b"not matched")

    def found() -> Any:
        return poke(params, pipeline_dir="/", now=time.time())

    first = found()
    assert (first.met, first.message) == (False, f"no file matches s3://{bucket}/in/*.csv")
    here.client().put_object(Bucket=bucket, Key="in/a.csv", Body=b"a\n")
    assert found().value == [f"s3://{bucket}/in/a.csv"]
    here.client().put_object(Bucket=bucket, Key="in/b.csv", Body=b"b\n")
    assert found().value == [f"s3://{bucket}/in/a.csv", f"s3://{bucket}/in/b.csv"]


def test_a_glob_in_a_missing_bucket_says_so_instead_of_finding_nothing(here: S3Server) -> None:
    """s3fs lists a bucket that does not exist as empty: a sensor or an object schedule
    on a misspelt bucket waited silently. Now the listing fails with one line (an
    existing bucket with nothing matching still lists as empty)."""
    from stageflow.errors import ObjectStorageError
    from stageflow.operators.sensor import SensorParams, poke

    assert object_storage.glob(f"s3://{here.bucket()}/in/*.csv") == []
    with pytest.raises(ObjectStorageError) as caught:
        object_storage.glob("s3://no-such-bucket/in/*.csv", "on_object")
    assert str(caught.value) == (
        "on_object: cannot list s3://no-such-bucket/in/*.csv: there is no bucket "
        f"'no-such-bucket' at {here.endpoint}; create it, or name an existing one"
    )
    assert not caught.value.retryable
    waiting = poke(
        SensorParams(kind="file", path="s3://no-such-bucket/in/*.csv"),
        pipeline_dir="/",
        now=time.time(),
    )
    assert not waiting.met
    assert "there is no bucket 'no-such-bucket'" in waiting.message  # shown by `runs show`


def test_a_run_waits_in_its_sensor_until_the_object_is_written(
    s3: S3Server, tmp_path: Path
) -> None:
    bucket = s3.bucket()
    url = f"s3://{bucket}/inbox/orders-1.csv"
    spec = tmp_path / "wait.json"
    sensor = {"kind": "file", "path": f"s3://{bucket}/inbox/*.csv", "poke_interval": "0.2s"}
    spec.write_text(
        json.dumps(
            {
                "name": "wait-s3",
                "tasks": [
                    {"id": "wait", "operator": "sensor", "parameters": {**sensor, "timeout": 60}},
                    {
                        "id": "load",
                        "operator": "bash",
                        "after": ["wait"],
                        "parameters": {"command": "echo loaded"},
                    },
                ],
            }
        )
    )
    home = tmp_path / "home"
    err = (tmp_path / "run-stderr.log").open("w+b")
    proc = subprocess.Popen(
        [str(STAGEFLOW), "--home", str(home), "run", str(spec)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=err,
        env=child_env(clean_environ(os.environ), s3, **_settings(s3)),
        start_new_session=True,
    )
    try:

        def sensing() -> bool:
            assert proc.poll() is None, "the run ended before the object was written"
            with store_of(home) as store:
                runs = store.list_runs()
                tasks = (
                    {t.task_id: t.state for t in store.task_runs(runs[0].run_id)} if runs else {}
                )
            return tasks.get("wait") == "sensing"

        wait_until(sensing, "the sensor waits", timeout=60)
        time.sleep(0.6)  # a few pokes: the process has listed the prefix
        s3.client().put_object(Bucket=bucket, Key="inbox/orders-1.csv", Body=b"id\n1\n")
        assert proc.wait(timeout=60) == 0, err.seek(0) or err.read().decode()
    finally:
        if proc.poll() is None:
            kill_group(proc)
        err.close()
    with store_of(home) as store:
        (run,) = store.list_runs()
        states = {t.task_id: t.state for t in store.task_runs(run.run_id)}
        ref = store.outputs(run.run_id)["wait"]
    assert states == {"wait": "success", "load": "success"}
    assert load_output(ref, artifact_store(str(home / "artifacts"))) == [url]


# -- an object schedule on s3://bucket/prefix/*.csv ---------------------------------------


@pytest.fixture
def place(here: S3Server, tmp_path: Path) -> Iterator[Place]:
    with place_on("sqlite", tmp_path, Place) as found:
        yield found


def test_an_object_schedule_on_s3_fires_once_per_new_object(here: S3Server, place: Place) -> None:
    bucket = here.bucket()
    settings = _settings(here)  # the rest of the server's settings are this process's

    def ok(*args: str) -> str:
        r = place.cli(*args, **settings)
        assert r.returncode == 0 and "Traceback" not in r.stderr, r
        return r.stdout

    def put(key: str, body: bytes) -> None:
        here.client().put_object(Bucket=bucket, Key=key, Body=body)

    put("in/old.csv", b"present before the schedule\n")
    spec = place.tmp / "ingest.json"
    task = {"id": "load", "operator": "bash", "parameters": {"command": "true"}}
    spec.write_text(json.dumps({"name": "ingest", "tasks": [task]}))
    ok("cancel", ok("submit", str(spec)).strip())  # saves the pipeline
    url = f"s3://{bucket}/in/*.csv"
    ok("schedules", "add", "watch", "ingest", "--on-object", url, "--poll", "1s")
    place.start("scheduler", "scheduler", "--poll-seconds", "0.2", **settings)

    def fired() -> list[str]:
        """The objects that fired a run, in the order of their runs."""
        with place.store() as store:
            runs = [r for r in store.list_runs(limit=100) if r.triggered_by == "schedule:watch"]
            seen = store.seen_objects("watch")
        assert len(seen) >= len(runs) + 1, (seen, runs)  # old.csv: seen, never fired
        return [r.run_id for r in sorted(runs, key=lambda r: r.created_at)]

    def runs(n: int) -> None:
        wait_until(lambda: len(fired()) >= n, f"{n} runs fired", timeout=30)

    def polled() -> bool:
        with place.store() as store:
            record = store.get_schedule("watch")
        return record is not None and record.last_tick is not None

    wait_until(polled, "the scheduler has listed the prefix", timeout=30)
    put("in/a.csv", b"a\n")
    runs(1)
    put("in/b.csv", b"b\n")
    put("in/notes.txt", b"not matched\n")
    runs(2)
    put("in/a.csv", b"a, written again\n")  # a new ETag: a new object
    runs(3)
    time.sleep(2.5)  # more polls: still one run per object
    assert len(fired()) == 3
    with place.store() as store:
        seen = sorted(object_url(k) for k in store.seen_objects("watch"))
    prefix = f"s3://{bucket}/in/"
    assert seen == [prefix + "a.csv", prefix + "a.csv", prefix + "b.csv", prefix + "old.csv"]
    assert "could not list" not in place.stderr("scheduler")
