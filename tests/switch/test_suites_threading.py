"""CPython's test_threading, test_queue, test_logging and test_socketserver
under ``python -m plait run -m test`` (one switched regrtest process each,
sequential), with the exclusions of ``exclusions/<suite>.txt``; and each
suite's excluded tests, run alone, must still fail.

test_socketserver needs the ``network`` resource (``-u network``) or it is
skipped whole; its servers bind ``socket_helper.HOST`` (localhost) and Unix
sockets only. Each run must also say the switch was on in its process
(``_suites.switched_parts``) and that its suite really ran (not skipped).
"""

from __future__ import annotations

import re

import pytest

from tests.switch import _suites

#: suite -> regrtest options it needs to run at all
SUITES = {
    "test_threading": (),
    "test_queue": (),
    "test_logging": (),
    "test_socketserver": ("-u", "network"),
}

PARTS = ("threading", "queue", "futures", "asyncio", "multiprocessing")


def _ran(proc, suite):
    """The suite ran (not skipped, not 'no tests ran') and passed."""
    text = proc.stdout + proc.stderr
    return (proc.returncode == 0 and re.search(r"\b1 test OK\.", text) is not None
            and f"{suite} skipped" not in text and "no tests ran" not in text.lower())


@pytest.mark.timeout(900)
@pytest.mark.parametrize("suite", sorted(SUITES))
def test_suite_passes_switched(suite):
    exclusions = _suites.load(suite)
    proc = _suites.run_suite([suite], exclusions, extra=SUITES[suite])
    assert _suites.switched_parts(proc) == PARTS, _suites.report(proc)
    assert _ran(proc, suite), _suites.report(proc)


@pytest.mark.timeout(600)
@pytest.mark.parametrize("suite", sorted(SUITES))
def test_excluded_tests_still_fail(suite):
    exclusions = _suites.load(suite)
    problems, proc = _suites.check_excluded([suite], exclusions, options=())
    if proc is None:
        pytest.skip(f"{suite} has no (runnable) exclusions on this Python")
    assert not problems, "\n".join(problems) + "\n" + _suites.report(proc)


def test_exclusion_files_parse():
    """Every suite's file is there and every line has a reason (load raises
    otherwise), on every version the tags name."""
    for suite in SUITES:
        assert (_suites.EXCLUSIONS / f"{suite}.txt").exists()
        for minor in range(10, 15):
            for e in _suites.load(suite, (3, minor)):
                assert e.reason and e.pattern.startswith("test."), e
