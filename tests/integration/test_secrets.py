"""``${secret:NAME}``: resolved when an attempt starts, from the environment or
``STAGEFLOW_SECRETS_FILE``; its value never lands in the store, the logs, the errors,
the events or the API's answers (``***`` wherever it would be printed)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers_serve import serving
from helpers_tasks import clean_environ

STAGEFLOW = Path(sys.executable).with_name("stageflow")
SECRET = "s3cr3t-value-8d1f"

STEPS = """
def use_key(key):
    print(f"calling the service with {key}")
    return len(key)
"""


def sf(home: Path, cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(STAGEFLOW), "--home", str(home), *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**clean_environ(os.environ), **env},
        stdin=subprocess.DEVNULL,
        timeout=120,
        check=False,
    )


def everything_written(home: Path) -> bytes:
    """Every byte stageflow wrote under its home (the store, logs, artifacts)."""
    return b"".join(p.read_bytes() for p in home.rglob("*") if p.is_file())


def spec(tmp: Path) -> Path:
    (tmp / "steps.py").write_text(STEPS)
    path = tmp / "secret.yaml"
    path.write_text(
        "name: uses-a-secret\n"
        "tasks:\n"
        "  - id: call\n"
        "    call: steps:use_key\n"
        "    parameters: {key: '${secret:SF_API_KEY}'}\n"
        "  - id: shell\n"
        "    operator: bash\n"
        "    upstream: [call]\n"
        "    parameters:\n"
        "      command: 'echo key=${secret:SF_API_KEY}; echo \"$SF_API_KEY\" >&2; exit 3'\n"
    )
    return path


@pytest.mark.parametrize("executor", ["thread", "process"])
def test_a_secret_is_used_and_never_written(tmp_path: Path, executor: str) -> None:
    home = tmp_path / "home"
    r = sf(
        home,
        tmp_path,
        "run",
        str(spec(tmp_path)),
        "--executor",
        executor,
        "--format",
        "json",
        SF_API_KEY=SECRET,
    )
    assert r.returncode == 1, r.stderr  # the bash task exits 3
    doc = json.loads(r.stdout)
    assert doc["tasks"]["call"]["state"] == "success"
    assert doc["tasks"]["shell"]["state"] == "failed"
    assert "key=***" in doc["tasks"]["shell"]["error"]
    assert SECRET not in r.stdout + r.stderr
    assert SECRET.encode() not in everything_written(home)
    run_id = doc["run_id"]
    shell_log = sf(home, tmp_path, "logs", run_id, "shell").stdout
    assert shell_log.splitlines()[:2] == ["key=***", "***"]
    call_log = sf(home, tmp_path, "logs", run_id, "call").stdout
    assert call_log.strip() == "calling the service with ***"
    shown = sf(home, tmp_path, "runs", "show", run_id, "--format", "json").stdout
    assert SECRET not in shown
    spec_text = sf(home, tmp_path, "pipelines", "show", "uses-a-secret").stdout
    assert "${secret:SF_API_KEY}" in spec_text  # the spec names it, never holds it


def test_a_secrets_file_and_a_missing_secret(tmp_path: Path) -> None:
    home = tmp_path / "home"
    secrets_file = tmp_path / "secrets.json"
    secrets_file.write_text(json.dumps({"SF_API_KEY": SECRET}))
    path = spec(tmp_path)
    r = sf(
        home,
        tmp_path,
        "run",
        str(path),
        "--format",
        "json",
        STAGEFLOW_SECRETS_FILE=str(secrets_file),
    )
    assert json.loads(r.stdout)["tasks"]["call"]["state"] == "success"
    assert SECRET.encode() not in everything_written(home)
    missing = sf(home, tmp_path, "run", str(path), "--format", "json")
    doc = json.loads(missing.stdout)
    call = doc["tasks"]["call"]
    assert (call["state"], call["attempts"]) == ("failed", 1)  # not retried: nothing sets it
    assert "secret 'SF_API_KEY' is not set: export SF_API_KEY" in call["error"]
    assert "STAGEFLOW_SECRETS_FILE" in call["error"]


def test_a_secret_stays_out_of_the_api_s_answers(tmp_path: Path) -> None:
    with serving("sqlite", tmp_path, SF_API_KEY=SECRET) as server:
        pipeline = {
            "name": "api-secret",
            "tasks": [
                {
                    "id": "shell",
                    "operator": "bash",
                    "parameters": {"command": "echo using ${secret:SF_API_KEY}; exit 4"},
                }
            ],
        }
        with server.client(server.admin) as c:
            assert c.post("/api/v1/pipelines", json=pipeline).status_code == 201
            run_id = c.post("/api/v1/runs", json={"pipeline_id": "api-secret"}).json()["run_id"]
            server.wait_run(server.admin, run_id, ("failed",))
            answers = [
                c.get(f"/api/v1/runs/{run_id}").text,
                c.get(f"/api/v1/runs/{run_id}/tasks/shell/logs").text,
                c.get(f"/api/v1/runs/{run_id}/events", params={"follow": "false"}).text,
                c.get(f"/api/v1/runs/{run_id}/results").text,
                c.get("/api/v1/pipelines/api-secret").text,
                c.get("/metrics").text,
            ]
        assert "using ***" in answers[1]
        assert all(SECRET not in a for a in answers)
        assert SECRET.encode() not in everything_written(server.home)


SECRET_PARAM = """\
name: secret-param
params:
  api_key: {secret: true}
tasks:
  - id: shell
    operator: bash
    parameters: {command: 'echo key=${params.api_key}; echo env=$STAGEFLOW_PARAM_API_KEY'}
"""


def test_a_secret_parameter_is_given_as_a_reference_and_never_stored(tmp_path: Path) -> None:
    home = tmp_path / "home"
    path = tmp_path / "param.yaml"
    path.write_text(SECRET_PARAM)
    assert sf(home, tmp_path, "validate", str(path)).returncode == 0
    literal = sf(home, tmp_path, "run", str(path), "--param", f"api_key={SECRET}")
    assert literal.returncode == 2
    assert "parameter 'api_key' is secret: its value is never stored" in literal.stderr
    assert SECRET not in literal.stdout + literal.stderr
    missing = sf(home, tmp_path, "run", str(path))
    assert missing.returncode == 2 and "parameter 'api_key' is secret" in missing.stderr
    r = sf(
        home,
        tmp_path,
        "run",
        str(path),
        "--param",
        "api_key=${secret:SF_API_KEY}",
        "--format",
        "json",
        SF_API_KEY=SECRET,
    )
    assert r.returncode == 0, r.stderr
    run_id = json.loads(r.stdout)["run_id"]
    assert sf(home, tmp_path, "logs", run_id, "shell").stdout == "key=***\nenv=***\n"
    assert SECRET.encode() not in everything_written(home)
    runs = json.loads(sf(home, tmp_path, "runs", "list", "--format", "json").stdout)
    assert [r["run_id"] for r in runs] == [run_id]  # the refused ones recorded nothing
