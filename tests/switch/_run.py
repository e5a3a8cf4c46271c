"""Running a program under ``python -m plait run`` (and, to compare, plain
``python``) from the switch's tests: one helper, one hang bound."""

from __future__ import annotations

import os
import subprocess
import sys

#: Generous: these are whole programs, and a hang must fail, not stall CI.
TIMEOUT = 300


def env(**extra):
    """The environment for a child: this one, with PLAIT_DEBUG unset and
    ``extra`` set (a None value leaves a name as it is)."""
    e = dict(os.environ)
    e.pop("PLAIT_DEBUG", None)
    e.update({k: v for k, v in extra.items() if v is not None})
    return e


def plait_run(*args, options=(), timeout=TIMEOUT, **kwargs):
    """``python -m plait run [options] args...``; a CompletedProcess (text)."""
    kwargs.setdefault("env", env())
    return subprocess.run([sys.executable, "-m", "plait", "run", *options, *args],
                          capture_output=True, text=True, timeout=timeout, **kwargs)


def python(*args, timeout=TIMEOUT, **kwargs):
    """``python args...`` (no switch); a CompletedProcess (text)."""
    kwargs.setdefault("env", env())
    return subprocess.run([sys.executable, *args], capture_output=True, text=True,
                          timeout=timeout, **kwargs)


#: The programs the switch's tests run (tests/switch/apps).
APPS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "apps")


def both(*args, options=(), python_options=(), **kwargs):
    """The same program under plain ``python`` and under ``python -m plait
    run``: ``(plain, switched)`` CompletedProcesses. ``python_options`` go
    to the interpreter in both (``python -P ...`` / ``python -P -m plait
    run ...``)."""
    plain = python(*python_options, *args, **kwargs)
    switched = python(*python_options, "-m", "plait", "run", *options, *args, **kwargs)
    return plain, switched


def same_outcome(plain, switched):
    """Assert the two runs ended alike: exit code, stdout, stderr."""
    assert (switched.returncode, switched.stdout, switched.stderr) == \
        (plain.returncode, plain.stdout, plain.stderr), (
            f"python: rc={plain.returncode}\n{plain.stdout}\n{plain.stderr}\n"
            f"plait run: rc={switched.returncode}\n{switched.stdout}\n{switched.stderr}")
