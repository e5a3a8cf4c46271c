"""What every demo section shares: the implementations under comparison, the
context a section runs in, its result rows, and the section registry.

A section is a function ``(ctx) -> list[RunResult]`` registered with the
:func:`section` decorator; the order sections are imported in (see
``plait/_demo/__init__.py``) is the order they run in.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from types import ModuleType
from typing import Callable

from .terminal import Terminal

#: Implementation name -> (module replacing ``threading``'s primitives,
#: module replacing ``queue``).  Built by :func:`implementations`.
Implementations = dict[str, tuple[ModuleType, ModuleType]]

STDLIB_NAME = "stdlib"
PLAIT_NAME = "plait"


def implementations(as_plait: str | None = None) -> tuple[Implementations, str | None]:
    """The implementations to compare, and an error message if plait is missing.

    ``as_plait="stdlib"`` is a developer aid: it runs the standard library
    under plait's name, to exercise the demo before the extension is built.
    """
    import queue

    impls: Implementations = {STDLIB_NAME: (threading, queue)}
    if as_plait == "stdlib":
        impls[f"{PLAIT_NAME}*"] = (threading, queue)
        return impls, None
    try:
        import plait.queue
        import plait.sync
    except ImportError as exc:
        return impls, (
            f"plait is not importable ({type(exc).__name__}: {exc}).\n"
            "Build it first: `make demo` builds and runs this demo, `make build` only builds."
        )
    impls[PLAIT_NAME] = (plait.sync, plait.queue)
    return impls, None


STALL_SECONDS = 15.0  # no progress for this long: report a failure, do not hang


def futures_modules(impls: Implementations) -> tuple[dict[str, ModuleType], str | None]:
    """Implementation name -> the module replacing ``concurrent.futures``.

    Derived from :func:`implementations`: the standard library (and the
    ``--as-plait stdlib`` stand-in, whose sync module is ``threading``) get
    ``concurrent.futures``; plait gets ``plait.futures``, or a note saying
    why it is missing.
    """
    import concurrent.futures

    mods: dict[str, ModuleType] = {}
    for name, (sync, _queue) in impls.items():
        if name == STDLIB_NAME or sync is threading:
            mods[name] = concurrent.futures
            continue
        try:
            import plait.futures
        except ImportError as exc:
            return mods, (f"plait.futures is not available ({type(exc).__name__}: {exc}); "
                          "this section needs it and is skipped")
        mods[name] = plait.futures
    return mods, None


def process_futures(impls: Implementations) -> tuple[ModuleType | None, str, str | None]:
    """(module with plait's ProcessPoolExecutor, its row label, problem)."""
    mods, problem = futures_modules(impls)
    if problem:
        return None, "", problem
    name = next((n for n in mods if n != STDLIB_NAME), None)
    if name is None:
        return None, "", "no plait implementation to compare"
    if mods[name].__name__ != "concurrent.futures" and not hasattr(mods[name],
                                                                   "ProcessPoolExecutor"):
        return None, "", (f"{mods[name].__name__} has no ProcessPoolExecutor (rebuild plait); "
                          "this section needs it and is skipped")
    return mods[name], name, None


@dataclass
class DemoContext:
    """What every section gets: the implementations, the terminal, the options."""

    impls: Implementations
    term: Terminal
    quick: bool = False
    items: int | None = None  # override a section's default size


@dataclass
class RunResult:
    """One implementation's run of one section's workload."""

    impl: str
    items: int
    seconds: float
    ok: bool
    note: str = ""

    @property
    def rate(self) -> float:
        return self.items / self.seconds if self.seconds > 0 else 0.0


def verdict(done: int, jobs: int, total: int, expected: int, errors: list[str],
            note: str = "") -> tuple[bool, str]:
    """A jobs run's (ok, note): ok when every job succeeded and the
    checksum matches; the note names the first failure, a stall (``note``
    given), or how far the run got."""
    if errors:
        note = f"{len(errors)} jobs failed, e.g. {errors[0]}"
    ok = not note and done == jobs and total == expected
    if not ok and not note:
        note = f"{done:,} of {jobs:,} jobs done, checksum differs"
    return ok, note


@dataclass
class Section:
    key: str
    title: str
    run: Callable[[DemoContext], list[RunResult]]
    unit: str = "items"  # what the closing table counts


#: The demo's sections, in order.  Append with the :func:`section` decorator.
SECTIONS: list[Section] = []


def section(key: str, title: str, unit: str = "items") -> Callable:
    """Register a demo section: a function ``(ctx) -> list[RunResult]``.

    A section that cannot run (a plait area not built yet) writes a note and
    returns no results; it then prints no table.
    """

    def register(fn: Callable[[DemoContext], list[RunResult]]):
        SECTIONS.append(Section(key, title, fn, unit))
        return fn

    return register
