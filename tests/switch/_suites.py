"""CPython's own test suites run under ``python -m plait run -m test``.

Each suite runs as a user would run it: regrtest in one switched process
(sequential: ``-j`` workers would be fresh, unswitched interpreters), with
the tests the switch cannot pass listed in ``exclusions/<file>.txt``:

    # reason: why this private detail cannot be kept (one or more lines)
    test.test_threading.EventTests.test_at_fork_reinit
    [3.13+] test.test_x.Y.test_only_on_313
    [<3.12] test.test_x.Y.test_only_before_312
    [hangs] test.test_x.Y.test_that_would_hang
    [flaky] test.test_x.Y.test_that_may_pass_alone

Every pattern must follow a ``#`` reason. ``[3.N+]`` / ``[<3.N]`` restrict a
line to some Python versions. The excluded tests are also run on their own,
where they must *fail* (``check_excluded``): that proves both that each
exclusion is still needed and that the switch really was on in the suite's
process; ``[hangs]`` lines are not run, nor ``[flaky]`` ones (a test that
fails under the switch only sometimes, so may pass alone).

The suite does not run as a bare ``-m test``: ``run_suite``/``run_only``
run ``python -m plait run -m tests.switch._suites``, which first checks, in
the suite's own process, that the switch is on (``threading.Lock()`` is plait's,
``queue.Queue`` is plait's, for the parts switched), writes
``plait switch on: <parts>`` to stderr, then runs the ``test`` package as
``-m test`` does (``runpy._run_module_as_main``, the same call, the same
``sys.argv[1:]``). ``switched_parts(proc)`` reads that line back, so a test
can show it did not silently test the standard library.
"""

from __future__ import annotations

import fnmatch
import os
import re
import sys
import tempfile
from pathlib import Path

from tests.switch._run import plait_run

HERE = Path(__file__).resolve().parent
EXCLUSIONS = HERE / "exclusions"

_TAG = re.compile(r"^\[(?P<tag>[^\]]+)\]\s*(?P<rest>.*)$")


class Exclusion:
    def __init__(self, pattern, reason, hangs=False, flaky=False):
        self.pattern, self.reason, self.hangs, self.flaky = pattern, reason, hangs, flaky

    def __repr__(self):
        return f"Exclusion({self.pattern!r}, hangs={self.hangs})"


def _applies(tag, version=sys.version_info[:2]):
    m = re.fullmatch(r"3\.(\d+)\+", tag)
    if m:
        return version >= (3, int(m.group(1)))
    m = re.fullmatch(r"<3\.(\d+)", tag)
    if m:
        return version < (3, int(m.group(1)))
    raise ValueError(f"unknown exclusion tag [{tag}]")


def load(name, version=sys.version_info[:2]):
    """The exclusions of ``exclusions/<name>.txt`` for ``version``."""
    path = EXCLUSIONS / f"{name}.txt"
    if not path.exists():
        return []
    out, reason, after_pattern = [], [], False
    for n, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not line:
            continue
        if line.startswith("#"):
            if after_pattern:  # a new reason, for the patterns that follow it
                reason, after_pattern = [], False
            reason.append(line.lstrip("# "))
            continue
        after_pattern = True
        if not reason:
            raise ValueError(f"{path}:{n}: exclusion {line!r} has no '# reason' line before it")
        hangs, flaky, keep = False, False, True
        while True:
            m = _TAG.match(line)
            if not m:
                break
            tag, line = m.group("tag"), m.group("rest")
            if tag == "hangs":
                hangs = True
            elif tag == "flaky":
                flaky = True
            else:
                keep = keep and _applies(tag, version)
        if keep:
            out.append(Exclusion(line, " ".join(reason), hangs, flaky))
    return out


def _patterns_file(exclusions):
    fd, name = tempfile.mkstemp(prefix="plait-switch-", suffix=".txt")
    with os.fdopen(fd, "w") as f:
        f.write("".join(e.pattern + "\n" for e in exclusions))
    return name


ROOT = HERE.parents[1]


