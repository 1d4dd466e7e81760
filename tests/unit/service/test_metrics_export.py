"""operations.monitoring: the export's CSV and JSON, and the times a user may give."""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime

import pytest

from stageflow.errors import UsageError
from stageflow.operations.monitoring import (
    EXPORT_COLUMNS,
    export_text,
    parse_time,
    time_range,
)
from stageflow.runtime.store.base import MetricSample

NOW = 1_800_000_000.0
SAMPLES = [
    MetricSample("host.cpu_percent", NOW - 0.2, 12.5, "h1", {"host": "h1"}),
    MetricSample("runs.queued", NOW, 3.0),
]


def test_csv_has_a_header_and_one_row_per_sample_with_iso_utc_times() -> None:
    text = export_text(SAMPLES, "csv")

    rows = list(csv.DictReader(io.StringIO(text)))
    assert text.splitlines()[0] == ",".join(EXPORT_COLUMNS)
    assert len(rows) == 2
    first = rows[0]
    assert first["name"] == "host.cpu_percent"
    assert first["at"].endswith("+00:00")
    assert datetime.fromisoformat(first["at"]).timestamp() == pytest.approx(NOW - 0.2, abs=1e-6)
    assert float(first["timestamp"]) == NOW - 0.2
    assert (first["host"], json.loads(first["labels"]), float(first["value"])) == (
        "h1",
        {"host": "h1"},
        12.5,
    )
    assert (rows[1]["host"], rows[1]["labels"]) == ("", "{}")


def test_json_is_a_list_of_objects_with_the_same_fields() -> None:
    doc = json.loads(export_text(SAMPLES, "json"))

    assert [list(d) for d in doc] == [list(EXPORT_COLUMNS)] * 2
    assert [(d["name"], d["value"], d["timestamp"]) for d in doc] == [
        ("host.cpu_percent", 12.5, NOW - 0.2),
        ("runs.queued", 3.0, NOW),
    ]


def test_an_empty_export_is_a_header_or_an_empty_list() -> None:
    assert export_text([], "csv") == ",".join(EXPORT_COLUMNS) + "\n"
    assert json.loads(export_text([], "json")) == []


def test_an_unknown_format_names_the_field() -> None:
    with pytest.raises(UsageError, match="format 'xml' is not a format; give one of csv, json"):
        export_text(SAMPLES, "xml")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("now", NOW, id="now"),
        pytest.param("-1h", NOW - 3600, id="hour-ago"),
        pytest.param("-30m", NOW - 1800, id="minutes"),
        pytest.param("-2d", NOW - 2 * 86400, id="days"),
        pytest.param("-90", NOW - 90, id="seconds"),
        pytest.param("2027-01-15T08:00:00Z", NOW, id="iso-z"),
        pytest.param("2027-01-15T09:00:00+01:00", NOW, id="iso-offset"),
    ],
)
def test_parse_time(text: str, expected: float) -> None:
    assert parse_time(text, "--from", NOW) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param("-1y", "--from '-1y' is not a relative time", id="bad-unit"),
        pytest.param("yesterday", "--from 'yesterday' is not a time", id="word"),
    ],
)
def test_a_bad_time_names_the_option(text: str, message: str) -> None:
    with pytest.raises(UsageError, match=message) as caught:
        parse_time(text, "--from", NOW)
    assert caught.value.field == "from"


def test_a_range_defaults_to_the_last_hour_and_refuses_from_after_to() -> None:
    assert time_range(None, None, NOW) == (NOW - 3600, NOW)
    assert time_range("-2h", "-1h", NOW) == (NOW - 7200, NOW - 3600)
    with pytest.raises(UsageError, match="--from -1h is after --to -2h") as caught:
        time_range("-1h", "-2h", NOW)
    assert caught.value.field == "from"


def test_a_slot_reads_back_from_its_iso_text() -> None:
    from stageflow.runtime.monitor import slot_of

    for k in range(1000):
        slot = slot_of(NOW + 0.2 * k + 0.05, 0.2)
        text = json.loads(export_text([MetricSample("x", slot, 1.0)], "json"))[0]["at"]
        assert parse_time(text, "--from", NOW) == slot
