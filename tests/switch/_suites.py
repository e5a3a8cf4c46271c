"""CPython's own test suites run under ``python -m plait run -m test``.

Each suite runs as a user would run it: regrtest in one switched process
(sequential: ``-j`` workers would be fresh, unswitched interpreters), with
the tests the switch cannot pass listed in ``exclusions/<file>.txt``:

    # reason: why this private detail cannot be kept (one or more lines)
    test.test_threading.EventTests.test_at_fork_reinit
    [3.13+] test.test_x.Y.test_only_on_313
    [<3.12] test.test_x.Y.test_only_before_312
    [hangs] test.test_x.Y.test_that_would_hang

Every pattern must follow a ``#`` reason. ``[3.N+]`` / ``[<3.N]`` restrict a
line to some Python versions. The excluded tests are also run on their own,
where they must *fail* (``check_excluded``): that proves both that each
exclusion is still needed and that the switch really was on in the suite's
process; ``[hangs]`` lines are not run.
"""

from __future__ import annotations

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
    def __init__(self, pattern, reason, hangs=False):
        self.pattern, self.reason, self.hangs = pattern, reason, hangs

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
        hangs, keep = False, True
        while True:
            m = _TAG.match(line)
            if not m:
                break
            tag, line = m.group("tag"), m.group("rest")
            if tag == "hangs":
                hangs = True
            else:
                keep = keep and _applies(tag, version)
        if keep:
            out.append(Exclusion(line, " ".join(reason), hangs))
    return out


def _patterns_file(exclusions):
    fd, name = tempfile.mkstemp(prefix="plait-switch-", suffix=".txt")
    with os.fdopen(fd, "w") as f:
        f.write("".join(e.pattern + "\n" for e in exclusions))
    return name


def run_suite(tests, exclusions, *, extra=(), timeout=900, options=()):
    """``python -m plait run [options] -m test TESTS --ignorefile <exclusions>``;
    the CompletedProcess."""
    ignore = _patterns_file(exclusions)
    try:
        return plait_run("-m", "test", *tests, "--ignorefile", ignore, *extra,
                         options=options, timeout=timeout)
    finally:
        os.unlink(ignore)


def run_only(tests, exclusions, *, extra=(), timeout=600, options=()):
    """The given exclusions' tests alone (``--matchfile``), switched."""
    match = _patterns_file(exclusions)
    try:
        return plait_run("-m", "test", *tests, "--matchfile", match, *extra,
                         options=options, timeout=timeout)
    finally:
        os.unlink(match)


def report(proc):
    """The tail of a run's output, for an assertion message."""
    text = (proc.stdout or "") + (proc.stderr or "")
    return text[-12000:]
