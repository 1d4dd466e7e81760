"""A failed task's error as it is shown: bounded, whoever shows it.

A task's error (``Transition.message``) can be long: a bash command's failure
carries its last output lines. ``stageflow runs show``, the progress lines and a
notification's ``{error}`` show the same part of it: the first non-blank line
(what failed), then at most ``ERROR_TAIL_LINES`` of the last lines (the output
that says why), each cut to ``ERROR_LINE_CHARS`` characters and the tail to
``ERROR_TAIL_CHARS`` in all. Pure: no state, no I/O.
"""

from __future__ import annotations

__all__ = ["ERROR_LINE_CHARS", "ERROR_TAIL_CHARS", "ERROR_TAIL_LINES", "error_lines"]

#: At most this many of an error's last lines are shown below its first line,
#: within ``ERROR_TAIL_CHARS`` characters, each line cut to ``ERROR_LINE_CHARS``.
ERROR_TAIL_LINES = 5
ERROR_TAIL_CHARS = 500
ERROR_LINE_CHARS = 200


def error_lines(message: str) -> list[str]:
    """``message``'s first non-blank line, then its last ``ERROR_TAIL_LINES`` lines,
    each cut to ``ERROR_LINE_CHARS`` characters and all of them to ``ERROR_TAIL_CHARS``;
    ``[]`` for a blank message."""

    def cut(line: str) -> str:
        line = line.rstrip()
        return line if len(line) <= ERROR_LINE_CHARS else line[: ERROR_LINE_CHARS - 3] + "..."

    lines = [cut(line) for line in message.splitlines() if line.strip()]
    if not lines:
        return []
    tail: list[str] = []
    budget = ERROR_TAIL_CHARS
    for line in reversed(lines[1:][-ERROR_TAIL_LINES:]):
        budget -= len(line)
        if budget < 0:
            break
        tail.append(line)
    return [lines[0], *reversed(tail)]
