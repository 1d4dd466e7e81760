"""Pipeline hooks (``on_failure``/``on_success``/``on_retry``) and their channels
(``spec.models.Channel``): every bad channel is refused naming its field, all at once."""

from __future__ import annotations

from typing import Any

import pytest

from stageflow.errors import InvalidSpec
from stageflow.spec.load import pipeline_from_data
from stageflow.spec.models import Channel, Pipeline

TASKS = [{"id": "a", "operator": "bash", "parameters": {"command": "true"}}]


def load(**fields: Any) -> Pipeline:
    return pipeline_from_data({"name": "p", "tasks": TASKS, **fields})


def test_hooks_of_each_kind() -> None:
    p = load(
        on_failure=[
            {"webhook": "https://hooks.example.com/T/B/X"},
            {"email": "oncall@example.com", "subject": "churn failed"},
        ],
        on_success=[{"webhook": "${secret:SLACK_URL}"}],
        on_retry=[{"command": ["notify", "--urgent"]}],
    )
    assert [c.kind for c in p.on_failure] == ["webhook", "email"]
    assert p.on_failure[1].email == ["oncall@example.com"]  # one address: a list of one
    assert p.on_success[0].webhook == "${secret:SLACK_URL}"
    assert p.on_retry[0].command == ["notify", "--urgent"]


def test_no_hooks_leave_the_version_unchanged() -> None:
    bare = Pipeline.model_validate({"name": "p", "tasks": TASKS})
    assert "on_failure" not in bare.canonical()
    assert load().content_hash() == bare.content_hash()


@pytest.mark.parametrize(
    ("hooks", "field", "words"),
    [
        pytest.param(
            {"on_failure": [{"webhook": "https://ok.example.com"}, {"webhook": "ftp://x"}]},
            "on_failure[1].webhook",
            "must be an http:// or https:// URL",
            id="webhook-scheme",
        ),
        pytest.param(
            {"on_success": [{"email": ["a@b.c", "nobody"]}]},
            "on_success[0].email",
            "'nobody' is not an e-mail address",
            id="address",
        ),
        pytest.param(
            {"on_retry": [{"command": [""]}]},
            "on_retry[0].command",
            "the program (the first item) must not be empty",
            id="empty-program",
        ),
        pytest.param(
            {"on_failure": [{}]},
            "on_failure[0]",
            "exactly one of webhook, email or command",
            id="none",
        ),
        pytest.param(
            {"on_failure": [{"webhook": "https://x.example.com", "command": ["x"]}]},
            "on_failure[0]",
            "webhook and command given",
            id="two",
        ),
        pytest.param(
            {"on_failure": [{"webhook": "https://x.example.com", "subject": "s"}]},
            "on_failure[0]",
            "subject is for an email channel only",
            id="subject-without-email",
        ),
        pytest.param(
            {"on_failure": [{"slack": "https://x.example.com"}]},
            "on_failure[0].slack",
            "unknown key",
            id="unknown-key",
        ),
    ],
)
def test_a_bad_channel_names_its_field(hooks: dict[str, Any], field: str, words: str) -> None:
    with pytest.raises(InvalidSpec) as info:
        load(**hooks)
    found = [(p.field, p.message) for p in info.value.problems]
    assert any(f == field and words in m for f, m in found), found


def test_every_bad_channel_is_reported_at_once() -> None:
    with pytest.raises(InvalidSpec) as info:
        load(on_failure=[{"webhook": "x"}], on_retry=[{"email": "y"}])
    assert [p.field for p in info.value.problems] == ["on_failure[0].webhook", "on_retry[0].email"]


def test_a_refused_webhook_is_not_echoed_whole() -> None:
    with pytest.raises(InvalidSpec) as info:
        load(on_failure=[{"webhook": "hooks.example.com/services/SECRETPART"}])
    assert "SECRETPART" not in str(info.value)


def test_the_channel_model_is_usable_alone() -> None:
    assert Channel.model_validate({"command": ["x"]}).kind == "command"
