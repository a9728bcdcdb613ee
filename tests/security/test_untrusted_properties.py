"""Property tests of the untrusted-input checks: ``homeserver.untrusted`` (JSON in,
integers, JSON out) and the canonical JSON and PDU format checks of
``homeserver.events.format``."""

from __future__ import annotations

import json
from typing import Any

import pytest
from canonicaljson import encode_canonical_json
from hypothesis import given
from hypothesis import strategies as st

from homeserver.errors import MatrixError
from homeserver.events.format import (
    CANONICALJSON_MAX_INT,
    CANONICALJSON_MIN_INT,
    EventFormatError,
    validate_canonical_json_values,
    validate_pdu_format,
)
from homeserver.events.room_versions import ROOM_VERSIONS
from homeserver.untrusted import (
    INT64_MAX,
    INT64_MIN,
    MAX_JSON_DEPTH,
    decode_json,
    has_lone_surrogate,
    parse_int64,
    utf8_json,
)

# Valid Unicode text: no surrogate code points.
_TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=12)
_CANONICAL_INT = st.integers(min_value=CANONICALJSON_MIN_INT, max_value=CANONICALJSON_MAX_INT)
_CANONICAL = st.recursive(
    st.none() | st.booleans() | _CANONICAL_INT | _TEXT,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(_TEXT, children, max_size=4),
    max_leaves=20,
)
_LONE = st.sampled_from(["\ud800", "\udbff", "\udc00", "\udfff", "a\ud83d", "\ude00b"])


def _insert(value: Any, bad: Any, path: list[int]) -> Any:
    """``value`` with ``bad`` placed somewhere inside it (or replacing it)."""
    if not path:
        return bad
    if isinstance(value, list) and value:
        index = path[0] % len(value)
        return [*value[:index], _insert(value[index], bad, path[1:]), *value[index + 1 :]]
    if isinstance(value, dict) and value:
        key = sorted(value)[path[0] % len(value)]
        return {**value, key: _insert(value[key], bad, path[1:])}
    return [value, bad]


@given(_CANONICAL)
def test_canonical_json_round_trips(value: Any) -> None:
    text = encode_canonical_json(value)
    assert decode_json(text) == value
    validate_canonical_json_values(value)
    assert utf8_json(json.dumps(value, ensure_ascii=False)) == json.dumps(
        value, ensure_ascii=False
    ).encode("utf-8")


@given(
    _CANONICAL,
    st.one_of(
        st.floats(allow_nan=True, allow_infinity=True),
        st.integers(min_value=CANONICALJSON_MAX_INT + 1),
        st.integers(max_value=CANONICALJSON_MIN_INT - 1),
        _LONE,
        _LONE.map(lambda s: {s: 1}),
    ),
    st.lists(st.integers(min_value=0, max_value=10), max_size=4),
)
def test_canonical_json_check_rejects_floats_big_ints_and_lone_surrogates(
    value: Any, bad: Any, path: list[int]
) -> None:
    with pytest.raises(EventFormatError) as e:
        validate_canonical_json_values(_insert(value, bad, path))
    assert e.value.errcode == "M_BAD_JSON"


@given(_CANONICAL, _LONE, st.lists(st.integers(min_value=0, max_value=10), max_size=4))
def test_decode_json_rejects_lone_surrogates(value: Any, lone: str, path: list[int]) -> None:
    text = json.dumps(_insert(value, lone, path))  # ensure_ascii: the \ud800 escapes
    with pytest.raises(MatrixError) as e:
        decode_json(text.encode())
    assert (e.value.status, e.value.errcode) == (400, "M_BAD_JSON")


@given(_CANONICAL, _LONE)
def test_utf8_json_never_fails(value: Any, lone: str) -> None:
    bad = _insert(value, lone, [0])
    assert has_lone_surrogate(bad)
    out = utf8_json(json.dumps(bad, ensure_ascii=False))
    assert not has_lone_surrogate(json.loads(out))


@given(st.integers(min_value=1, max_value=5000))
def test_decode_json_depth_is_bounded(depth: int) -> None:
    text = "[" * depth + "]" * depth
    if depth <= MAX_JSON_DEPTH:
        assert decode_json(text) is not None
    else:
        with pytest.raises(MatrixError) as e:
            decode_json(text)
        assert (e.value.status, e.value.errcode) == (400, "M_NOT_JSON")


@given(st.binary(max_size=64))
def test_decode_json_raises_only_matrix_errors(raw: bytes) -> None:
    try:
        decode_json(raw)
    except MatrixError as e:
        assert e.status == 400 and e.errcode in ("M_NOT_JSON", "M_BAD_JSON")


@given(st.sampled_from(["1e400", "-1e400", "1e309", "NaN", "Infinity", "-Infinity"]))
def test_decode_json_rejects_non_finite_numbers(number: str) -> None:
    with pytest.raises(MatrixError) as e:
        decode_json(f'{{"n": {number}}}')
    assert e.value.status == 400


@given(st.integers())
def test_parse_int64_accepts_exactly_the_64_bit_range(n: int) -> None:
    if INT64_MIN <= n <= INT64_MAX:
        assert parse_int64(str(n), "x") == n
    else:
        with pytest.raises(MatrixError) as e:
            parse_int64(str(n), "x")
        assert (e.value.status, e.value.errcode) == (400, "M_INVALID_PARAM")


@given(st.text(max_size=25))
def test_parse_int64_raises_only_invalid_param(text: str) -> None:
    try:
        value = parse_int64(text, "x")
    except MatrixError as e:
        assert (e.status, e.errcode) == (400, "M_INVALID_PARAM")
    else:
        assert text.isascii() and int(text) == value


_PDU_KEYS = st.sampled_from(
    [
        "type",
        "sender",
        "room_id",
        "state_key",
        "content",
        "auth_events",
        "prev_events",
        "depth",
        "origin_server_ts",
        "hashes",
        "signatures",
        "unsigned",
        "redacts",
        "event_id",
    ]
)
_ANY_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=12)
    | st.sampled_from(["@a:b.c", "!r:b.c", "$" + "A" * 43, "m.room.create"]),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=12,
)


@given(
    st.dictionaries(_PDU_KEYS, _ANY_JSON, max_size=14) | _ANY_JSON,
    st.sampled_from(sorted(ROOM_VERSIONS)),
)
def test_pdu_format_check_raises_only_its_own_error(pdu: Any, version: str) -> None:
    try:
        validate_pdu_format(pdu, ROOM_VERSIONS[version])
    except EventFormatError as e:
        assert e.errcode in ("M_BAD_JSON", "M_TOO_LARGE")
