"""``python -m plait inspect [PID]``: the report of another plait process.

Every process that imports plait runs a small Rust agent thread listening on
a Unix socket ``<dir>/<pid>.sock`` (``crates/plait-py/src/debug/agent.rs``),
``dir`` being ``$XDG_RUNTIME_DIR/plait`` or ``/tmp/plait-<uid>``, mode 0700.
This command connects to it, sends one line (the format) and prints the reply.

It never signals the target: a process without plait, or with inspection
turned off, simply has no socket, and the command says so.  The socket's
listener must be the PID asked for and our own user (``SO_PEERCRED``), which
also catches a stale socket whose pid was reused.

Without a PID it lists the user's plait processes, removing the sockets of
processes that are gone.
"""

from __future__ import annotations

import argparse
import os
import socket
import stat
import struct
import sys
from pathlib import Path

#: Seconds the client waits for each read of the reply.
DEFAULT_TIMEOUT = 10.0

ERROR_PREFIX = "plait inspect: "

#: Seconds the listing waits for each process's ping.
PROBE_TIMEOUT = 2.0

#: Longest command line shown.
COMMAND_WIDTH = 200

_UCRED = struct.Struct("3i")  # pid, uid, gid


class InspectError(Exception):
    """Why a process could not be inspected (printed, exit status 1)."""


class StaleSocket(InspectError):
    """Nothing listens on the socket: it is left over."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "pid", nargs="?", type=int, metavar="PID",
        help="the process to inspect; without it, list your plait processes")
    fmt = parser.add_mutually_exclusive_group()
    fmt.add_argument("--json", dest="format", action="store_const", const="json",
                     help="the graph as JSON (nodes, edges, cycles)")
    fmt.add_argument("--dot", dest="format", action="store_const", const="dot",
                     help="the graph in Graphviz dot (cycle edges in red)")
    fmt.add_argument("--mermaid", dest="format", action="store_const", const="mermaid",
                     help="the graph as a Mermaid flowchart")
    parser.set_defaults(format="text")
    parser.add_argument(
        "--timeout", type=float, default=DEFAULT_TIMEOUT, metavar="SECONDS",
        help="give up when the process does not answer for this long "
        f"(default {DEFAULT_TIMEOUT:g})")


# ---------------------------------------------------------------------------
# Where sockets live (the same rules as agent.rs)

def candidate_dirs() -> list[Path]:
    """Every directory a plait process of this user may have put its socket in:
    its environment may differ from ours, so look in both places."""
    uid = os.geteuid()
    dirs = []
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg and os.path.isabs(xdg):
        dirs.append(Path(xdg) / "plait")
    run_user = Path(f"/run/user/{uid}/plait")
    if run_user not in dirs:
        dirs.append(run_user)
    dirs.append(Path(f"/tmp/plait-{uid}"))
    return dirs


def dir_problem(path: Path) -> str | None:
    """None if ``path`` is a directory only we can enter, else why not
    (then its sockets are not trusted); ``""`` if it does not exist."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return ""
    except OSError as exc:
        return f"cannot stat {path}: {exc.strerror}"
    if not stat.S_ISDIR(st.st_mode):
        return f"{path} is not a directory"
    if st.st_uid != os.geteuid():
        return f"{path} is owned by uid {st.st_uid}, not by you"
    if st.st_mode & 0o077:
        return f"{path} has mode {st.st_mode & 0o777:o}: others may enter it (must be 700)"
    return None


def secure_dirs() -> tuple[list[Path], list[str]]:
    """(usable socket directories, problems with the others)."""
    good, problems = [], []
    for d in candidate_dirs():
        why = dir_problem(d)
        if why is None:
            good.append(d)
        elif why:
            problems.append(why)
    return good, problems


# ---------------------------------------------------------------------------
# What /proc says about a pid (never a signal, not even kill(pid, 0))

def proc_state(pid: int) -> str | None:
    """The state letter from /proc/PID/stat (R, S, Z, ...), None if no such process."""
    try:
        data = Path(f"/proc/{pid}/stat").read_bytes()
    except (FileNotFoundError, ProcessLookupError):
        return None
    except OSError:
        return "?"
    return data[data.rfind(b")") + 2:].split(b" ", 1)[0].decode() or "?"


