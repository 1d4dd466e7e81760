"""A schedule's run retries, execution timeout and object URL over the REST API of a
real ``stageflow serve`` (SQLite): the body's fields come back in the answer, and each
mistake is a 4xx JSON body naming its field, nothing written."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers_serve import Server, serving

pytestmark = pytest.mark.slow

SPEC = {
    "name": "pipe",
    "tasks": [
        {
            "id": "a",
            "operator": "notification",
            "parameters": {"message": "hi", "fail_on_error": False},
        }
    ],
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with serving("sqlite", tmp_path_factory.mktemp("api-run-retries")) as s:
        with s.client(s.admin) as c:
            r = c.post("/api/v1/pipelines", json=SPEC)
            assert r.status_code == 201, r.text
        yield s


def post(server: Server, **body: Any) -> Any:
    with server.client(server.admin) as c:
        return c.post("/api/v1/schedules", json={"pipeline": "pipe", **body})


def test_the_retry_policy_timeout_and_object_come_back(server: Server, tmp_path: Path) -> None:
    r = post(
        server,
        name="retrying",
        every="1h",
        run_retries=3,
        retry_strategy="exponential",
        retry_delay="30s",
        execution_timeout="2h",
    )
    assert r.status_code == 201, r.text
    doc = r.json()
    assert doc["run_retries"] == {"strategy": "exponential", "max_retries": 3, "retry_delay": 30.0}
    assert doc["execution_timeout"] == 7200.0
    url = f"file://{tmp_path}/*.csv"
    r = post(server, name="watching", on_object=url, poll="10s")
    assert r.status_code == 201, r.text
    doc = r.json()
    assert (doc["kind"], doc["object_url"], doc["poll_seconds"]) == ("object", url, 10.0)
    assert doc["timing"] == f"on object {url}"


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        pytest.param({"run_retries": -1}, 422, "run_retries", id="negative-retries"),
        pytest.param({"retry_strategy": "sometimes"}, 422, "retry_strategy", id="strategy"),
        pytest.param(
            {"run_retries": 1, "retry_strategy": "exponential", "retry_delay": "0"},
            400,
            "retry_delay",
            id="exponential-zero",
        ),
        pytest.param({"execution_timeout": "0"}, 400, "execution_timeout", id="zero-timeout"),
        pytest.param(
            {"every": None, "on_object": "nosuchproto://b/*.csv"}, 400, "on_object", id="protocol"
        ),
        pytest.param({"every": None, "on_object": "no url"}, 400, "on_object", id="not-a-url"),
    ],
)
def test_a_mistake_names_its_field_and_writes_nothing(
    server: Server, body: dict[str, Any], status: int, field: str
) -> None:
    timing = {"every": "1h", **body}
    r = post(server, name="wrong", **{k: v for k, v in timing.items() if v is not None})
    assert r.status_code == status, r.text
    doc = r.json()
    assert set(doc) >= {"error", "problems"}, doc
    assert field in doc["problems"][0]["field"], doc
    with server.client(server.admin) as c:
        assert c.get("/api/v1/schedules/wrong").status_code == 404
