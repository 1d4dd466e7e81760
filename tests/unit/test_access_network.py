"""``operations.access.network_problems``: the http(s) URLs a non-admin's spec makes the
workers reach (task parameters after ``${params.x}``, webhook channels) must be public
hosts or allowed ones; and ``task_sensor_problems``: a task sensor reads only the runs of
a pipeline its owner sees. Literal IPs only: no DNS is asked."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from stageflow.operations.access import (
    Confinement,
    Identity,
    check_confined,
    network_problems,
    task_sensor_problems,
)
from stageflow.operations.pipelines import Forbidden
from stageflow.runtime.store import open_store
from stageflow.runtime.store.base import PipelineRecord, Store
from stageflow.spec.load import pipeline_from_data

EDITOR = Identity("editor-a", "editor", "team-a")


def sensing(url: str, **extra: Any) -> Any:
    """A pipeline whose one task is an http sensor on ``url``."""
    return pipeline_from_data(
        {
            "name": "p",
            "tasks": [
                {"id": "wait", "operator": "sensor", "parameters": {"kind": "http", "url": url}}
            ],
            **extra,
        }
    )


@pytest.mark.parametrize(
    ("url", "allowed", "why"),
    [
        pytest.param("http://127.0.0.1:8080/", (), "a loopback address", id="loopback"),
        pytest.param("http://10.0.0.1/x", (), "a private address", id="private"),
        pytest.param(
            "http://169.254.169.254/latest/meta-data/", (), "a link-local address", id="metadata"
        ),
        pytest.param("http://[::1]:9000/", (), "a loopback address", id="ipv6-loopback"),
        pytest.param("http://0.0.0.0/", (), "an unspecified address", id="unspecified"),
        pytest.param(
            "http://[::ffff:127.0.0.1]/", (), "a loopback address", id="ipv4-mapped-loopback"
        ),
        pytest.param("http://224.0.0.1/", (), "a multicast address", id="multicast"),
        pytest.param("https://93.184.216.34/data.csv", (), None, id="public"),
        pytest.param("http://127.0.0.1:8080/", ("127.0.0.1",), None, id="allowed-host"),
        pytest.param("http://127.0.0.1:8080/", ("127.0.0.1:8080",), None, id="allowed-port"),
        pytest.param(
            "http://127.0.0.1:9090/", ("127.0.0.1:8080",), "a loopback address", id="other-port"
        ),
        pytest.param("http://127.0.0.1/", ("127.0.0.1:80",), None, id="default-port"),
        pytest.param("http://[::1]:9000/", ("[::1]:9000",), None, id="allowed-ipv6"),
        pytest.param("http://10.0.0.1/", ("10.0.0.2",), "a private address", id="exact-match"),
        pytest.param("http://127.0.0.1:99999/", (), "is not a valid URL", id="bad-port"),
    ],
)
def test_network_problems_refuse_hosts_that_are_not_public(
    url: str, allowed: tuple[str, ...], why: str | None
) -> None:
    found = network_problems(sensing(url), allowed)
    if why is None:
        assert found == []
    else:
        [(task, field, message)] = found
        assert (task, field) == ("wait", "parameters.url")
        assert message.startswith(repr(url)) and why in message, message


def test_a_url_from_a_run_parameter_names_it() -> None:
    spec = pipeline_from_data(
        {
            "name": "p",
            "params": {"url": "https://93.184.216.34/"},
            "tasks": [
                {
                    "id": "load",
                    "operator": "data_ingestion",
                    "parameters": {"source": "${params.url}"},
                }
            ],
        }
    )
    assert network_problems(spec, ()) == []  # the default is public
    [(task, field, why)] = network_problems(spec, (), {"url": "http://169.254.169.254/"})
    assert (task, field) == ("load", "parameters.source")
    assert why.startswith("'http://169.254.169.254/' (from run parameter 'url') reaches ")


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        pytest.param(
            {"on_failure": [{"webhook": "http://127.0.0.1/hook"}]},
            "on_failure.0.webhook",
            id="hook",
        ),
        pytest.param(
            {"on_success": [{"email": ["a@b.c"]}, {"webhook": "http://10.0.0.1/"}]},
            "on_success.1.webhook",
            id="second-channel",
        ),
        pytest.param(
            {"deadline": {"after_seconds": 60, "channels": [{"webhook": "http://[::1]/"}]}},
            "deadline.channels.0.webhook",
            id="deadline",
        ),
    ],
)
def test_webhook_channels_are_checked(extra: dict[str, Any], field: str) -> None:
    [(task, got, _)] = network_problems(sensing("https://93.184.216.34/", **extra), ())
    assert (task, got) == (None, field)


def test_a_webhook_held_by_a_secret_is_the_server_s_and_not_checked() -> None:
    spec = sensing("https://93.184.216.34/", on_failure=[{"webhook": "${secret:HOOK}"}])
    assert network_problems(spec, ()) == []


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    opened = open_store(None, tmp_path)
    try:
        yield opened
    finally:
        opened.close()


def waits_for(other: str) -> Any:
    return pipeline_from_data(
        {
            "name": "mine",
            "params": {"upstream": other},
            "tasks": [
                {
                    "id": "wait",
                    "operator": "sensor",
                    "parameters": {"kind": "task", "pipeline": "${params.upstream}", "task": "t"},
                }
            ],
        }
    )


def test_a_task_sensor_reads_only_pipelines_its_owner_sees(store: Store) -> None:
    for name, owner in (("theirs", "team-b"), ("ours", "team-a")):
        store.save_pipeline(PipelineRecord(name, "v1", "{}", 0.0, owner=owner))
    [(task, field, why)] = task_sensor_problems(store, waits_for("theirs"), EDITOR)
    assert (task, field) == ("wait", "parameters.pipeline")
    assert "'theirs' (from run parameter 'upstream') is another team's" in why
    assert task_sensor_problems(store, waits_for("ours"), EDITOR) == []
    assert task_sensor_problems(store, waits_for("not-yet"), EDITOR) == []  # nobody's yet
    admin = Identity("root", "admin", None)
    assert task_sensor_problems(store, waits_for("theirs"), admin) == []


def test_check_confined_is_a_403_naming_pipeline_task_field_and_the_fix(store: Store) -> None:
    confine = Confinement(EDITOR, ("/data",))
    with pytest.raises(Forbidden) as caught:
        check_confined(store, sensing("http://127.0.0.1:8080/"), {}, confine)
    assert (caught.value.pipeline, caught.value.task, caught.value.field) == (
        "p",
        "wait",
        "parameters.url",
    )
    assert "STAGEFLOW_API_ALLOWED_HOSTS" in str(caught.value)
    allowed = Confinement(EDITOR, ("/data",), ("127.0.0.1",))
    check_confined(store, sensing("http://127.0.0.1:8080/"), {}, allowed)
    check_confined(store, sensing("http://127.0.0.1:8080/"), {}, None)  # an admin
