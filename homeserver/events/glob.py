"""The server's one glob matcher: event type filters, push rules, server ACLs (pure).

Invariant: matching never backtracks. A pattern is split at ``*`` into pieces of a
fixed length (``?`` stands for one character where the caller allows it); the first
piece is anchored at the start, the last at the end, and the middle ones are found
left to right at their earliest occurrence. A run of ``*`` is one ``*``. So a match
costs at most (length of the value) x (length of the pattern) character steps, in
the regex engine's C loop, whatever the pattern: ``"*" * 2000 + "x"`` against a long
value is as cheap as ``"*x"``.

``Glob.fullmatch`` matches the whole value; ``Glob.search_words`` matches any
substring that starts and ends at a word boundary (the push rules' ``content.body``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache
from typing import Final

__all__ = ["Glob", "compile_glob", "compile_literal"]

# A word boundary character: anything outside [A-Za-z0-9_] (ASCII, case-sensitive
# class even under IGNORECASE so that e.g. KELVIN SIGN is not taken for a "k").
_BOUNDARY: Final = "(?-i:[^A-Za-z0-9_])"
_AT_START: Final = rf"(?:\A|(?<={_BOUNDARY}))"
_AT_END: Final = rf"(?={_BOUNDARY}|\Z)"


class Glob:
    """A compiled glob. Regexes are compiled on first use: many globs (e.g. a user's
    own ID in ``.m.rule.invite_for_me``) are rarely reached."""

    __slots__ = ("_pieces", "_flags", "_full", "_words")

    def __init__(self, pieces: Sequence[tuple[str, int]], flags: int) -> None:
        # pieces: (regex source matching exactly `length` characters, length)
        self._pieces = tuple(pieces)
        self._flags = flags
        self._full: tuple[re.Pattern[str], ...] | None = None
        self._words: tuple[re.Pattern[str], ...] | None = None

    def _plan(self, prefix: str, suffix: str) -> tuple[re.Pattern[str], ...]:
        """Regexes for the first piece (``prefix`` before it), the middle ones and
        the last (``suffix`` after it); just one regex for a single piece."""
        sources = [f"(?:{source})" for source, _ in self._pieces]
        sources[0] = prefix + sources[0]
        sources[-1] = sources[-1] + suffix
        return tuple(re.compile(source, self._flags) for source in sources)

    @staticmethod
    def _middle_end(plan: tuple[re.Pattern[str], ...], value: str, pos: int) -> int:
        """End of the earliest placement of the middle pieces from ``pos``, or -1."""
        for index in range(1, len(plan) - 1):
            found = plan[index].search(value, pos)
            if found is None:
                return -1
            pos = found.end()
        return pos

    def fullmatch(self, value: str) -> bool:
        plan = self._full
        if plan is None:
            plan = self._full = self._plan("", "")
        if len(plan) == 1:
            return plan[0].fullmatch(value) is not None
        if plan[0].match(value) is None:
            return False
        pos = self._middle_end(plan, value, self._pieces[0][1])
        start = len(value) - self._pieces[-1][1]
        return 0 <= pos <= start and plan[-1].fullmatch(value, start) is not None

    def search_words(self, value: str) -> bool:
        plan = self._words
        if plan is None:
            plan = self._words = self._plan(_AT_START, _AT_END)
        if len(plan) == 1:
            return plan[0].search(value) is not None
        found = plan[0].search(value)
        if found is None:
            return False
        pos = self._middle_end(plan, value, found.end())
        return pos >= 0 and plan[-1].search(value, pos) is not None


def _piece(text: str, question_mark: bool) -> tuple[str, int]:
    if not question_mark:
        return re.escape(text), len(text)
    return "".join("." if c == "?" else re.escape(c) for c in text), len(text)


@lru_cache(maxsize=16384)
def compile_glob(pattern: str, *, ignore_case: bool = False, question_mark: bool = True) -> Glob:
    """``pattern`` with ``*`` for any run of characters and, with ``question_mark``,
    ``?`` for any one character; every other character is literal."""
    raw = pattern.split("*")
    if len(raw) > 2:  # empty middle pieces ("**") change nothing
        raw = [raw[0], *(p for p in raw[1:-1] if p), raw[-1]]
    flags = re.DOTALL | (re.IGNORECASE if ignore_case else 0)
    return Glob([_piece(p, question_mark) for p in raw], flags)


@lru_cache(maxsize=16384)
def compile_literal(text: str, *, ignore_case: bool = False) -> Glob:
    """A glob matching ``text`` exactly (no wildcard)."""
    return Glob([(re.escape(text), len(text))], re.DOTALL | (re.IGNORECASE if ignore_case else 0))
