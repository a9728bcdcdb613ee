"""Parsing a user's search term into a query both full-text engines can run safely.

Pure code, no I/O. The grammar follows PostgreSQL's ``websearch_to_tsquery`` (which
Synapse uses), so a search behaves the same on SQLite and PostgreSQL:

* words are ANDed: ``martians men`` needs both;
* ``"quoted words"`` is a phrase (the words next to each other, in order);
* ``-word`` / ``-"a phrase"`` excludes events that contain it;
* ``or`` (any case) between two terms makes alternatives: ``a b or c`` is
  ``(a AND b) OR c``;
* the last word, if plain (not quoted, not excluded), matches as a prefix (``mart``
  finds "martians"), for search-as-you-type.

Invariants:
- User input never reaches an engine's query syntax: a word is a run of letters,
  digits and combining marks (what both engines' tokenisers keep); everything else
  separates words. Rendered words are always quoted, so ``AND``, ``NEAR``, ``*``,
  ``(``, ``"`` or ``:`` typed by a user are plain text or nothing.
- A group made only of exclusions is dropped (both engines need something to
  match), and a query with no group left matches nothing (``is_empty``).
- Words are capped (``MAX_WORD_LENGTH``) and so are the terms of a query
  (``MAX_TERMS``), so the rendered query stays small whatever the input.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

MAX_TERMS = 64
MAX_WORD_LENGTH = 200


@dataclass(frozen=True, slots=True)
class Term:
    """One word (``len(words) == 1``) or a phrase (several words in order)."""

    words: tuple[str, ...]
    negated: bool = False
    prefix: bool = False


@dataclass(frozen=True, slots=True)
class Group:
    """Terms that must all hold (the negated ones must not)."""

    terms: tuple[Term, ...]

    @property
    def positive(self) -> tuple[Term, ...]:
        return tuple(t for t in self.terms if not t.negated)

    @property
    def negative(self) -> tuple[Term, ...]:
        return tuple(t for t in self.terms if t.negated)


@dataclass(frozen=True, slots=True)
class SearchQuery:
    """Alternatives (OR) of groups (AND)."""

    groups: tuple[Group, ...]

    @property
    def is_empty(self) -> bool:
        return not self.groups

    def positive_words(self) -> list[str]:
        """The words a match may contain, lower-cased, first occurrence order."""
        seen: dict[str, None] = {}
        for group in self.groups:
            for term in group.positive:
                for word in term.words:
                    seen.setdefault(word.lower(), None)
        return list(seen)

    def to_fts5(self) -> str:
        """An SQLite FTS5 ``MATCH`` expression (empty when ``is_empty``)."""
        rendered = []
        for group in self.groups:
            text = "(" + " AND ".join(_fts5_term(t) for t in group.positive) + ")"
            for term in group.negative:
                text = f"({text} NOT {_fts5_term(term)})"
            rendered.append(text)
        return " OR ".join(rendered)

    def to_tsquery(self) -> str:
        """Input for PostgreSQL ``to_tsquery`` (empty when ``is_empty``)."""
        rendered = []
        for group in self.groups:
            parts = [_ts_term(t) for t in group.positive]
            parts += ["!" + _ts_term(t) for t in group.negative]
            rendered.append("(" + " & ".join(parts) + ")")
        return " | ".join(rendered)


def _is_word_char(ch: str) -> bool:
    # Letters, numbers, marks and private-use characters: what SQLite's unicode61
    # tokeniser keeps together; PostgreSQL's parser splits at least as finely.
    return unicodedata.category(ch)[0] in "LNM" or unicodedata.category(ch) == "Co"


def _words(text: str) -> list[str]:
    out: list[str] = []
    current: list[str] = []
    for ch in text:
        if _is_word_char(ch):
            current.append(ch)
        elif current:
            out.append("".join(current))
            current = []
    if current:
        out.append("".join(current))
    return [w[:MAX_WORD_LENGTH] for w in out]


def _fts5_term(term: Term) -> str:
    # Words hold no '"' (see _is_word_char); quoting makes keywords plain strings.
    text = '"' + " ".join(term.words) + '"'
    return text + "*" if term.prefix else text


def _ts_term(term: Term) -> str:
    # Words hold no quote, backslash or operator; a quoted multi-word string is a
    # phrase (to_tsquery joins its lexemes with <->).
    text = "'" + " ".join(term.words) + "'"
    return text + ":*" if term.prefix else text


_OR = object()


def _lex(search_term: str) -> list[tuple[Term, bool] | object]:
    """(term, was quoted) and ``_OR`` markers, in input order."""
    items: list[tuple[Term, bool] | object] = []
    i, n = 0, len(search_term)
    while i < n:
        ch = search_term[i]
        if ch.isspace():
            i += 1
            continue
        negated = False
        if ch == "-" and i + 1 < n and not search_term[i + 1].isspace():
            negated = True
            i += 1
            ch = search_term[i]
        if ch == '"':
            end = search_term.find('"', i + 1)
            end = n if end < 0 else end
            words = _words(search_term[i + 1 : end])
            i = end + 1
            if words:
                items.append((Term(tuple(words), negated), True))
            continue
        end = i
        while end < n and not search_term[end].isspace() and search_term[end] != '"':
            end += 1
        chunk = search_term[i:end]
        i = end
        if not negated and chunk.lower() == "or":
            items.append(_OR)
            continue
        words = _words(chunk)
        if words:
            # "foo-bar" or "e.g." is one chunk of several words: a phrase.
            items.append((Term(tuple(words), negated), False))
    return items


def parse_search_term(search_term: str) -> SearchQuery:
    items = _lex(search_term)
    # The last term becomes a prefix match if it is a plain (unquoted) single word.
    for index in range(len(items) - 1, -1, -1):
        item = items[index]
        if isinstance(item, tuple):
            term, quoted = item
            if not term.negated and not quoted and len(term.words) == 1:
                items[index] = (Term(term.words, False, True), False)
            break
    groups: list[list[Term]] = [[]]
    count = 0
    pending_or = False
    for item in items:
        if item is _OR:
            pending_or = bool(groups[-1])
            continue
        assert isinstance(item, tuple)
        if count >= MAX_TERMS:
            break
        if pending_or:
            groups.append([])
            pending_or = False
        groups[-1].append(item[0])
        count += 1
    kept = tuple(Group(tuple(g)) for g in groups if any(not t.negated for t in g))
    return SearchQuery(kept)