def is_alive(pid: int) -> bool:
    state = proc_state(pid)
    return state is not None and state not in ("Z", "X")


def proc_uid(pid: int) -> int | None:
    try:
        return os.stat(f"/proc/{pid}").st_uid
    except OSError:
        return None


def command_line(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return "?"
    # One line: a `python -c` script's newlines and indentation collapse.
    cmd = " ".join(raw.decode(errors="replace").replace("\0", " ").split()) or "?"
    return cmd if len(cmd) <= COMMAND_WIDTH else cmd[:COMMAND_WIDTH - 3] + "..."


def start_time(pid: int) -> float | None:
    """When ``pid`` started, in seconds since the epoch (to within a second)."""
    try:
        data = Path(f"/proc/{pid}/stat").read_bytes()
        ticks = int(data[data.rfind(b")") + 2:].split()[19])
        for line in Path("/proc/stat").read_text().splitlines():
            if line.startswith("btime "):
                return int(line.split()[1]) + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        pass
    return None


def user_name(uid: int) -> str:
    try:
        import pwd

        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except (ImportError, KeyError):
        return f"uid {uid}"


def is_stale(pid: int, sock: Path) -> bool:
    """The socket's process is gone, or ``pid`` now names a process that
    started after the socket was made (the pid was reused)."""
    if not is_alive(pid):
        return True
    started = start_time(pid)
    try:
        made = sock.lstat().st_mtime
    except OSError:
        return True
    return started is not None and made < started - 2


# ---------------------------------------------------------------------------
# Talking to the agent

def peer_cred(sock: socket.socket) -> tuple[int, int]:
    pid, uid, _gid = _UCRED.unpack(
        sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size))
    return pid, uid


