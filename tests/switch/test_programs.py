"""Real programs, unchanged (tests/switch/apps), give the same output under
``python -m plait run`` as under ``python``: a threading HTTP server the test
fetches from concurrently, a program that logs heavily from many threads,
producers/consumers on threading + queue, a ThreadPoolExecutor program, a
threading TCP echo server. Each prints, first, whether the switch was on:
off under python, on under plait run (so the comparison is never stdlib
against stdlib)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.switch._run import APPS, TIMEOUT, both, env, plait_run, python

ON = {"lock_switched": True,
      "patched": ["threading", "queue", "futures", "asyncio", "multiprocessing"]}
OFF = {"lock_switched": False, "patched": []}


def switch_line(line, switched):
    prefix, _, probe = line.partition(" ")
    assert prefix == "switch:", line
    assert json.loads(probe) == (ON if switched else OFF)


def same_program_output(plain, switched):
    """Exit codes 0, the switch line, then the same stdout; returns it."""
    for result, on in ((plain, False), (switched, True)):
        assert result.returncode == 0, result.stdout + result.stderr
        first, _, rest = result.stdout.partition("\n")
        switch_line(first, on)
    plain_rest = plain.stdout.partition("\n")[2]
    assert switched.stdout.partition("\n")[2] == plain_rest
    return plain_rest


@pytest.mark.parametrize("app, expected", [
    ("prodcons.py", ["items 8000 sum 31996000 digest ", "urgent in order True 80"]),
    ("futures_app.py", ["as_completed 200 2646700", "map [0, 1, 4, 9, 16, 25, 36, 49, 64, 81]",
                        "cancel queued True True", "blockers [True, True, True, True]",
                        "wait True", "raised task 7 failed", "callbacks 200 2646700"]),
    ("echo_app.py", ["clients 8", "all echoed True"]),
])
def test_threaded_programs(app, expected):
    plain, switched = both(os.path.join(APPS, app))
    out = same_program_output(plain, switched).splitlines()
    assert [line[:len(want)] for line, want in zip(out, expected)] == expected
    assert len(out) == len(expected)
    assert switched.stderr == plain.stderr == ""


def _log_lines(directory, prefix):
    lines = []
    for name in sorted(os.listdir(directory)):
        if name.startswith(prefix):
            with open(os.path.join(directory, name)) as f:
                lines += f.read().splitlines()
    return sorted(lines)


def test_heavy_logging(tmp_path):
    plain_dir, switched_dir = tmp_path / "plain", tmp_path / "switched"
    plain_dir.mkdir()
    switched_dir.mkdir()
    app = os.path.join(APPS, "logging_app.py")
    plain, switched = python(app, str(plain_dir)), plait_run(app, str(switched_dir))
    out = same_program_output(plain, switched)
    assert out == "logged [('DEBUG', 490), ('ERROR', 530), ('INFO', 490), ('WARNING', 490)]\n"
    # Threads interleave differently from run to run: compare sorted lines.
    assert sorted(switched.stderr.splitlines()) == sorted(plain.stderr.splitlines())
    assert len(plain.stderr.splitlines()) == 530
    for prefix, count in (("all.log", 2000), ("rotating.log", 2000), ("odd.log", 1000)):
        lines = _log_lines(plain_dir, prefix)
        assert len(lines) == count, prefix
        assert _log_lines(switched_dir, prefix) == lines, prefix
    # The rotating handler did rotate (more than one file) in both runs.
    assert len([n for n in os.listdir(switched_dir) if n.startswith("rotating.log.")]) > 1


_TIMESTAMP = re.compile(r"\[\d\d/\w\w\w/\d{4} \d\d:\d\d:\d\d\]")


def _serve_and_fetch(command, site):
    """Start the HTTP app, fetch every URL of the site from 8 threads at
    once, stop it; (switch line, bodies, sorted log lines, rest of stdout)."""
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, env=env()) as server:
        try:
            switch = server.stdout.readline()
            port_line = server.stdout.readline()
            assert port_line.startswith("port "), port_line + server.stderr.read()
            base = f"http://127.0.0.1:{int(port_line.split()[1])}"
            paths = ["/", "/missing.txt"] + [f"/{name}" for name in sorted(os.listdir(site))]
            paths += [f"/square?n={n}" for n in range(40)]

            def fetch(path):
                try:
                    with urllib.request.urlopen(base + path, timeout=TIMEOUT) as reply:
                        return path, reply.status, reply.read()
                except urllib.error.HTTPError as exc:
                    return path, exc.code, b""

            with ThreadPoolExecutor(8) as pool:
                bodies = sorted(pool.map(fetch, paths * 3))
            urllib.request.urlopen(base + "/quit", timeout=TIMEOUT).read()
            out, err = server.communicate(timeout=TIMEOUT)
        finally:
            if server.poll() is None:
                server.kill()
    assert server.returncode == 0, err
    log = sorted(_TIMESTAMP.sub("[T]", line) for line in err.splitlines())
    return switch, bodies, log, out


def test_threading_http_server(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    for n in range(6):
        (site / f"file{n}.txt").write_bytes(bytes(range(256)) * (n * 97 + 1))
    app = [os.path.join(APPS, "http_app.py"), str(site)]
    plain = _serve_and_fetch([sys.executable, *app], site)
    switched = _serve_and_fetch([sys.executable, "-m", "plait", "run", *app], site)
    switch_line(plain[0].strip(), False)
    switch_line(switched[0].strip(), True)
    assert switched[1:] == plain[1:]
    bodies, log, out = plain[1:]
    assert len(bodies) == 3 * 48 and sum(status == 404 for _, status, _ in bodies) == 3
    assert json.loads(dict((p, b) for p, _, b in bodies)["/square?n=7"]) == \
        {"n": 7, "square": 49}
    assert out == f"served {3 * 48 + 1} requests\n"
    assert '127.0.0.1 - - [T] "GET /file3.txt HTTP/1.1" 200 -' in log
    assert '127.0.0.1 - - [T] code 404, message File not found' in log
