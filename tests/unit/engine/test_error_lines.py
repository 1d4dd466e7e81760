"""A failed task's error as shown (``runs show``, progress lines, a notification's
``{error}``): its first line, then its last lines, bounded."""

from __future__ import annotations

import pytest

from stageflow.engine.error_lines import ERROR_LINE_CHARS, ERROR_TAIL_CHARS, error_lines

_MANY = "\n".join(f"out {i}" for i in range(1, 10))
_WIDE = "w" * 150
assert 3 * len(_WIDE) <= ERROR_TAIL_CHARS < 4 * len(_WIDE)


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        pytest.param("", [], id="empty"),
        pytest.param(" \n\n ", [], id="blank"),
        pytest.param("boom", ["boom"], id="one-line"),
        pytest.param(
            "bash command exited with code 3; last output:\nboom",
            ["bash command exited with code 3; last output:", "boom"],
            id="bash-output",
        ),
        pytest.param(
            "\n  failed: x  \n\nmore\n",
            ["  failed: x", "more"],
            id="blank-lines-dropped-right-trimmed",
        ),
        pytest.param(
            f"failed\n{_MANY}",
            ["failed", "out 5", "out 6", "out 7", "out 8", "out 9"],
            id="last-lines-only",
        ),
        pytest.param(
            "x" * 250,
            ["x" * (ERROR_LINE_CHARS - 3) + "..."],
            id="long-line-cut",
        ),
        pytest.param(
            "failed\n" + "\n".join([_WIDE] * 4),
            ["failed", _WIDE, _WIDE, _WIDE],
            id="tail-within-chars",  # 4 x 150 > ERROR_TAIL_CHARS
        ),
    ],
)
def test_error_lines(message: str, expected: list[str]) -> None:
    assert error_lines(message) == expected
