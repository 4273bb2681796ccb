"""Tests of `keras_circle._checks` helpers used outside the losses."""

import numpy as np
import pytest

from keras_circle import _checks


@pytest.mark.parametrize("value", [0, -3, 2.0, True, np.bool_(True), "4", None])
def test_non_positive_or_non_integer_is_rejected_with_its_name(value):
    with pytest.raises(
        ValueError, match=rf"`steps` must be a positive integer; got {value!r}\."
    ):
        _checks.check_integer(value, "steps")


def test_none_is_accepted_only_when_its_meaning_is_given():
    assert _checks.check_integer(None, "size", none="for automatic") is None
    with pytest.raises(
        ValueError,
        match=r"`size` must be a positive integer, or None for automatic; got 0\.",
    ):
        _checks.check_integer(0, "size", none="for automatic")


def test_minimum_sets_the_bound_and_the_wording():
    assert _checks.check_integer(np.int64(0), "seed", minimum=0) == 0
    with pytest.raises(
        ValueError, match="`seed` must be a non-negative integer; got -1"
    ):
        _checks.check_integer(-1, "seed", minimum=0)
    with pytest.raises(ValueError, match="`k` must be an integer >= 2; got 1"):
        _checks.check_integer(1, "k", minimum=2)
