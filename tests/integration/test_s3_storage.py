"""Object storage: ``s3://`` artifact stores, sources and outputs, against a local S3
server (moto, on 127.0.0.1, with authentication on: ``support/s3.py``).

A pipeline whose artifacts live in a bucket runs, and resumes after ``kill -9``
without repeating a committed task; cache keys follow an object's ETag (also when
this process holds a stale listing of its prefix); ``data_ingestion`` reads CSV
and Parquet from a bucket and ``batch_inference`` writes its predictions there;
a missing bucket, refused credentials or a missing ``s3fs`` fail with one line
saying what to fix, and the secret appears nowhere.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers_places import kill_group
from helpers_tasks import clean_environ, read_lines, store_of, wait_until

from stageflow.operators import object_storage
from stageflow.runtime.cache import file_versions
from support.s3 import S3Server, child_env, s3_server, use_in_this_process

pytestmark = pytest.mark.slow

STAGEFLOW = Path(sys.executable).with_name("stageflow")
HERE = Path(__file__).resolve().parent
CHAIN = ["numbers", "s1", "s2", "s3", "s4", "s5", "s6", "total"]


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    with s3_server() as server:
        yield server


def _env(server: S3Server, **overrides: str) -> dict[str, str]:
    env = child_env(clean_environ(os.environ), server, **overrides)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE), env.get("PYTHONPATH")]))
    return env


def cli(
    home: Path, env: dict[str, str], *args: str, python_prefix: str | None = None
) -> subprocess.CompletedProcess[str]:
    command = [str(STAGEFLOW)]
    if python_prefix is not None:  # stageflow's CLI behind a line of Python
        command = [
            sys.executable,
            "-c",
            f"{python_prefix}\nfrom stageflow.service.cli import main\nsys.exit(main())",
        ]
    return subprocess.run(
        [*command, "--home", str(home), *args],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        env=env,
        timeout=120,
        check=False,
    )


def _chain_spec(path: Path, ledger: Path) -> None:
    lines = [
        "name: s3-chain",
        f"params: {{ledger: {json.dumps(str(ledger))}}}",
        "tasks:",
        "  - {id: numbers, call: 's3_tasks:numbers'}",
    ]
    previous = "numbers"
    for tid in CHAIN[1:-1]:
        lines.append(f"  - {{id: {tid}, call: 's3_tasks:add_one', inputs: {{values: {previous}}}}}")
        previous = tid
    lines.append(f"  - {{id: total, call: 's3_tasks:total', inputs: {{values: {previous}}}}}")
    path.write_text("\n".join(lines) + "\n")


# -- the artifact store in a bucket: run, kill -9, resume ----------------------------------


@pytest.mark.parametrize("executor", ["thread", "process"])
def test_artifacts_in_a_bucket_survive_kill_9_and_resume(
    executor: str, s3: S3Server, tmp_path: Path
) -> None:
    bucket = s3.bucket()
    home, ledger, spec = tmp_path / "home", tmp_path / "ledger", tmp_path / "chain.yaml"
    _chain_spec(spec, ledger)
    env = _env(
        s3,
        STAGEFLOW_ARTIFACTS_URL=f"s3://{bucket}/stageflow",
        STAGEFLOW_INLINE_OUTPUT_BYTES="1",  # every output is a file: in the bucket
    )
    err = (tmp_path / "run-stderr.log").open("w+b")
    proc = subprocess.Popen(
        [str(STAGEFLOW), "--home", str(home), "run", str(spec), "--executor", executor],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=err,
        env=env,
        start_new_session=True,
    )
    try:

        def four_started() -> bool:  # numbers, s1, s2, s3
            if proc.poll() is not None:
                err.seek(0)
                raise AssertionError(f"the run ended before the kill: {err.read().decode()}")
            return len(read_lines(ledger)) >= 4

        wait_until(four_started, "four tasks have started", timeout=60)
    finally:
        kill_group(proc)
        err.close()
    at_kill = read_lines(ledger)
    with store_of(home) as store:
        (run,) = store.list_runs()
        assert run.state == "running"  # the crash left it unfinished
        committed = {r.task_id for r in store.task_runs(run.run_id) if r.state == "success"}
        uris = [ref.uri for ref in store.outputs(run.run_id).values()]
    assert "numbers" in committed
    assert committed < set(CHAIN)
    assert uris and all(
        (u or "").startswith(f"s3://{bucket}/stageflow/outputs/{run.run_id}/") for u in uris
    )

    r = cli(home, env, "resume", run.run_id, "--executor", executor, "--format", "json")

    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["state"] == "success"
    ran = Counter(read_lines(ledger))
    after = Counter(read_lines(ledger)[len(at_kill) :])
    for tid in CHAIN:
        assert ran[tid] >= 1, f"{tid} never ran"
        if tid in committed:
            assert after[tid] == 0, f"{tid} had a committed success but ran again"
    keys = s3.keys(bucket, f"stageflow/outputs/{run.run_id}/")
    assert {k.split("/")[3] for k in keys} == set(CHAIN)  # every output is an object
    with store_of(home) as store:
        total_ref = store.outputs(run.run_id)["total"]
    assert total_ref.uri is not None and total_ref.uri.startswith("s3://")
    obj = s3.client().get_object(Bucket=bucket, Key=total_ref.uri.split("/", 3)[3])
    # 0..199, plus one six times, read back from the bucket at every step (and after
    # the resume, from objects the killed process had written)
    assert json.loads(obj["Body"].read()) == sum(range(200)) + 6 * 200


# -- cache keys follow the object's version ------------------------------------------------


def test_cache_key_changes_with_the_objects_etag_despite_a_cached_listing(
    s3: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    import fsspec

    use_in_this_process(monkeypatch, s3)
    bucket = s3.bucket()
    url = f"s3://{bucket}/in/data.csv"
    s3.client().put_object(Bucket=bucket, Key="in/data.csv", Body=b"a,b\n1,2\n")
    params = {"source": url}
    first = file_versions(params)
    etag = s3.client().head_object(Bucket=bucket, Key="in/data.csv")["ETag"]
    assert ["ETag", etag] in first[url]
    # This process lists the prefix (as an object schedule does: its filesystem as
    # configured by the environment alone, and stageflow's own) and caches it ...
    for fs, _ in (fsspec.core.url_to_fs(url), object_storage.filesystem(url)):
        assert fs.ls(f"{bucket}/in") == [f"{bucket}/in/data.csv"]
    # ... then the object is rewritten elsewhere.
    s3.client().put_object(Bucket=bucket, Key="in/data.csv", Body=b"a,b\n1,3\n")

    second = file_versions(params)

    new_etag = s3.client().head_object(Bucket=bucket, Key="in/data.csv")["ETag"]
    assert new_etag != etag
    assert ["ETag", new_etag] in second[url]
    assert object_storage.read_bytes(url) == b"a,b\n1,3\n"  # and what is read is the new one
    assert file_versions({"source": f"s3://{bucket}/in/absent.csv"}) == {}


def test_a_cached_ingestion_from_s3_runs_again_when_the_object_changes(
    s3: S3Server, tmp_path: Path
) -> None:
    bucket = s3.bucket()
    s3.client().put_object(Bucket=bucket, Key="raw/data.csv", Body=b"x,y\n1,2\n3,4\n")
    spec = tmp_path / "cached.yaml"
    spec.write_text(
        "name: s3-cached\n"
        "tasks:\n"
        "  - id: ingest\n"
        "    operator: data_ingestion\n"
        "    cache: true\n"
        f"    parameters: {{source: 's3://{bucket}/raw/data.csv'}}\n"
    )
    home = tmp_path / "home"
    env = _env(
        s3,  # the output in the bucket too
        STAGEFLOW_ARTIFACTS_URL=f"s3://{bucket}/stageflow",
        STAGEFLOW_INLINE_OUTPUT_BYTES="1",
    )

    def outcome() -> str | None:
        r = cli(home, env, "run", str(spec), "--format", "json")
        assert r.returncode == 0, r.stderr
        run_id = json.loads(r.stdout)["run_id"]
        with store_of(home) as store:
            (task,) = store.task_runs(run_id)
        assert task.state == "success"
        return task.note

    assert outcome() is None  # ran
    assert outcome() == "cached"
    s3.client().put_object(Bucket=bucket, Key="raw/data.csv", Body=b"x,y\n1,2\n3,5\n")
    assert outcome() is None  # a new ETag: a new key
    assert outcome() == "cached"
    outputs = s3.keys(bucket, "stageflow/outputs/")
    assert len(outputs) == 2  # the two runs that ran; the cached ones point at them
    s3.client().delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in outputs]})
    assert outcome() is None  # the cached output's object is gone: run again


# -- data_ingestion from a bucket, batch_inference into one -------------------------------


def test_ingestion_reads_csv_and_parquet_and_batch_inference_writes_to_s3(
    s3: S3Server, tmp_path: Path
) -> None:
    import pandas as pd
    from sklearn.datasets import load_iris

    bucket = s3.bucket()
    frame = load_iris(as_frame=True).frame
    s3.client().put_object(
        Bucket=bucket, Key="raw/iris.csv", Body=frame.to_csv(index=False).encode()
    )
    new = frame.drop(columns=["target"]).sample(30, random_state=1)
    buf = io.BytesIO()
    new.to_parquet(buf, index=False)
    s3.client().put_object(Bucket=bucket, Key="raw/new.parquet", Body=buf.getvalue())
    spec = tmp_path / "score.yaml"
    spec.write_text(
        f"""\
