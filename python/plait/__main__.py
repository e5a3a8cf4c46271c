"""``python -m plait``: the two commands a newcomer runs.

* ``python -m plait demo``  - the same pipeline code on the standard library and
  on plait, with a progress bar and a side-by-side table (``plait/_demo/``).
* ``python -m plait bench`` - the comparison table: the standard library,
  CPython's C types and plait in one run (the harness in the repository's
  ``benches/`` directory).
* ``python -m plait run [options] script.py|-m module|-c cmd [args]`` - run
  a program with the standard library switched to plait (``plait/_run.py``);
  handled before anything else here is imported, so the switch comes first.
* ``python -m plait inspect [PID]`` - the report (who holds what, who waits
  on what, deadlocks) of another running plait process of this user, or the
  list of them (``plait/debug/_inspect.py``).

The benchmark harness lives in the repository, not in the installed package:
it is a development tool, and ``maturin develop`` installs plait so that the
package's files stay in ``<repo>/python/plait``, which puts the harness at
``<repo>/benches``.  An installed wheel has no harness, and says so.
"""

from __future__ import annotations

import sys

if __name__ == "__main__" and sys.argv[1:2] == ["run"]:
    from plait._run import main as _run_main

    _run_main(sys.argv[2:])
    from plait._run import wants_prompt as _wants_prompt

    if not _wants_prompt():
        sys.exit()
    # python -i: on to the interpreter's prompt (in the program's __main__),
    # as after `python -i script.py`, without this module's own commands.
    __name__ = "plait.__main__"

import argparse
import importlib
from pathlib import Path
from types import ModuleType

from . import _demo


def benches_dir() -> Path:
    """``<repo>/benches``, found relative to the package (``<repo>/python/plait``)."""
    import plait

    package_file = getattr(plait, "__file__", None) or __file__
    return Path(package_file).resolve().parents[2] / "benches"


def load_harness() -> tuple[ModuleType | None, str]:
    """Import ``benches/harness.py``; return (module or None, why not)."""
    where = benches_dir()
    if not (where / "harness.py").is_file():
        return None, (
            f"the benchmark harness is not here: {where / 'harness.py'} does not exist.\n"
            "`python -m plait bench` runs from a source checkout (the repository's benches/ "
            "directory); clone the repository and run `make bench`."
        )
    if str(where) not in sys.path:
        sys.path.insert(0, str(where))
    try:
        return importlib.import_module("harness"), ""
    except Exception as exc:  # a broken harness must not break `demo` or `--help`
        return None, f"could not import {where / 'harness.py'}: {type(exc).__name__}: {exc}"


def build_parser() -> tuple[argparse.ArgumentParser, ModuleType | None, str]:
    parser = argparse.ArgumentParser(
        prog="python -m plait",
        description="plait: Python's threading primitives and queues (and later more of its "
        "concurrency stack) rebuilt in Rust, with the same APIs.",
        epilog="Run `python -m plait COMMAND --help` for a command's options.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    demo = commands.add_parser(
        "demo", help="run the same workloads on the standard library and on plait, side by side",
        description="A short visual run: the same multi-stage pipeline code on threading+queue "
        "and on plait.sync+plait.queue, a live progress bar, a side-by-side table, and a "
        "checksum proving nothing was lost or duplicated.")
    _demo.add_arguments(demo)

    harness, problem = load_harness()
    bench = commands.add_parser(
        "bench", help="print the benchmark table (standard library, C types, plait)",
        description="Each workload against the standard library, CPython's C-implemented "
        "types (the reference) and plait in one process; prints rates, the ratios "
        "plait/reference and plait/stdlib, and the target with PASS/FAIL. Takes about a "
        "minute; --quick takes seconds.")
    if harness is not None:
        harness.add_arguments(bench)
    else:
        bench.description += f"\n\nNot available here: {problem}"
        bench.formatter_class = argparse.RawDescriptionHelpFormatter

    inspect = commands.add_parser(
        "inspect", help="print what another plait process's threads hold and wait for",
        description="Connect to the plait agent of a running process of yours (a Unix socket "
        "only you can open) and print its report: every blocked thread and task, what it waits "
        "for, who holds that, and every deadlock. Works while all its Python threads are "
        "deadlocked. Never signals the process. Without PID, list your plait processes.")
    _inspect_cli().add_arguments(inspect)
    return parser, harness, problem


def _inspect_cli() -> ModuleType:
    from .debug import _inspect  # on demand: `demo` and `bench` need none of plait.debug

    return _inspect


def main(argv: list[str] | None = None) -> int:
    parser, harness, problem = build_parser()
    opts, unknown = parser.parse_known_args(argv)
    if unknown and not (opts.command == "bench" and harness is None):
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    if opts.command == "demo":
        return _demo.run(opts)
    if opts.command == "inspect":
        return _inspect_cli().run(opts)
    if opts.command == "bench":
        if harness is None:
            print(f"plait bench: {problem}", file=sys.stderr)
            return 2
        return harness.run(opts)
    parser.print_help()
    return 2


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        sys.exit(130)
