"""Schemathesis against a real ``stageflow serve``'s ``/openapi.json``: generated requests
for every operation (its coverage and fuzzing phases, bounded) must never get a 5xx, and
every answer must match the schema. The token is an admin's, so the requests reach the
routes' own checks rather than stopping at authentication."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from helpers_serve import serving

pytestmark = pytest.mark.slow

SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")


def test_no_generated_request_gets_a_server_error_or_breaks_the_schema(tmp_path: Path) -> None:
    with serving("sqlite", tmp_path, "--workers", "0") as server:
        r = subprocess.run(
            [
                str(SCHEMATHESIS),
                "run",
                f"{server.base}/openapi.json",
                "--checks",
                "not_a_server_error,response_schema_conformance",
                "--header",
                f"Authorization: Bearer {server.admin}",
                "--max-examples",
                "10",
                "--phases",
                "coverage,fuzzing",
                "--request-timeout",
                "20",
            ],
            capture_output=True,
            text=True,
            timeout=420,
            check=False,
            stdin=subprocess.DEVNULL,
            cwd=tmp_path,  # schemathesis writes its .schemathesis/ folder where it runs
        )
        assert r.returncode == 0, r.stdout[-6000:] + r.stderr[-2000:]
        found = re.search(r"(\d+) generated, (\d+) passed", r.stdout)
        assert found is not None, r.stdout[-3000:]
        generated, passed = map(int, found.groups())
        print(found.group(0))
        assert generated == passed > 300  # every operation, many cases each
        assert "Traceback" not in server.stderr("serve")  # no bug was logged either
