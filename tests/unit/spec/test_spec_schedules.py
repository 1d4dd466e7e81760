"""``schedule:`` and ``schedules:`` in a spec: parsed, named, and every mistake in them
reported with its field (``runtime.plan.schedule_problems``, ``engine.schedules``)."""

from __future__ import annotations

from typing import Any

import pytest

from stageflow.errors import UsageError
from stageflow.runtime.plan import plan_problems
from stageflow.spec.load import pipeline_from_data
from stageflow.spec.times import parse_duration, parse_instant


def spec(**extra: Any) -> dict[str, Any]:
    return {
        "name": "nightly-train",
        "params": {"who": "world"},
        "tasks": [{"id": "a", "operator": "bash", "parameters": {"command": "echo hi"}}],
        **extra,
    }


def problems(**extra: Any) -> list[tuple[str | None, str]]:
    return [(p.field, p.message) for p in plan_problems(pipeline_from_data(spec(**extra)))]


def test_a_seed_002_schedule_and_a_list_are_named_and_valid() -> None:
    pipeline = pipeline_from_data(
        spec(
            schedule="0 2 * * *",
            schedules=[
                {"name": "hourly", "every": "1h", "params": {"who": "h"}, "max_active_runs": 1},
                {"every": 600},
                {"at": "2027-01-01T00:00:00Z"},
            ],
        )
    )
    assert plan_problems(pipeline) == []
    named = [(name, e.cron, e.every, e.at) for name, e in pipeline.schedule_entries()]
    assert named == [
        ("nightly-train", "0 2 * * *", None, None),
        ("hourly", None, "1h", None),
        ("nightly-train-3", None, 600, None),
        ("nightly-train-4", None, None, "2027-01-01T00:00:00Z"),
    ]


def test_a_spec_without_schedules_keeps_its_canonical_form() -> None:
    pipeline = pipeline_from_data(spec())
    assert "schedule" not in pipeline.canonical()
    assert "schedules" not in pipeline.canonical()
    assert pipeline.schedule_entries() == []


def test_a_once_in_the_past_keeps_the_spec_valid() -> None:
    assert problems(schedules=[{"at": "2001-01-01"}]) == []


@pytest.mark.parametrize(
    ("extra", "field", "words"),
    [
        ({"schedule": "61 * * * *"}, "schedule.cron", 'its minute field "61" is not valid'),
        ({"schedules": [{"cron": "0 2 * *"}]}, "schedules[0].cron", "has 4 fields; it needs 5"),
        ({"schedules": [{"every": "abc"}]}, "schedules[0].every", "is not a duration"),
        (
            {"schedules": [{"every": 0}]},
            "schedules[0].every",
            "schedules[0].every must be a finite number of seconds > 0, got 0.0; e.g. 3600 or 1h",
        ),
        ({"schedules": [{"at": "soon"}]}, "schedules[0].at", "is not a date or time"),
        (
            {"schedules": [{"cron": "0 2 * * *", "timezone": "Mars/Base"}]},
            "schedules[0].timezone",
            "unknown time zone 'Mars/Base'",
        ),
        ({"schedules": [{}]}, "schedules[0].timing", "give exactly one of"),
        (
            {"schedules": [{"every": "1h", "at": "2027-01-01"}]},
            "schedules[0].timing",
            "(got schedules[0].every, schedules[0].at)",
        ),
        (
            {"schedules": [{"every": "1h", "start": "2027-01-02", "end": "2027-01-01"}]},
            "schedules[0].end",
            "end",
        ),
        (
            {"schedules": [{"every": "1h", "params": {"nope": 1}}]},
            "schedules[0].params",
            "declares no parameter 'nope' (declared: who)",
        ),
        (
            {"schedule": "0 2 * * *", "schedules": [{"every": "1h", "name": "nightly-train"}]},
            "schedules[0].name",
            "the schedule name 'nightly-train' is used twice",
        ),
    ],
)
def test_each_mistake_names_its_field(extra: dict[str, Any], field: str, words: str) -> None:
    found = problems(**extra)
    assert len(found) == 1, found
    assert found[0][0] == field
    assert words in found[0][1], found[0][1]


def test_an_unknown_key_in_an_entry_is_refused() -> None:
    from stageflow.errors import InvalidSpec

    with pytest.raises(InvalidSpec, match="cronn"):
        pipeline_from_data(spec(schedules=[{"cronn": "0 2 * * *"}]))


def test_durations_and_instants() -> None:
    assert parse_duration("90s", "every") == 90.0
    assert parse_duration("10m", "every") == 600.0
    assert parse_duration("2h", "every") == 7200.0
    assert parse_duration("1.5d", "every") == 129600.0
    assert parse_duration(45, "every") == 45.0
    assert parse_duration("45", "every") == 45.0
    with pytest.raises(UsageError, match="'ten minutes' is not a duration") as bad:
        parse_duration("ten minutes", "--every")
    assert bad.value.field == "every"  # the option, without its dashes
    assert parse_instant("1970-01-02", "at") == 86400.0
    assert parse_instant("1970-01-01T01:00:00Z", "at") == 3600.0
    assert parse_instant("1970-01-01T02:00:00+01:00", "at") == 3600.0
    with pytest.raises(UsageError, match="is not a date or time"):
        parse_instant("tomorrow", "--at")


