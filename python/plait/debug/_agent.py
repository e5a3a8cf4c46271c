"""What the inspection agent answers: ``reply(fmt)``.

plait's extension runs a Rust thread that serves ``python -m plait inspect``
over a Unix socket (``crates/plait-py/src/debug/agent.rs``).  For a report it
attaches to the interpreter from a short-lived helper thread and calls
:func:`reply`.  Whatever happens here becomes text for the client: an error
is described, never raised into the Rust side.
"""

from __future__ import annotations

import os
import threading

FORMATS = ("text", "json", "dot", "mermaid")

#: Replies that are not a report start with this; the client prints them to
#: stderr and exits 1.
ERROR_PREFIX = "plait inspect: "

#: While a reply is being built: the ident of the agent's helper thread
#: building it, which is not part of the program and which a report may
#: leave out of its thread list.
reporting_thread: int | None = None


def reply(fmt: str) -> str:
    """The report of this process in ``fmt`` (text, json, dot or mermaid)."""
    if fmt not in FORMATS:
        return f"{ERROR_PREFIX}unknown format {fmt!r} (expected one of {', '.join(FORMATS)})\n"
    global reporting_thread
    reporting_thread = threading.get_ident()
    try:
        from plait import debug

        snap = debug.snapshot()
        if fmt == "json":
            out = snap.to_json()
        elif fmt == "dot":
            out = snap.to_dot()
        elif fmt == "mermaid":
            out = snap.to_mermaid()
        else:
            out = str(snap)
    except BaseException:  # noqa: BLE001 - the agent must always get text back
        import traceback

        return (
            f"{ERROR_PREFIX}building the report failed in process {os.getpid()}:\n"
            + traceback.format_exc()
        )
    finally:
        reporting_thread = None
    if not out.endswith("\n"):
        out += "\n"
    return out
