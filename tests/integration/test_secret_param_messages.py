"""A secret run parameter (``params: {api_key: {secret: true}}``) named in a
``notification`` message, or read from the environment by a task that does not name
it: the spec validates, and the value is masked (``***``) in the message sent, the
logs and everything stageflow writes, with either executor."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers_tasks import clean_environ

from support.ml import webhook

pytestmark = pytest.mark.slow

STAGEFLOW = Path(sys.executable).with_name("stageflow")
SECRET = "s3cr3t-param-2c7b41"

SPEC = """\
name: secret-message
params:
  api_key: {secret: true}
tasks:
  - id: shell
    operator: bash
    parameters: {command: 'echo env=$STAGEFLOW_PARAM_API_KEY'}
  - id: notify
    operator: notification
    upstream: [shell]
    parameters: {message: "key ${params.api_key} ({params.api_key}) after {inputs.shell}"}
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


@pytest.mark.parametrize("executor", ["thread", "process"])
def test_a_secret_parameter_in_a_message_is_sent_and_logged_masked(
    tmp_path: Path, executor: str
) -> None:
    home = tmp_path / "home"
    path = tmp_path / "message.yaml"
    path.write_text(SPEC)
    checked = sf(home, tmp_path, "validate", str(path))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    with webhook() as hook:
        r = sf(
            home,
            tmp_path,
            "run",
            str(path),
            "--param",
            "api_key=${secret:SF_API_KEY}",
            "--executor",
            executor,
            "--format",
            "json",
            SF_API_KEY=SECRET,
            SLACK_WEBHOOK_URL=hook.url,
        )
        assert r.returncode == 0, r.stdout + r.stderr
    assert hook.received == [{"text": "key *** (***) after env=***"}]
    run_id = json.loads(r.stdout)["run_id"]
    assert sf(home, tmp_path, "logs", run_id, "shell").stdout == "env=***\n"
    assert "key *** (***) after env=***" in sf(home, tmp_path, "logs", run_id, "notify").stdout
    written = b"".join(p.read_bytes() for p in home.rglob("*") if p.is_file())
    assert SECRET.encode() not in written
    assert SECRET not in r.stdout + r.stderr
