"""The fast YAML writer reads back as exactly what was written, for any JSON-like data."""

from __future__ import annotations

import math

import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from weatherfleet.reconcilers.yamltext import dump, dump_all

tricky = st.sampled_from(
    ["yes", "No", "on", "OFF", "null", "~", "1e3", "12:30", "0x1F", "a: b", "- x", "#c", "line\n", "a\nb\n\n",
     " x\ny", "x\n  y", "x\n\ty", "@x", "a b", "", " ", "true", "2160h", "${TOKEN}", "$VAR", "é\u2028x",
     "\x85", "\ufeff", "a\r\nb", "'q'", '"q"', "*alias", "&anchor", "!tag", "%dir", "{}", "[]"]
)  # fmt: skip
scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text() | tricky
keys = st.text(max_size=8) | tricky
data = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4),
    max_leaves=25,
)


@settings(max_examples=1000, deadline=None)
@given(data)
def test_round_trip(value):
    assert yaml.safe_load(dump(value)) == value


@settings(max_examples=200, deadline=None)
@given(st.lists(st.dictionaries(keys, data, min_size=1, max_size=3), max_size=4))
def test_multi_document_round_trip(docs):
    assert list(yaml.safe_load_all(dump_all(docs))) == docs


def test_reads_like_yaml_a_person_writes():
    # "n" is quoted: YAML 1.1 readers such as go-yaml v2 (kubectl) take a bare n, y, on or off for a bool.
    text = dump(
        {"metadata": {"name": "dev-01", "labels": {"a/b": "x"}}, "data": {"f": "one\ntwo\n"}, "n": [1, 2]}
    )
    assert text == (
        'data:\n  f: |\n    one\n    two\nmetadata:\n  labels:\n    a/b: x\n  name: dev-01\n"n":\n- 1\n- 2\n'
    )


def test_special_floats():
    assert yaml.safe_load(dump([1e16, -0.5, float("inf")])) == [1e16, -0.5, float("inf")]
    assert math.isnan(yaml.safe_load(dump(float("nan"))))
