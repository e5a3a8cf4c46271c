"""``python -m plait demo``: real workloads on the standard library and on plait.

The demo runs *the same code* twice: once with ``threading`` + ``queue``, once
with ``plait.sync`` + ``plait.queue``, swapping only the module objects, which
is the promise plait makes.  Each run shows a live progress bar; each section
ends with a side-by-side table and a checksum that proves the run was not
only fast but correct (nothing lost, nothing duplicated).

The demo is a list of *sections* (:data:`common.SECTIONS`), one module each,
run in the order imported below: the multi-stage pipeline, a thread pool
running many I/O-bound jobs (the same code on ``concurrent.futures`` and
``plait.futures``), CPU-bound work on threads and on processes (the GIL made
visible), a process pool surviving a worker killed mid-job, an asyncio
echo server, and a deadlocked program explained by ``plait.debug``.  A new section is a module whose function is decorated with
:func:`common.section`, imported here.  This module is the command line.
"""

from __future__ import annotations

import argparse
import sys

# Imported for their @section registration, in the order the sections run.
from . import pipeline, threadpool, cpu, crash, server, deadlock  # noqa: F401  # isort: skip
from .common import PLAIT_NAME, SECTIONS, DemoContext, implementations
from .terminal import Terminal, print_results


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("sections", nargs="*", metavar="SECTION",
                        help="run only these sections (default: all): "
                        + ", ".join(s.key for s in SECTIONS))
    parser.add_argument("--quick", action="store_true",
                        help="a much smaller run (a few seconds)")
    parser.add_argument("--items", type=int, default=None, metavar="N",
                        help="items per run (overrides the section's default)")
    parser.add_argument("--no-progress", action="store_true",
                        help="no live progress bar, one line per run (the default when "
                        "stdout is not a terminal)")
    parser.add_argument("--as-plait", metavar="IMPL", default=None, choices=["stdlib"],
                        help="developer aid: run IMPL ('stdlib') in plait's place, to "
                        "exercise the demo before plait is built")


def run(opts: argparse.Namespace) -> int:
    """Run the selected sections. Returns the exit status."""
    term = Terminal(live=False if opts.no_progress else None)
    known = {s.key: s for s in SECTIONS}
    unknown = [k for k in opts.sections if k not in known]
    if unknown:
        print(f"demo: unknown section(s) {', '.join(unknown)}; choose from "
              f"{', '.join(known)}", file=sys.stderr)
        return 2
    if opts.items is not None and opts.items < 1:
        print("demo: --items must be at least 1", file=sys.stderr)
        return 2
    impls, problem = implementations(opts.as_plait)
    if problem:
        print(f"demo: {problem}", file=sys.stderr)
        return 1

    chosen = [known[k] for k in opts.sections] if opts.sections else SECTIONS
    ctx = DemoContext(impls=impls, term=term, quick=opts.quick, items=opts.items)
    term.write(term.paint("plait demo", "1") + ": the same code on "
               + " and ".join(impls) + ", swapping only the modules")
    if opts.as_plait:
        term.write(term.paint(f"NOTE: '{PLAIT_NAME}*' is a stand-in ({opts.as_plait}), "
                              "not plait", "31"))
    all_ok = True
    for number, sec in enumerate(chosen, 1):
        term.write()
        term.write(term.paint(f"{number}. {sec.title}", "1"))
        results = sec.run(ctx)
        if results:
            print_results(term, results, sec.unit)
        all_ok = all_ok and all(r.ok for r in results)
    term.write()
    return 0 if all_ok else 1
