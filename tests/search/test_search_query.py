"""The search-term parser: websearch-like grammar, and rendered queries that neither
engine can choke on, whatever the user typed."""

from __future__ import annotations

import random
import sqlite3
from collections.abc import Iterator
from typing import Any

import pytest

from storage.search_query import MAX_TERMS, Group, SearchQuery, Term, parse_search_term
from tests.support.databases import PG_ARGS, require_postgres

SPECIALS = [
    '"',
    "'",
    "(",
    ")",
    "*",
    ":",
    "-",
    "!",
    "&",
    "|",
    "<",
    ">",
    "\\",
    "^",
    "+",
    "~",
    "{",
    "}",
    "[",
    "]",
    "%",
    "_",
    ",",
    ".",
    "\x00",
    " ",
    "\t",
    "\u200b",
    "🎉",
    "é",
    "AND",
    "OR",
    "NOT",
    "NEAR",
    "or",
    "a",
    "b",
    "1",
    "日",
]


def random_terms(n: int = 400) -> Iterator[str]:
    rng = random.Random(7)
    for _ in range(n):
        yield "".join(rng.choice(SPECIALS) for _ in range(rng.randint(1, 12)))


def test_words_are_anded_and_the_last_is_a_prefix() -> None:
    q = parse_search_term("martians and Men")
    assert q == SearchQuery(
        (Group((Term(("martians",)), Term(("and",)), Term(("Men",), prefix=True))),),
    )
    assert q.to_fts5() == '("martians" AND "and" AND "Men"*)'
    assert q.to_tsquery() == "('martians' & 'and' & 'Men':*)"
    assert q.positive_words() == ["martians", "and", "men"]


def test_phrases_negation_and_or() -> None:
    q = parse_search_term('"red car" -blue boat or -x ship')
    assert q.groups == (
        Group((Term(("red", "car")), Term(("blue",), negated=True), Term(("boat",)))),
        Group((Term(("x",), negated=True), Term(("ship",), prefix=True))),
    )
    assert q.to_fts5() == '(("red car" AND "boat") NOT "blue") OR (("ship"*) NOT "x")'
    assert q.to_tsquery() == "('red car' & 'boat' & !'blue') | ('ship':* & !'x')"


def test_punctuated_words_become_phrases_and_a_phrase_is_never_a_prefix() -> None:
    q = parse_search_term("e-mail")
    assert q.groups == (Group((Term(("e", "mail")),)),)
    q = parse_search_term('"quoted phrase')  # unterminated: runs to the end
    assert q.groups == (Group((Term(("quoted", "phrase")),)),)


def test_exclusions_alone_and_empty_input_match_nothing() -> None:
    for term in ("", "   ", "-zebra", '-"a b"', "***", "or", "or or", "- -", "\x00"):
        q = parse_search_term(term)
        assert q.is_empty, term
        assert q.to_fts5() == "" and q.to_tsquery() == ""
    # A group of exclusions is dropped, its sibling kept.
    q = parse_search_term("-a or b")
    assert q.groups == (Group((Term(("b",), prefix=True),)),)


def test_query_size_is_bounded() -> None:
    q = parse_search_term(" ".join(f"w{i}" for i in range(1000)))
    assert sum(len(g.terms) for g in q.groups) == MAX_TERMS
    q = parse_search_term("x" * 10_000)
    assert len(q.groups[0].terms[0].words[0]) == 200


def test_operators_typed_by_users_are_plain_words() -> None:
    q = parse_search_term('NEAR(a b) AND NOT col:x^2 "x" *')
    fts = q.to_fts5()
    # Every word is quoted; nothing the user typed survives as syntax.
    assert fts == '("NEAR a" AND "b" AND "AND" AND "NOT" AND "col x 2" AND "x")'
    # A quoted word is exact, not a prefix.
    assert parse_search_term('"exact"').to_tsquery() == "('exact')"


@pytest.fixture
def fts5() -> Iterator[sqlite3.Connection]:
    conn = sqlite3.connect(":memory:")
    conn.execute(
        "CREATE VIRTUAL TABLE t USING fts5(value, tokenize = 'porter unicode61 remove_diacritics 2')"
    )
    conn.execute("INSERT INTO t (value) VALUES ('a b NEAR and or not 1 é 日 zebra')")
    yield conn
    conn.close()


def test_rendered_fts5_queries_never_fail(fts5: sqlite3.Connection) -> None:
    for term in [*random_terms(), *SPECIALS]:
        q = parse_search_term(term)
        if q.is_empty:
            continue
        fts5.execute("SELECT rowid, bm25(t) FROM t WHERE t MATCH ?", (q.to_fts5(),)).fetchall()


def test_rendered_tsqueries_never_fail() -> None:
    require_postgres()
    import psycopg2

    conn: Any = psycopg2.connect(dbname="postgres", **PG_ARGS)
    try:
        cur = conn.cursor()
        for term in [*random_terms(), *SPECIALS]:
            q = parse_search_term(term)
            if q.is_empty:
                continue
            cur.execute(
                "SELECT to_tsvector('english', 'a b zebra') @@ to_tsquery('english', %s)",
                (q.to_tsquery(),),
            )
            cur.fetchall()
    finally:
        conn.close()
