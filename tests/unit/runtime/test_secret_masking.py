"""``runtime.secrets``: resolving ``${secret:NAME}`` and masking what was resolved."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from stageflow.runtime import secrets


@pytest.fixture(autouse=True)
def _forget_what_was_resolved() -> Iterator[None]:
    """The masker is process-wide: leave it as found, so the tests that follow in this
    process take the same paths (a bash task's output through a pipe only with secrets)."""
    known, pattern = set(secrets._known), secrets._pattern
    yield
    secrets._known.clear()
    secrets._known.update(known)
    secrets._pattern = pattern


def test_references_resolve_from_the_environment_in_nested_parameters() -> None:
    env = {"TOKEN_A": "alpha-value-1", "TOKEN_B": "beta-value-22"}
    params = {
        "url": "https://x/?k=${secret:TOKEN_A}",
        "list": ["${secret:TOKEN_B}", 3, {"deep": "${secret:TOKEN_A}-${secret:TOKEN_B}"}],
        "plain": "${params.other}",
    }
    assert secrets.uses_secrets(params) and not secrets.uses_secrets({"a": "${params.x}"})
    assert secrets.resolve(params, env) == {
        "url": "https://x/?k=alpha-value-1",
        "list": ["beta-value-22", 3, {"deep": "alpha-value-1-beta-value-22"}],
        "plain": "${params.other}",
    }
    assert secrets.mask("a alpha-value-1 b beta-value-22 c") == "a *** b *** c"


def test_a_secrets_file_wins_over_the_environment_json_or_lines(tmp_path: Path) -> None:
    as_json = tmp_path / "s.json"
    as_json.write_text(json.dumps({"K1": "from-the-json-file"}))
    env = {"STAGEFLOW_SECRETS_FILE": str(as_json), "K1": "from-the-environment"}
    assert secrets.resolve("${secret:K1}", env) == "from-the-json-file"
    lines = tmp_path / "s.env"
    lines.write_text("# a comment\nK2 = from-the-lines-file\n\nnot a pair\n")
    assert secrets.resolve("${secret:K2}", {"STAGEFLOW_SECRETS_FILE": str(lines)}) == (
        "from-the-lines-file"
    )


def test_a_missing_secret_names_it_and_where_to_set_it(tmp_path: Path) -> None:
    with pytest.raises(secrets.MissingSecret, match=r"secret 'NOPE' is not set: export NOPE"):
        secrets.resolve({"x": "${secret:NOPE}"}, {})
    with pytest.raises(secrets.MissingSecret, match="cannot be read"):
        secrets.resolve("${secret:X}", {"STAGEFLOW_SECRETS_FILE": str(tmp_path / "absent")})
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(secrets.MissingSecret, match="is not valid JSON"):
        secrets.resolve("${secret:X}", {"STAGEFLOW_SECRETS_FILE": str(bad)})


def test_short_values_are_not_masked_and_a_longer_secret_is_masked_whole() -> None:
    env = {"SHORT": "ab", "OUTER": "key-inner-value-9", "INNER": "inner-value"}
    assert secrets.resolve("${secret:SHORT}", env) == "ab"
    assert "ab" not in secrets.known()
    secrets.resolve("${secret:INNER} ${secret:OUTER}", env)
    assert secrets.mask("x key-inner-value-9 y inner-value z ab") == "x *** y *** z ab"
