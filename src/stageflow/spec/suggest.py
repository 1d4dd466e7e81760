"""Did-you-mean suggestions that stay fast on thousands of misses.

Small vocabularies (field names, operator names) use difflib. Large ones (task
ids of a 100,000-task pipeline) use an index of single-character deletions
(SymSpell): building it is linear in the total id length, and a lookup costs a
few dict probes, so thousands of unknown ids are still answered at once.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence

__all__ = ["Suggester", "did_you_mean"]

_SMALL = 200


def did_you_mean(word: str, choices: Sequence[str]) -> str | None:
    """The closest choice to ``word``, or ``None`` when nothing is close."""
    if len(choices) > _SMALL:
        return Suggester(choices).suggest(word)
    lowered = {c.lower(): c for c in choices}
    if word.lower() in lowered:
        return lowered[word.lower()]
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return close[0] if close else None


class Suggester:
    """Edit-distance-1 lookups (plus case and ``-``/``_`` differences) over many words."""

    def __init__(self, words: Iterable[str]) -> None:
        self._words = list(words)
        self._index: dict[str, str] | None = None

    def suggest(self, word: str) -> str | None:
        if len(self._words) <= _SMALL:
            return did_you_mean(word, self._words)
        index = self._build()
        for key in (_fold(word), *_deletes(_fold(word))):
            hit = index.get(key)
            if hit is not None:
                return hit
        return None

    def _build(self) -> dict[str, str]:
        if self._index is None:
            index: dict[str, str] = {}
            for w in self._words:
                folded = _fold(w)
                index.setdefault(folded, w)
                if len(folded) <= 64:
                    for d in _deletes(folded):
                        index.setdefault(d, w)
            self._index = index
        return self._index


def _fold(word: str) -> str:
    return word.lower().replace("-", "_")


def _deletes(word: str) -> list[str]:
    return [word[:i] + word[i + 1 :] for i in range(len(word))]