def request(path: Path, pid: int, what: str, timeout: float) -> str:
    """Send ``what`` to the agent at ``path`` and return its whole reply."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        try:
            s.connect(str(path))
        except (ConnectionRefusedError, FileNotFoundError):
            # The agent binds and listens in one step and removes the file
            # before it stops, so a file nobody listens on is left over: by a
            # process killed outright, or one that replaced itself by exec.
            raise StaleSocket(
                f"process {pid} has no live plait agent: nothing listens on {path}, left by an "
                "earlier process with that pid, or from before an exec") from None
        except socket.timeout:
            raise InspectError(f"connecting to {path} timed out after {timeout:g} s") from None
        except OSError as exc:
            raise InspectError(f"cannot connect to {path}: {exc.strerror or exc}") from None
        peer_pid, peer_uid = peer_cred(s)
        if peer_uid != os.geteuid():
            raise InspectError(
                f"the socket {path} is served by {user_name(peer_uid)}, not by you: refusing")
        if peer_pid != pid:
            raise InspectError(
                f"the socket {path} is served by process {peer_pid}, not {pid}: refusing "
                "(a stale socket, or a copy made by fork)")
        s.sendall(what.encode() + b"\n")
        s.shutdown(socket.SHUT_WR)
        chunks = []
        while True:
            try:
                chunk = s.recv(1 << 16)
            except socket.timeout:
                raise InspectError(
                    f"process {pid} accepted the request but sent nothing for {timeout:g} s "
                    "(its agent is stuck, or the report is enormous); nothing was changed "
                    "in it") from None
            except OSError as exc:
                raise InspectError(f"reading from process {pid} failed: {exc}") from None
            if not chunk:
                break
            chunks.append(chunk)
    return b"".join(chunks).decode("utf-8", errors="replace")


def probe(path: Path, pid: int) -> str:
    """``"live"`` if ``pid``'s agent answers a ping at ``path`` (answered by
    the agent thread alone, without the interpreter), ``"stale"`` if nothing
    listens there, ``"unknown"`` otherwise (another pid answers, a timeout)."""
    try:
        reply = request(path, pid, "ping", timeout=PROBE_TIMEOUT)
    except StaleSocket:
        return "stale"
    except InspectError:
        return "unknown"
    return "live" if reply.startswith("plait ") else "unknown"


def remove(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass


def find_socket(pid: int) -> tuple[Path | None, list[Path], list[str]]:
    """(the socket of ``pid`` or None, the directories searched, directory problems)."""
    dirs, problems = secure_dirs()
    for d in dirs:
        path = d / f"{pid}.sock"
        try:
            if stat.S_ISSOCK(path.lstat().st_mode):
                return path, dirs, problems
        except OSError:
            continue
    return None, dirs, problems


def inspect(pid: int, fmt: str = "text", timeout: float = DEFAULT_TIMEOUT) -> str:
    """The report of process ``pid`` in ``fmt``; :class:`InspectError` says
    why not.  Nothing but a connection to its own socket is ever attempted."""
    if pid <= 0:
        raise InspectError(f"{pid} is not a process id")
    if pid == os.getpid():
        raise InspectError(f"{pid} is this inspect command itself")
    sock, dirs, problems = find_socket(pid)
    if not is_alive(pid):
        if sock is not None:
            remove(sock)
        state = proc_state(pid)
        if state in ("Z", "X"):
            raise InspectError(f"process {pid} has exited (a zombie its parent has not reaped)")
        raise InspectError(f"no process {pid} is running")
    owner = proc_uid(pid)
    if owner is not None and owner != os.geteuid():
        raise InspectError(
            f"process {pid} ({command_line(pid)}) belongs to {user_name(owner)}; plait inspects "
            "only your own processes: run this as that user")
    if sock is None:
        where = ", ".join(str(d) for d in dirs) or "no usable socket directory"
        why = (f"process {pid} ({command_line(pid)}) has no plait inspection socket (looked in "
               f"{where}): it has not imported plait, or has inspection turned off "
               "(PLAIT_INSPECT=0 or PLAIT_DEBUG=inspect=off), or could not create its socket. "
               "Nothing was sent to it.")
        if problems:
            why += " Not trusted: " + "; ".join(problems) + "."
        raise InspectError(why)
    try:
        return request(sock, pid, fmt, timeout)
    except StaleSocket as exc:
        remove(sock)
        raise StaleSocket(f"{exc} (removed it)") from None


def list_processes() -> tuple[list[tuple[int, str]], int]:
    """([(pid, command line)] of this user's live plait processes, sockets removed)."""
    found, removed = [], 0
    me = os.getpid()
    dirs, _ = secure_dirs()
    seen = set()
    for d in dirs:
        try:
            entries = sorted(d.iterdir())
        except OSError:
            continue
        for path in entries:
            if path.suffix != ".sock" or not path.stem.isdigit():
                continue
            pid = int(path.stem)
            if pid == me or pid in seen:
                continue
            if is_stale(pid, path) or probe(path, pid) == "stale":
                remove(path)
                removed += 1
                continue
            seen.add(pid)
            found.append((pid, command_line(pid)))
    found.sort()
    return found, removed


def run(opts: argparse.Namespace) -> int:
    # This command is not a process anyone wants to inspect.
    try:
        from plait import _plait

        _plait._debug_configure(inspect=False)
    except Exception:  # noqa: BLE001 - listing works without our own agent
        pass
    if opts.pid is None:
        found, removed = list_processes()
        if removed:
            print(f"(removed {removed} stale socket{'s' if removed != 1 else ''} of "
                  "processes that are gone)", file=sys.stderr)
        if not found:
            dirs, problems = secure_dirs()
            where = ", ".join(str(d) for d in dirs) or "no usable socket directory"
            print(f"no plait processes of yours are running (looked in {where})")
            for p in problems:
                print(f"not trusted: {p}", file=sys.stderr)
            return 0
        print(f"{'PID':>8}  COMMAND")
        for pid, cmd in found:
            print(f"{pid:>8}  {cmd}")
        return 0
    try:
        text = inspect(opts.pid, opts.format, opts.timeout)
    except InspectError as exc:
        print(f"{ERROR_PREFIX}{exc}", file=sys.stderr)
        return 1
    if text.startswith(ERROR_PREFIX):
        sys.stderr.write(text)
        return 1
    if not text:
        print(f"{ERROR_PREFIX}process {opts.pid} closed the connection without a reply",
              file=sys.stderr)
        return 1
    sys.stdout.write(text)
    return 0
