"""Terminal output for the demo: a progress bar that degrades to plain lines,
and the side-by-side table closing each section."""

from __future__ import annotations

import os
import shutil
import sys
import time
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from .common import RunResult


class Terminal:
    """Where the demo writes, and what that stream can show.

    A TTY gets a redrawn progress bar (``\\r`` plus an ANSI clear-to-end-of-line)
    and colour; a pipe or file gets one plain line per finished run, so logs
    stay readable.  ``NO_COLOR`` and ``TERM=dumb`` are honoured.
    """

    def __init__(self, stream: TextIO | None = None, live: bool | None = None):
        self.stream = stream or sys.stdout
        is_tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        dumb = os.environ.get("TERM") == "dumb"
        self.live = (is_tty and not dumb) if live is None else live
        self.color = self.live and "NO_COLOR" not in os.environ
        self.columns = shutil.get_terminal_size((100, 24)).columns if self.live else 200
        encoding = getattr(self.stream, "encoding", None) or "ascii"
        try:
            "█░×—".encode(encoding)
            self.full, self.empty, self.times, self.dash = "█", "░", "×", "—"
        except (UnicodeEncodeError, LookupError):
            self.full, self.empty, self.times, self.dash = "#", "-", "x", "-"

    def write(self, text: str = "") -> None:
        self.stream.write(text + "\n")
        self.stream.flush()

    def paint(self, text: str, code: str) -> str:
        """Wrap ``text`` in an ANSI colour (``"1"`` bold, ``"32"`` green, ``"31"`` red)."""
        return f"\x1b[{code}m{text}\x1b[0m" if self.color else text


class ProgressBar:
    """A one-line progress bar for one run: ``label [████░░░░]  42%  ...``."""

    WIDTH = 32

    def __init__(self, term: Terminal, label: str, total: int, unit: str = "items"):
        self.term, self.label, self.total, self.unit = term, label, total, unit
        self._last_draw = 0.0

    def _line(self, done: int, elapsed: float, tail_width: int = 0) -> str:
        """The bar line, with the bar shrunk so the line fits the terminal.

        A line wider than the terminal wraps, and ``\r`` then redraws only its
        last row, so the width matters for the live display.
        """
        frac = min(1.0, done / self.total) if self.total else 1.0
        rate = done / elapsed if elapsed > 0 else 0.0
        head = f"  {self.label:<8} ["
        rest = (f"] {frac:4.0%}  {done:>9,}/{self.total:,} {self.unit}"
                f"  {elapsed:5.1f} s  {format_rate(rate):>7} {self.unit}/s")
        room = self.term.columns - len(head) - len(rest) - tail_width - 1
        if room < 8:  # a narrow terminal: keep the bar, drop the counts
            rest = f"] {frac:4.0%}  {elapsed:5.1f} s"
            room = self.term.columns - len(head) - len(rest) - tail_width - 1
        width = max(8, min(self.WIDTH, room))
        filled = int(frac * width)
        return head + self.term.full * filled + self.term.empty * (width - filled) + rest

    def update(self, done: int, elapsed: float) -> None:
        """Redraw, at most ~20 times a second, and only on a live terminal."""
        now = time.monotonic()
        if not self.term.live or now - self._last_draw < 0.05:
            return
        self._last_draw = now
        self.term.stream.write("\r" + self._line(done, elapsed) + "\x1b[K")
        self.term.stream.flush()

    def finish(self, done: int, elapsed: float, ok: bool, note: str = "") -> None:
        mark = self.term.paint("checksum OK", "32") if ok else self.term.paint("FAILED", "31")
        tail = f"  {mark}" + (f" ({note})" if note else "")
        if self.term.live:
            visible = len(tail) - (len(mark) - (11 if ok else 6))
            self.term.stream.write("\r" + self._line(done, elapsed, visible) + tail + "\x1b[K\n")
            self.term.stream.flush()
        else:
            self.term.write(self._line(done, elapsed) + tail)


def format_rate(x: float) -> str:
    for scale, suffix in ((1e6, " M"), (1e3, " k")):
        if x >= scale:
            return f"{x / scale:.3g}{suffix}" if x / scale < 100 else f"{x / scale:.0f}{suffix}"
    return f"{x:.0f}"


def print_results(term: Terminal, results: list[RunResult], unit: str = "items") -> None:
    """The side-by-side table closing a section; speedup is relative to the first row."""
    base = results[0].rate if results and results[0].rate > 0 else None
    term.write()
    term.write(f"  {'implementation':<16}{unit:>10}{'seconds':>10}{unit + '/s':>12}"
               f"{'checksum':>11}{'speedup':>10}")
    for r in results:
        speedup = f"{r.rate / base:.2f}{term.times}" if base and r.ok else term.dash
        check = term.paint("OK", "32") if r.ok else term.paint("FAILED", "31")
        pad = 11 + (len(check) - (2 if r.ok else 6))  # colour codes take no columns
        term.write(f"  {r.impl:<16}{r.items:>10,}{r.seconds:>10.2f}{format_rate(r.rate):>12}"
                   f"{check:>{pad}}{speedup:>10}")
    for r in results:
        if r.note and not r.ok:
            term.write(f"  {r.impl}: {r.note}")