def test_schedule_values_are_substituted_as_text_when_the_run_has_them() -> None:
    from stageflow.spec.params import substitute

    values = {"name": "daily", "start": "2026-03-01T00:00", "end": "2026-03-02T00:00"}
    params = {"n": 3}
    given = {
        "cmd": "load ${schedule.start}..${schedule.end} for ${schedule.name}",
        "whole": "${schedule.start}",
        "typed": "${params.n}",
        "list": ["${schedule.end}", 1],
    }
    assert substitute(given, params, values) == {
        "cmd": "load 2026-03-01T00:00..2026-03-02T00:00 for daily",
        "whole": "2026-03-01T00:00",
        "typed": 3,
        "list": ["2026-03-02T00:00", 1],
    }
    # Without a run's values (validation, lineage), the references stay as written.
    assert substitute(given, params)["cmd"] == given["cmd"]


def test_an_unknown_schedule_value_is_a_problem_naming_the_known_ones() -> None:
    found = [
        (p.task, p.field, p.message)
        for p in plan_problems(
            pipeline_from_data(
                {
                    "name": "p",
                    "tasks": [
                        {
                            "id": "a",
                            "operator": "bash",
                            "parameters": {"command": "echo ${schedule.day} ${schedule.end}"},
                        }
                    ],
                }
            )
        )
    ]
    assert found == [
        (
            "a",
            "parameters.command",
            "refers to ${schedule.day}; a run's schedule values are ${schedule.start}, "
            "${schedule.end}, ${schedule.name}, ${schedule.object}",
        )
    ]


def test_an_event_entry_validates_and_carries_its_event() -> None:
    pipeline = pipeline_from_data(spec(schedules=[{"event": "pushed", "params": {"who": "e"}}]))
    assert plan_problems(pipeline) == []
    [(name, entry)] = pipeline.schedule_entries()
    assert (name, entry.event, entry.cron, entry.every, entry.at) == (
        "nightly-train",
        "pushed",
        None,
        None,
        None,
    )
    # A spec without it keeps its canonical form (and so its version).
    assert (
        "event"
        not in pipeline_from_data(spec(schedules=[{"every": "1h"}])).canonical()["schedules"][0]
    )


@pytest.mark.parametrize(
    ("entry", "field", "words"),
    [
        ({"event": "a b"}, "schedules[0].event", "event name 'a b' must be 1-100 letters"),
        (
            {"event": "pushed", "start": "2027-01-01"},
            "schedules[0].start",
            "start does not apply: an event schedule fires on each POST /api/v1/events/pushed",
        ),
        ({"event": "pushed", "catchup": True}, "schedules[0].catchup", "catchup does not apply"),
        (
            {"event": "pushed", "every": "1h"},
            "schedules[0].timing",
            "(got schedules[0].every, schedules[0].event)",
        ),
    ],
)
def test_an_event_entry_mistake_names_its_field(
    entry: dict[str, Any], field: str, words: str
) -> None:
    found = problems(schedules=[entry])
    assert len(found) == 1, found
    assert found[0][0] == field
    assert words in found[0][1], found[0][1]


def test_an_event_name_over_100_characters_is_refused_by_the_schema() -> None:
    from stageflow.errors import InvalidSpec

    with pytest.raises(InvalidSpec, match="event"):
        pipeline_from_data(spec(schedules=[{"event": "x" * 101}]))


def test_an_after_entry_validates_and_carries_its_upstream_and_states() -> None:
    entry = {"after": "extract", "after_states": ["success", "failed"]}
    pipeline = pipeline_from_data(spec(schedules=[entry]))
    assert plan_problems(pipeline) == []
    [(_, parsed)] = pipeline.schedule_entries()
    assert (parsed.after, parsed.after_states, parsed.cron) == (
        "extract",
        ["success", "failed"],
        None,
    )
    assert (
        pipeline_from_data(spec(schedules=[{"after": "extract"}]))
        .schedule_entries()[0][1]
        .after_states
        is None
    )  # success, by default
    # A spec without it keeps its canonical form (and so its version).
    canonical = pipeline_from_data(spec(schedules=[{"every": "1h"}])).canonical()
    assert "after" not in canonical["schedules"][0]
    assert "after_states" not in canonical["schedules"][0]


@pytest.mark.parametrize(
    ("entry", "field", "words"),
    [
        (
            {"after": "extract", "after_states": ["bogus"]},
            "schedules[0].after_states",
            "'bogus' is not an end state of a run: use success, failed, cancelled",
        ),
        (
            {"after": "extract", "end": "2027-01-01"},
            "schedules[0].end",
            "end does not apply: an after schedule fires when a run of extract ends",
        ),
        (
            {"every": "1h", "after_states": ["failed"]},
            "schedules[0].after_states",
            "schedules[0].after_states is for a schedule with schedules[0].after PIPELINE",
        ),
        (
            {"after": "extract", "cron": "0 2 * * *"},
            "schedules[0].timing",
            "(got schedules[0].cron, schedules[0].after)",
        ),
        (
            {"after": "nightly-train"},
            "schedules[0].after",
            "may not fire after its own runs",
        ),
    ],
)
def test_an_after_entry_mistake_names_its_field(
    entry: dict[str, Any], field: str, words: str
) -> None:
    found = problems(schedules=[entry])
    assert len(found) == 1, found
    assert found[0][0] == field
    assert words in found[0][1], found[0][1]
