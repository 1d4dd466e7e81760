"""``engine.zones.zone_or_none``: the one time-zone lookup of schedules, alert
deadlines and sensors."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from stageflow.engine.zones import zone_or_none


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(None, id="not-text"),
        pytest.param(3, id="a-number"),
        pytest.param("", id="empty"),
        pytest.param("Nowhere/Atlantis", id="unknown"),
        pytest.param("America", id="a-folder-of-zones"),
        pytest.param("/etc/passwd", id="absolute-path"),
        pytest.param("../../etc/passwd", id="climbs-out"),
        pytest.param("UTC ", id="trailing-space"),
    ],
)
def test_what_is_no_zone(name: object) -> None:
    assert zone_or_none(name) is None


def test_utc_needs_no_lookup() -> None:
    assert zone_or_none("UTC") is UTC


def test_a_named_zone_has_its_offsets() -> None:
    paris = zone_or_none("Europe/Paris")
    assert paris is not None
    assert datetime(2026, 1, 15, 12, tzinfo=paris).utcoffset() == timedelta(hours=1)
    assert datetime(2026, 7, 15, 12, tzinfo=paris).utcoffset() == timedelta(hours=2)
