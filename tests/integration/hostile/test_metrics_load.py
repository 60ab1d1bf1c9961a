"""The metrics endpoint under a crowd (#11.7): 4,000 connections that never
finish a request cost a bounded number of threads and memory, a scrape
still gets through, and SIGTERM stops the daemon within 2 s."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

pytest.importorskip("prometheus_client")
CROWD = 4000


def _threads(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def test_4000_half_open_connections_then_sigterm(cache_dir, start_daemon):
    """4,000 silent or half-sent connections: at most a few threads and MiB more,
    the endpoint still answers a scrape, SIGTERM exits 0 within 2 s."""
    d = start_daemon(cache_dir=cache_dir, metrics={"listen": "127.0.0.1:0"})
    port = int(d.wait_for("metrics.listening")[0]["port"])
    pid = d.proc.pid
    threads, rss = _threads(pid), _rss(pid)
    crowd = []
    try:
        for i in range(CROWD):
            s = socket.socket()
            s.setblocking(False)
            assert s.connect_ex(("127.0.0.1", port)) in (0, errno.EINPROGRESS)
            crowd.append(s)
            if i % 2:
                with contextlib.suppress(OSError):  # half a request, never finished
                    s.send(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
        time.sleep(0.5)
        assert _threads(pid) <= threads + 1, _threads(pid)  # was one thread per connection
        assert _rss(pid) - rss < 16 * 2**20
        started = time.monotonic()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            assert b"kvgroomd_snapshots" in r.read()
        assert time.monotonic() - started < 2
        started = time.monotonic()
        assert d.stop(timeout=10) == 0
        took = time.monotonic() - started
        assert took < 2, took
    finally:
        for s in crowd:
            s.close()


def test_idle_connections_are_closed_after_the_timeout(cache_dir, start_daemon):
    """A connection that sends nothing is closed by the server within ~5 s."""
    d = start_daemon(cache_dir=cache_dir, metrics={"listen": "127.0.0.1:0"})
    port = int(d.wait_for("metrics.listening")[0]["port"])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        started = time.monotonic()
        assert s.recv(1) == b""  # closed by the server, not by us
        assert 4 <= time.monotonic() - started < 8


def test_only_get_metrics_is_answered(cache_dir, start_daemon):
    """Other paths are 404, other methods 405; an oversized request is refused."""
    d = start_daemon(cache_dir=cache_dir, metrics={"listen": "127.0.0.1:0"})
    port = int(d.wait_for("metrics.listening")[0]["port"])

    def ask(request: bytes) -> bytes:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(request)
            out = b""
            while chunk := s.recv(65536):
                out += chunk
        return out.split(b"\r\n", 1)[0]

    assert ask(b"GET /metrics HTTP/1.1\r\n\r\n") == b"HTTP/1.1 200 OK"
    assert ask(b"GET /etc/passwd HTTP/1.1\r\n\r\n") == b"HTTP/1.1 404 Not Found"
    assert ask(b"POST /metrics HTTP/1.1\r\n\r\n") == b"HTTP/1.1 405 Method Not Allowed"
    assert ask(b"GET /metrics HTTP/1.1\r\nX: " + b"a" * 10_000) .startswith(b"HTTP/1.1 431")


ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
def test_the_http_metrics_drop_in_verifies_with_the_unit(tmp_path):
    """systemd/metrics-http.conf, installed as a drop-in of the shipped unit,
    verifies cleanly and turns PrivateNetwork off with loopback-only access."""
    stub = tmp_path / "kvgroomd"
    stub.write_text("#!/bin/sh\nexit 0\n")
    stub.chmod(0o755)
    unit = (ROOT / "systemd" / "kvgroomd.service").read_text()
    (tmp_path / "kvgroomd.service").write_text(unit.replace("/usr/local/bin/kvgroomd", str(stub)))
    (tmp_path / "kvgroomd.service.d").mkdir()
    shutil.copy(ROOT / "systemd" / "metrics-http.conf", tmp_path / "kvgroomd.service.d")
    r = subprocess.run(["systemd-analyze", "verify", str(tmp_path / "kvgroomd.service")],
                       capture_output=True, text=True, check=False)  # fmt: skip
    assert r.returncode == 0 and r.stderr == "", r.stderr
    dropin = (ROOT / "systemd" / "metrics-http.conf").read_text()
    assert "PrivateNetwork=no" in dropin and "IPAddressAllow=localhost" in dropin
    assert "PrivateNetwork=yes" in unit
