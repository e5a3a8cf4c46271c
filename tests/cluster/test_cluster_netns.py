"""The multi-host shape: a dask scheduler and two dask workers, each in its
own network namespace (joined by veth pairs on a bridge), and the client
(ClusterExecutor("tcp://...")) inside the scheduler's namespace, run as a
subprocess through ``ip netns exec``. A few calls: a result, an exception,
a call that kills its plait process (WorkerDied) and a whole dask worker
SIGKILLed while it runs a call (WorkerDied "was lost"; what was queued runs
once). Everything made here is deleted at the end: processes, namespaces,
veths. Skipped, with the reason, where namespaces cannot be made."""

import importlib.util
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from _bounds import wait_until

pytestmark = [
    pytest.mark.timeout(300),
    pytest.mark.skipif(importlib.util.find_spec("distributed") is None,
                       reason="plait.cluster needs dask.distributed"),
]

sys.path.insert(0, os.path.dirname(__file__))
import _netns  # noqa: E402

BOUND = 60
CLIENT_BOUND = 240
PORT = 8786  # inside the scheduler's own namespace: nothing else listens there

CLIENT = textwrap.dedent('''
    import json, os, signal, socket, sys, time
    import logging
    import plait.futures as pf
    from plait.cluster import ClusterExecutor

    BOUND = 60

    class Boom(ValueError):
        pass

    def square(x):
        return x * x

    def boom():
        raise Boom("boom")

    def exit_now(code):
        os._exit(code)

    def my_ip(scheduler_ip):
        # The address this process would reach the scheduler from (a UDP
        # connect sends nothing): the call's own network namespace.
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            s.connect((scheduler_ip, 9))
            return s.getsockname()[0]
        finally:
            s.close()

    def mark(path):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.write(fd, b"start\\n")
        os.close(fd)
        return os.path.basename(path)

    def nap(seconds, path):
        mark(path)
        time.sleep(seconds)
        return seconds

    def wait_for(cond, what):
        deadline = time.monotonic() + BOUND
        while not cond():
            if time.monotonic() > deadline:
                raise TimeoutError(what)
            time.sleep(0.01)

    def describe(exc):
        return None if exc is None else [type(exc).__name__, str(exc)]

    if __name__ == "__main__":
        for name in ("distributed", "plait.cluster"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
        address, scheduler_ip, marks = sys.argv[1:4]
        out = {}
        executor = ClusterExecutor(address)
        try:
            client = executor._client
            client.wait_for_workers(2, timeout=BOUND)
            out["workers"] = sorted(client.scheduler_info()["workers"])
            out["square"] = executor.submit(square, 7).result(BOUND)
            out["boom"] = describe(executor.submit(boom).exception(BOUND))
            out["exit"] = describe(executor.submit(exit_now, 3).exception(BOUND))
            out["ips"] = sorted(set(executor.map(my_ip, [scheduler_ip] * 8, chunksize=1)))

            victim = os.path.join(marks, "victim")
            running = executor.submit(nap, 600, victim)
            wait_for(lambda: os.path.exists(victim), "the victim never started")
            wait_for(lambda: any(running._plait_task.key in keys
                                 for keys in client.processing().values()),
                     "the scheduler does not know where the victim runs")
            holder = next(addr for addr, keys in client.processing().items()
                          if running._plait_task.key in keys)
            queued = [executor.submit(mark, os.path.join(marks, "q%d" % i)) for i in range(3)]
            pid = client.run(os.getpid, workers=[holder])[holder]
            out["killed"] = holder
            os.kill(pid, signal.SIGKILL)  # a dask worker the test started
            out["lost"] = describe(running.exception(BOUND * 2))
            out["queued"] = [f.result(BOUND * 2) for f in queued]
            out["after"] = executor.submit(square, 9).result(BOUND * 2)
        finally:
            executor.shutdown(wait=True, kill_workers=True)
        print("RESULT " + json.dumps(out), flush=True)
''')


def _sessions_alive(sids):
    alive = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                if os.getsid(int(name)) in sids:
                    alive.append(int(name))
            except OSError:
                pass
    return alive


def _stop(procs):
    """End the processes started here (each leads its own session: the
    dask nanny's worker and the plait processes are in it too)."""
    sids = {p.pid for p in procs}
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for p in procs:
            try:
                os.killpg(p.pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 10
        while _sessions_alive(sids) and time.monotonic() < deadline:
            time.sleep(0.05)
        if not _sessions_alive(sids):
            break
    for p in procs:
        try:
            p.wait(BOUND)
        except subprocess.TimeoutExpired:
            pass
    return _sessions_alive(sids)


def test_scheduler_and_workers_on_separate_hosts(tmp_path):
    reason = _netns.unavailable()
    if reason:
        pytest.skip("network namespaces cannot be made here: " + reason)
    dask = os.path.join(os.path.dirname(sys.executable), "dask")
    if not os.path.exists(dask):
        pytest.skip("no `dask` command next to %s" % sys.executable)
    hosts = _netns.Hosts(2).create()
    procs = []
    try:
        address = "tcp://%s:%d" % (hosts.scheduler_ip, PORT)
        env = dict(os.environ, DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES="0")

        def start(ns, args, log):
            out = open(tmp_path / log, "w")
            procs.append(subprocess.Popen(
                hosts.exec_args(ns) + args, stdout=out, stderr=subprocess.STDOUT,
                env=env, cwd=tmp_path, start_new_session=True))

        start(hosts.scheduler, [dask, "scheduler", "--host", hosts.scheduler_ip,
                                "--port", str(PORT), "--dashboard-address",
                                hosts.scheduler_ip + ":0"], "scheduler.log")
        for k, (ns, ip) in enumerate(zip(hosts.workers, hosts.worker_ips)):
            start(ns, [dask, "worker", address, "--host", ip, "--nthreads", "1",
                       "--no-dashboard"], "worker%d.log" % (k + 1))

        marks = tmp_path / "marks"
        marks.mkdir()
        script = tmp_path / "client.py"
        script.write_text(CLIENT)
        client = subprocess.run(
            hosts.exec_args(hosts.scheduler) + [sys.executable, str(script), address,
                                                hosts.scheduler_ip, str(marks)],
            capture_output=True, text=True, timeout=CLIENT_BOUND, env=env, cwd=tmp_path)
        lines = [line for line in client.stdout.splitlines() if line.startswith("RESULT ")]
        assert client.returncode == 0 and lines, (client.returncode, client.stdout,
                                                  client.stderr[-3000:])
        out = json.loads(lines[-1][len("RESULT "):])

        # Two dask workers, each on its own "host".
        assert sorted(w.split("//")[1].rsplit(":", 1)[0] for w in out["workers"]) == \
            hosts.worker_ips
        assert set(out["ips"]) <= set(hosts.worker_ips) and out["ips"]
        assert out["square"] == 49
        assert out["boom"] == ["Boom", "boom"]
        assert out["exit"][0] == "WorkerDied" and "code 3" in out["exit"][1]
        assert out["lost"][0] == "WorkerDied" and "was lost" in out["lost"][1]
        assert (marks / "victim").read_text() == "start\n"
        assert out["queued"] == ["q0", "q1", "q2"]
        for i in range(3):
            assert (marks / ("q%d" % i)).read_text() == "start\n"  # exactly once
        assert out["after"] == 81
    finally:
        left = _stop(procs)
        still = hosts.delete()
    assert not left, "processes left: %s" % left
    assert not still, "namespaces left: %s" % still
