from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.collectors.tokens import TokenError, to_text, to_token
from pipeline.domain.events import TEXT_PATTERN, TOKEN_PATTERN

pytestmark = [pytest.mark.unit, pytest.mark.collectors]


def test_tokens_are_kept_and_the_rest_is_escaped() -> None:
    assert to_token("gpu-node-a.example:9400") == "gpu-node-a.example:9400"
    assert to_token("gpu node 1") == "gpu=20node=201"
    assert to_token("a=b") == "a=3Db"  # '=' itself is always escaped: the mapping is injective
    assert to_token(".hidden") == "0==2Ehidden"
    assert to_token("nœud") == "n=C5=93ud"
    with pytest.raises(TokenError, match="Hostname is empty"):
        to_token("", "Hostname")


def test_long_values_keep_a_prefix_and_a_hash() -> None:
    a, b = to_token("x" * 500), to_token("x" * 499 + "y")
    assert len(a) == 128 and len(b) == 128 and a != b and a.startswith("x" * 100)


@given(st.text(min_size=1, max_size=300))
def test_every_value_maps_into_the_token_set(value: str) -> None:
    token = to_token(value)
    assert re.fullmatch(TOKEN_PATTERN, token) and len(token) <= 128


@given(st.text(min_size=1, max_size=40), st.text(min_size=1, max_size=40))
def test_two_values_never_share_a_token(a: str, b: str) -> None:
    if a != b:
        assert to_token(a) != to_token(b)


@given(st.text(max_size=400))
def test_text_drops_control_characters(value: str) -> None:
    out = to_text(value)
    assert re.fullmatch(TEXT_PATTERN, out) and len(out) <= 128
    out.encode("utf-8")  # no lone surrogate left
