"""The harness itself can fail: a case whose outcomes differ is caught."""

import pytest

from _table import PLAIT, STD, Case, check, ok, raises


def test_same_outcome_passes():
    check(Case("lock-no-args", lambda m: m.Lock().acquire(False)))


def test_different_outcome_fails():
    body = lambda m: 1 if m is PLAIT else 2  # noqa: E731
    with pytest.raises(AssertionError, match="CPython returns 2, plait returns 1"):
        check(Case("differs", body))


def test_exception_class_is_the_outcome():
    def body(m):
        raise (ValueError if m is STD else TypeError)("x")

    with pytest.raises(AssertionError, match="raises ValueError"):
        check(Case("class", body))
    check(Case("class-documented", body, differs=raises(TypeError), why="test"))


def test_stale_difference_fails():
    with pytest.raises(AssertionError, match="drop the difference"):
        check(Case("stale", lambda m: 1, differs=ok(1), why="test"))