def _regrtest_main():
    """``python -m tests.switch._suites ARGS`` (run by ``python -m plait
    run``): check the switch in this very process, say so on stderr, then be
    ``python -m test ARGS`` (``runpy._run_module_as_main``, what ``-m`` runs)."""
    import plait._switch

    parts = plait._switch.patched()
    if "threading" in parts:
        import threading

        from plait import _plait

        lock = threading.Lock()
        if not isinstance(lock, _plait.Lock):
            sys.exit(f"switch not on: threading.Lock() is {type(lock)!r}")
    if "queue" in parts:
        import queue

        import plait.queue

        if not issubclass(queue.Queue, plait.queue.Queue):
            sys.exit(f"switch not on: queue.Queue is {queue.Queue!r}")
    sys.stderr.write("plait switch on: " + ",".join(parts) + "\n")
    sys.stderr.flush()
    import runpy

    runpy._run_module_as_main("test")


_SWITCH_LINE = re.compile(r"^plait switch on: (.*)$", re.M)


def regrtest(*args, timeout=900, options=()):
    """``python -m plait run [options]`` running ``python -m test ARGS`` (after
    checking the switch in that process, see the module doc)."""
    return plait_run("-m", "tests.switch._suites", *args, options=options,
                     timeout=timeout, cwd=ROOT)


def switched_parts(proc):
    """The parts the suite's process had switched (a tuple), or None when it
    never said (the check did not run)."""
    m = _SWITCH_LINE.search(proc.stderr or "")
    return tuple(p for p in m.group(1).split(",") if p) if m else None


def run_suite(tests, exclusions, *, extra=(), timeout=900, options=()):
    """``python -m plait run [options] -m test TESTS --ignorefile <exclusions>``;
    the CompletedProcess."""
    ignore = _patterns_file(exclusions)
    try:
        return regrtest(*tests, "--ignorefile", ignore, *extra, options=options,
                        timeout=timeout)
    finally:
        os.unlink(ignore)


def run_only(tests, exclusions, *, extra=(), timeout=600, options=()):
    """The given exclusions' tests alone (``--matchfile``), switched."""
    match = _patterns_file(exclusions)
    try:
        return regrtest(*tests, "--matchfile", match, *extra, options=options,
                        timeout=timeout)
    finally:
        os.unlink(match)


# unittest's verbose line: "name (module.Class.name) ... ok" (3.11+) or
# "name (module.Class) ... ok" (3.10); the result may follow other output.
_VERBOSE = re.compile(r"^(\w+) \(([\w.]+)\)(?:.*?)\.\.\. ?(ok|FAIL|ERROR|skipped|expected failure"
                      r"|unexpected success)?", re.M)


def _matches(test_id, pattern):
    """regrtest's reading of a match pattern: the whole id, or any dotted
    tail of it (``EventTests.test_x`` matches ``test.test_threading.EventTests.test_x``)."""
    parts = test_id.split(".")
    return any(fnmatch.fnmatchcase(".".join(parts[i:]), pattern) for i in range(len(parts)))


def verbose_results(text):
    """``{test id: result}`` from ``-v`` output (result None when the
    line was interleaved with other output and the verdict is elsewhere)."""
    out = {}
    for name, where, result in _VERBOSE.findall(text):
        test_id = where if where.endswith("." + name) else f"{where}.{name}"
        out[test_id] = result or out.get(test_id)
    return out


def check_excluded(tests, exclusions, *, timeout=600, options=()):
    """Run the exclusions' tests alone, switched, verbose; the problems
    found (an empty list when every excluded test ran and failed, and the
    switch was on), and the CompletedProcess (None when there was nothing
    to run: no exclusions, or only ``[hangs]`` ones)."""
    runnable = [e for e in exclusions if not (e.hangs or e.flaky)]
    if not runnable:
        return [], None
    proc = run_only(tests, runnable, extra=("-v",), timeout=timeout, options=options)
    problems = []
    if switched_parts(proc) is None:
        problems.append("the suite's process did not report the switch on")
    if proc.returncode == 0:
        problems.append("the excluded tests passed as a whole (exit code 0)")
    results = verbose_results((proc.stdout or "") + (proc.stderr or ""))
    for e in runnable:
        hit = {t: r for t, r in results.items() if _matches(t, e.pattern)}
        if not hit:
            problems.append(f"{e.pattern}: no such test ran (stale exclusion?)")
        for t, r in hit.items():
            if r in ("ok", "skipped", "expected failure"):
                problems.append(f"{t}: {r} under the switch, so excluding it is not needed")
    return problems, proc


def report(proc):
    """The tail of a run's output, for an assertion message."""
    text = (proc.stdout or "") + (proc.stderr or "")
    return text[-12000:]


if __name__ == "__main__":
    _regrtest_main()
