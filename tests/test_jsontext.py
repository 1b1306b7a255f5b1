"""collector/jsontext.py gives exactly json.JSONEncoder's compact text: series fingerprints hash it, so one
character of difference would split every stored series in two after an upgrade."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given, settings, strategies as st

from otelite.collector.jsontext import dumps, dumps_sorted

_plain = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
_plain_sorted = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, sort_keys=True).encode

# Everything a normalizer hands the encoder: AnyValue scalars (any text, lone surrogates from JSON input
# included, NaN and infinities as floats where a column keeps them), arrays and kvlists nested.
_scalars = (st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
            | st.floats(allow_nan=True, allow_infinity=True) | st.text(st.characters(codec=None)))
_values = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=5)
                       | st.dictionaries(st.text(st.characters(codec=None), max_size=8), inner, max_size=5),
                       max_leaves=30)


@settings(max_examples=400, deadline=None)
@given(_values)
def test_same_text_as_json_encoder(value):
    assert dumps(value) == _plain(value)
    assert dumps_sorted(value) == _plain_sorted(value)


@pytest.mark.parametrize("value", [
    {"b": 1, "a": [0.1, -0.0, 1e-07, 1e300, float("nan"), float("inf"), -math.inf]},
    {"é": "\u2028\ud800\x00\"\\", "": None, "t": True},
    [], {}, "", 2**63, -(2**63) - 1, 3.0, (1, 2),
])
def test_edge_values(value):
    assert dumps(value) == _plain(value)
    assert dumps_sorted(value) == _plain_sorted(value)


def test_keys_sorted_and_unsorted_as_given():
    assert dumps_sorted({"b": 1, "a": {"d": 2, "c": 3}}) == '{"a":{"c":3,"d":2},"b":1}'
    assert dumps({"b": 1, "a": 2}) == '{"b":1,"a":2}'


def test_what_json_cannot_encode_raises_as_json_does():
    for enc in (dumps, dumps_sorted):
        with pytest.raises(TypeError, match="not JSON serializable"):
            enc({"a": object()})
        with pytest.raises(TypeError):
            enc({1: "a", "b": 2} if enc is dumps_sorted else {(1, 2): "a"})
    # The encoder keeps no state between calls: after an error it encodes as before.
    assert dumps_sorted({"z": [1], "a": 2}) == '{"a":2,"z":[1]}'
