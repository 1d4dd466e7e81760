"""``engine.delivery``: when a failed notification delivery is tried again, and how a
channel's target is shown (never a secret, never a webhook's path)."""

from __future__ import annotations

from typing import Any

import pytest

from stageflow.engine.delivery import MAX_DELAY, next_try_delay, shown_target, shown_url


@pytest.mark.parametrize(
    ("attempts", "tries", "base", "expected"),
    [
        pytest.param(1, 4, 1.0, 1.0, id="after-first"),
        pytest.param(2, 4, 1.0, 4.0, id="times-four"),
        pytest.param(3, 4, 1.0, 16.0, id="sixteen"),
        pytest.param(4, 4, 1.0, None, id="last-try"),
        pytest.param(9, 4, 1.0, None, id="past-last"),
        pytest.param(1, 1, 1.0, None, id="one-try-only"),
        pytest.param(1, 0, 1.0, None, id="zero-tries-is-one"),
        pytest.param(2, 3, 0.5, 2.0, id="short-base"),
        pytest.param(1, 5, 0.0, 0.0, id="no-delay"),
        pytest.param(20, 100, 1.0, MAX_DELAY, id="capped"),
    ],
)
def test_next_try_delay(attempts: int, tries: int, base: float, expected: float | None) -> None:
    assert next_try_delay(attempts, tries, base) == expected


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        pytest.param(
            "https://hooks.slack.com/services/T0/B0/XYZ", "https://hooks.slack.com", id="path"
        ),
        pytest.param(
            "http://127.0.0.1:8080/hook?token=abc", "http://127.0.0.1:8080", id="port-query"
        ),
        pytest.param("https://user:pw@example.com/x", "https://example.com", id="credentials"),
        pytest.param("${secret:SLACK_URL}", "secret:SLACK_URL", id="secret"),
        pytest.param("http://example.com:99999/x", "http://?", id="bad-port"),
    ],
)
def test_shown_url(url: str, shown: str) -> None:
    assert shown_url(url) == shown


@pytest.mark.parametrize(
    ("channel", "shown"),
    [
        pytest.param(
            {"webhook": "https://h.example.com/a/b"}, "https://h.example.com", id="webhook"
        ),
        pytest.param(
            {"email": ["a@b.c", "${secret:ONCALL}"], "subject": "x"},
            "a@b.c, secret:ONCALL",
            id="email",
        ),
        pytest.param(
            {"command": ["/usr/bin/notify-send", "--x"]}, "/usr/bin/notify-send", id="command"
        ),
        pytest.param({"command": ["${secret:TOOL}"]}, "secret:TOOL", id="secret-command"),
    ],
)
def test_shown_target(channel: dict[str, Any], shown: str) -> None:
    assert shown_target(channel) == shown
