"""The portable filter's parser and reference evaluator (the per-store behaviour is in test_contract.py)."""
from __future__ import annotations

import numpy as np
import pytest

from connectors.filters import And, Cond, Or, matches, parse
from embedder.errors import InputError


def test_keys_are_declared_fields_then_builtins_then_metadata():
    node = parse({"color": "red", "modality": "image", "year": {"$gte": 2020}}, {"color": str})
    assert node == And((Cond("color", "$eq", "red", False), Cond("modality", "$eq", "image", False),
                        Cond("year", "$gte", 2020, True)))
    row = {"color": "red", "modality": "image", "metadata": {"year": 2021}}
    assert matches(node, row)
    assert not matches(node, {**row, "metadata": {"year": "2021"}})  # a string is not a number
    assert not matches(node, {**row, "metadata": {}})


def test_numpy_values_are_plain_values():
    node = parse({"n": np.int64(3), "f": {"$in": [np.float32(0.5), np.bool_(True)]}})
    assert node == And((Cond("n", "$eq", 3, True), Cond("f", "$in", (0.5, True), True)))
    assert type(node.parts[0].value) is int


def test_kinds_never_mix_and_missing_matches_nothing():
    assert not matches(parse({"flag": True}), {"metadata": {"flag": 1}})  # True is not 1
    assert matches(parse({"n": 1}), {"metadata": {"n": 1.0}})  # ints and floats compare as numbers
    assert matches(parse({"n": {"$ne": 1}}), {"metadata": {"n": "1"}})
    assert not matches(parse({"n": {"$ne": 1}}), {"metadata": {"n": None}})
    assert not matches(parse({"n": {"$ne": 1}}), {"metadata": {"n": [2]}})


def test_an_empty_filter_matches_all_but_not_inside_and_or():
    assert parse({}) == And(())
    assert matches(parse({}), {})
    with pytest.raises(InputError, match=r"empty filter \{\} inside"):
        parse({"$or": [{}, {"a": 1}]})
    assert isinstance(parse({"$or": [{"a": 1}, {"b": 2}]}), Or)
