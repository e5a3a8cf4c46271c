"""Network namespaces for the multi-host test: one namespace per "host",
joined by veth pairs on a bridge in the scheduler's namespace. Every name is unique to this process and both ends of
every veth live in namespaces made here, so the host's own network is never
touched; ``delete`` removes the namespaces (and with them their links)."""

import os
import shutil
import subprocess

SUBNET = "10.77.0"
IP_BOUND = 20


def _ip(*args, check=True):
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=IP_BOUND,
                          check=check)


def unavailable():
    """Why namespaces cannot be made here (None: they can)."""
    if shutil.which("ip") is None:
        return "no `ip` command (iproute2)"
    if os.geteuid() != 0:
        return "not root: `ip netns add` needs CAP_SYS_ADMIN"
    probe = "plait-probe-%d" % os.getpid()
    made = _ip("netns", "add", probe, check=False)
    if made.returncode != 0:
        return "`ip netns add` failed: %s" % made.stderr.strip()
    _ip("netns", "del", probe, check=False)
    return None


class Hosts:
    """A scheduler namespace (``self.scheduler``, address SUBNET.1 on a
    bridge) and ``n`` worker namespaces (``self.workers``, SUBNET.2...)."""

    def __init__(self, n_workers):
        tag = "plait-%d" % os.getpid()
        self.scheduler = tag + "-s"
        self.workers = ["%s-w%d" % (tag, k + 1) for k in range(n_workers)]
        self.made = []
        self.scheduler_ip = SUBNET + ".1"
        self.worker_ips = ["%s.%d" % (SUBNET, k + 2) for k in range(n_workers)]

    def create(self):
        try:
            for ns in [self.scheduler] + self.workers:
                _ip("netns", "add", ns)
                self.made.append(ns)
            s = self.scheduler
            _ip("-n", s, "link", "add", "br0", "type", "bridge")
            _ip("-n", s, "addr", "add", self.scheduler_ip + "/24", "dev", "br0")
            _ip("-n", s, "link", "set", "br0", "up")
            _ip("-n", s, "link", "set", "lo", "up")
            for k, (ns, addr) in enumerate(zip(self.workers, self.worker_ips)):
                near, far = "vs%d" % (k + 1), "vw%d" % (k + 1)
                _ip("-n", s, "link", "add", near, "type", "veth", "peer", "name", far,
                    "netns", ns)
                _ip("-n", s, "link", "set", near, "master", "br0")
                _ip("-n", s, "link", "set", near, "up")
                _ip("-n", ns, "addr", "add", addr + "/24", "dev", far)
                _ip("-n", ns, "link", "set", far, "up")
                _ip("-n", ns, "link", "set", "lo", "up")
        except BaseException:
            self.delete()
            raise
        return self

    def exec_args(self, ns):
        return ["ip", "netns", "exec", ns]

    def delete(self):
        """Delete every namespace made here (their veths and the bridge go
        with them); the names of those still present afterwards."""
        for ns in reversed(self.made):
            _ip("netns", "del", ns, check=False)
        self.made = []
        return self.present()

    def present(self):
        listed = _ip("netns", "list", check=False).stdout.split()
        return [ns for ns in [self.scheduler] + self.workers if ns in listed]