name: s3-score
tasks:
  - id: ingest
    operator: data_ingestion
    parameters: {{source: 's3://{bucket}/raw/iris.csv', source_type: s3}}
  - id: features
    operator: feature_engineering
    upstream: [ingest]
    parameters: {{target: target, test_size: 0.2, seed: 1}}
  - id: train
    operator: model_training
    upstream: [features]
    parameters: {{algorithm: logistic_regression, seed: 1}}
  - id: score
    operator: batch_inference
    upstream: [train]
    parameters:
      source: s3://{bucket}/raw/new.parquet
      to: s3://{bucket}/scores/predictions.parquet
"""
    )
    home = tmp_path / "home"

    r = cli(home, _env(s3), "run", str(spec), "--format", "json")

    assert r.returncode == 0, r.stdout + r.stderr
    assert json.loads(r.stdout)["state"] == "success"
    body = s3.client().get_object(Bucket=bucket, Key="scores/predictions.parquet")["Body"]
    scores = pd.read_parquet(io.BytesIO(body.read()))
    assert len(scores) == 30
    assert set(scores["prediction"]) <= {0, 1, 2}
    assert (scores["prediction"] == frame.loc[new.index, "target"].to_numpy()).mean() > 0.8


def test_seed_minio_variables_alone_reach_the_server(
    s3: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_in_this_process(monkeypatch, s3)
    for name in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name)
    monkeypatch.setenv("MINIO_ENDPOINT", s3.endpoint.removeprefix("http://"))  # host:port
    monkeypatch.setenv("MINIO_ACCESS_KEY", s3.key)
    monkeypatch.setenv("MINIO_SECRET_KEY", s3.secret)
    bucket = s3.bucket()

    object_storage.write_bytes(f"s3://{bucket}/minio.txt", b"written with MINIO_* only")

    assert object_storage.read_bytes(f"s3://{bucket}/minio.txt") == b"written with MINIO_* only"
    assert s3.keys(bucket) == ["minio.txt"]


# -- clear errors ------------------------------------------------------------------------


def _task_errors(home: Path) -> dict[str, str]:
    with store_of(home) as store:
        (run,) = store.list_runs()
        return {t.task_id: t.error or "" for t in store.task_runs(run.run_id)}


def _one_task_spec(tmp_path: Path, source: str) -> Path:
    spec = tmp_path / "one.yaml"
    spec.write_text(
        "name: s3-one\n"
        "tasks:\n"
        "  - id: ingest\n"
        "    operator: data_ingestion\n"
        "    retry: {max_retries: 2, delay_seconds: 0}\n"
        f"    parameters: {{source: '{source}'}}\n"
    )
    return spec


def test_an_artifact_store_in_a_missing_bucket_fails_the_task_with_one_line(
    s3: S3Server, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    spec = _one_task_spec(tmp_path, "sklearn:iris")
    env = _env(
        s3,
        STAGEFLOW_ARTIFACTS_URL="s3://no-such-bucket/stageflow",
        STAGEFLOW_INLINE_OUTPUT_BYTES="1",
    )

    r = cli(home, env, "run", str(spec))

    assert r.returncode == 1, r.stdout + r.stderr
    error = _task_errors(home)["ingest"]
    assert error.startswith(
        "the artifact store (STAGEFLOW_ARTIFACTS_URL): cannot write s3://no-such-bucket/"
    ), error
    assert f"there is no bucket 'no-such-bucket' at {s3.endpoint}; create it" in error
    assert "\n" not in error.strip() and "Traceback" not in r.stdout + r.stderr
    with store_of(home) as store:
        (run,) = store.list_runs()
        (task,) = store.task_runs(run.run_id)
    assert task.attempts == 1  # a missing bucket is not retried


def test_refused_credentials_fail_the_task_and_the_secret_is_nowhere(
    s3: S3Server, tmp_path: Path
) -> None:
    bucket = s3.bucket()
    s3.client().put_object(Bucket=bucket, Key="raw/data.csv", Body=b"x,y\n1,2\n")
    home = tmp_path / "home"
    secret = "wrong-secret-" + "7" * 24
    spec = _one_task_spec(tmp_path, f"s3://{bucket}/raw/data.csv")

    r = cli(home, _env(s3, AWS_SECRET_ACCESS_KEY=secret), "run", str(spec))

    assert r.returncode == 1, r.stdout + r.stderr
    error = _task_errors(home)["ingest"]
    assert error.startswith(
        f"data_ingestion: cannot read s3://{bucket}/raw/data.csv: access denied at {s3.endpoint}"
    ), error
    assert "check the credentials (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY" in error
    assert "Traceback" not in r.stdout + r.stderr
    for path in home.rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path
    assert secret not in r.stdout + r.stderr


@pytest.mark.parametrize(
    ("source", "artifacts", "expected"),
    [
        pytest.param(
            "s3://some-bucket/raw/data.csv",
            None,
            "data_ingestion: s3://some-bucket/raw/data.csv: s3:// needs a package that is not "
            "installed: pip install 'stageflow[s3]'",
            id="source",
        ),
        pytest.param(
            "sklearn:iris",
            "s3://some-bucket/stageflow",
            "the artifact store (STAGEFLOW_ARTIFACTS_URL): s3://some-bucket/stageflow/outputs/",
            id="artifact-store",
        ),
    ],
)
def test_without_s3fs_the_message_names_the_extra(
    source: str, artifacts: str | None, expected: str, s3: S3Server, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    spec = _one_task_spec(tmp_path, source)
    env = _env(s3, STAGEFLOW_INLINE_OUTPUT_BYTES="1")
    if artifacts is not None:
        env["STAGEFLOW_ARTIFACTS_URL"] = artifacts

    r = cli(
        home,
        env,
        "run",
        str(spec),
        python_prefix="import sys; sys.modules['s3fs'] = None  # as if not installed",
    )

    assert r.returncode == 1, r.stdout + r.stderr
    error = _task_errors(home)["ingest"]
    assert error.startswith(expected), error
    assert "s3:// needs a package that is not installed: pip install 'stageflow[s3]'" in error
    with store_of(home) as store:
        (run,) = store.list_runs()
        (task,) = store.task_runs(run.run_id)
    assert task.attempts == 1  # installing a package is not something a retry does
