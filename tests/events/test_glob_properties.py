"""Property tests of the server's one glob matcher (``homeserver.events.glob``): it
agrees with a backtracking reference on small inputs, and runs in bounded time on the
inputs that make a backtracking matcher explode."""

from __future__ import annotations

import re
import time

from hypothesis import given, settings
from hypothesis import strategies as st

from federation.acl import server_allowed_by_acl
from homeserver.events.filtering import matches_type_glob
from homeserver.events.glob import compile_glob

_PATTERN = st.text(alphabet="ab*?.", max_size=10)
_VALUE = st.text(alphabet="abAB.?*\n", max_size=14)


def _reference(pattern: str, *, ignore_case: bool, question_mark: bool) -> re.Pattern[str]:
    parts = []
    for c in pattern:
        if c == "*":
            parts.append(".*")
        elif c == "?" and question_mark:
            parts.append(".")
        else:
            parts.append(re.escape(c))
    return re.compile("".join(parts), re.DOTALL | (re.IGNORECASE if ignore_case else 0))


@given(_PATTERN, _VALUE, st.booleans(), st.booleans())
def test_glob_agrees_with_reference_regex(
    pattern: str, value: str, ignore_case: bool, question_mark: bool
) -> None:
    expected = (
        _reference(pattern, ignore_case=ignore_case, question_mark=question_mark).fullmatch(value)
        is not None
    )
    glob = compile_glob(pattern, ignore_case=ignore_case, question_mark=question_mark)
    assert glob.fullmatch(value) is expected


@given(_PATTERN, _VALUE)
def test_event_type_filter_agrees_with_reference(pattern: str, value: str) -> None:
    """Filters: only ``*`` is special, and matching is case-sensitive."""
    expected = _reference(pattern, ignore_case=False, question_mark=False).fullmatch(value)
    assert matches_type_glob(value, pattern) is (expected is not None)


@given(st.text(alphabet="ab*?.", max_size=8), st.text(alphabet="abAB.", min_size=1, max_size=10))
def test_server_acl_globs_agree_with_reference(pattern: str, host: str) -> None:
    expected = _reference(pattern, ignore_case=True, question_mark=True).fullmatch(host)
    assert server_allowed_by_acl(host, {"allow": [pattern]}) is (expected is not None)
    assert server_allowed_by_acl(host, {"allow": ["*"], "deny": [pattern]}) is (expected is None)


@settings(max_examples=20, deadline=None)
@given(st.integers(min_value=1, max_value=3000), st.integers(min_value=1, max_value=20000))
def test_runs_of_stars_against_long_values_are_fast(stars: int, length: int) -> None:
    pattern = "a" + "*" * stars + "x"
    value = "a" * length
    started = time.monotonic()
    assert not compile_glob(pattern).fullmatch(value)
    assert not matches_type_glob(value, pattern)
    assert server_allowed_by_acl(value, {"allow": ["*"], "deny": [pattern]})
    assert time.monotonic() - started < 0.25


def test_many_separated_stars_are_fast() -> None:
    """``*a*a*a...*b`` (pieces between the stars) against ``aaaa...``: each piece is
    found once, left to right; a backtracking matcher is exponential here."""
    pattern = "*a" * 200 + "*b"
    value = "a" * 20000
    started = time.monotonic()
    assert not compile_glob(pattern).fullmatch(value)
    assert not compile_glob(pattern).search_words(value)
    assert not server_allowed_by_acl(value + ".org", {"allow": [pattern]})
    assert time.monotonic() - started < 0.5
