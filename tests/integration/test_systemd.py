"""kvgroomd as systemd runs it: the notify protocol, signals, observer restarts.

Every test starts the real daemon (`python -m kvgroomd run --config FILE`) with
NOTIFY_SOCKET pointing at a datagram socket the test has bound, as systemd
would, and reads its JSON log from stdout. Waits are on datagrams and log
events, each with a timeout; nothing is asserted by sleeping.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from kvgroomd.format.header import PREFIX_BYTES, Header, Reason

WATCHDOG_USEC = 200_000  # the daemon pings every 0.1 s
OLD = int(time.time()) - 3600  # created long ago: not protected from eviction
TIMEOUT = 15.0  # generous: a slow CI box must not fail a correct daemon

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="inotify and AF_UNIX: Linux only")


# -- the engine's side: snapshot files ------------------------------------------


def write_snapshot(directory: Path, text: bytes, *, reason: Reason = Reason.COLD,
                   payload: int = 4096) -> Path:  # fmt: skip
    """Store a valid snapshot as the engine does: write a temp file, rename it."""
    header = Header(quant_bits=2, reason=reason, ext_flags=0, model_id=0,
                    tokens=max(1, len(text) // 4), hits=0, ctx_size=65536, abi=2,
                    created_at=OLD, last_used=OLD, payload_bytes=payload,
                    text_bytes=len(text))  # fmt: skip
    sha = hashlib.sha1(text).hexdigest()
    tmp = directory / f"{sha}.kv.tmp.{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(header.pack() + text)
        f.truncate(PREFIX_BYTES + len(text) + payload)  # sparse payload
    final = directory / f"{sha}.kv"
    os.rename(tmp, final)
    return final


def text_of(i: int, length: int = 200) -> bytes:
    """A distinct rendered text (distinct first bytes: no prefix chains)."""
    return (b"%08d " % i + b"x" * length)[:length]


# -- systemd's side: the notify socket ---------------------------------------------


class NotifySocket:
    """A bound AF_UNIX datagram socket that records sd_notify messages in order."""

    def __init__(self, address: str) -> None:
        self.address = address  # as NOTIFY_SOCKET spells it ("@name": abstract)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + address[1:] if address.startswith("@") else address)
        self.sock.settimeout(0.05)
        self.messages: list[dict[str, str]] = []
        self.cursor = 0
        self._cond = threading.Condition()
        self._closed = False
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        while not self._closed:
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            fields = dict(line.split("=", 1) for line in data.decode().splitlines())
            with self._cond:
                self.messages.append(fields)
                self._cond.notify_all()

    def next(self, key: str, timeout: float = TIMEOUT,
             where: Callable[[dict[str, str]], bool] = lambda _: True,
             ) -> dict[str, str]:  # fmt: skip
        """The next message (after the last one returned) carrying `key`."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for i in range(self.cursor, len(self.messages)):
                    m = self.messages[i]
                    if key in m and where(m):
                        self.cursor = i + 1
                        return m
                left = deadline - time.monotonic()
                if left <= 0:
                    seen = [list(m) for m in self.messages[self.cursor:]]
                    raise AssertionError(f"no {key} within {timeout}s; after cursor: {seen}")
                self._cond.wait(left)

    def quiet(self, key: str, seconds: float) -> bool:
        """True when no message with `key` arrives for `seconds` (from now)."""
        with self._cond:
            start = len(self.messages)
            deadline = time.monotonic() + seconds
            while (left := deadline - time.monotonic()) > 0:
                if any(key in m for m in self.messages[start:]):
                    return False
                self._cond.wait(left)
            return not any(key in m for m in self.messages[start:])

    def mark(self) -> None:
        """Make `next` look only at messages that arrive from now on."""
        with self._cond:
            self.cursor = len(self.messages)

    def kinds(self) -> list[str]:
        """Every message's first key, in arrival order (READY, STATUS, ...)."""
        with self._cond:
            return [next(iter(m)) for m in self.messages]

    def close(self) -> None:
        self._closed = True
        self.sock.close()


# -- the daemon process -------------------------------------------------------------


class Daemon:
    """`python -m kvgroomd run` with its JSON log parsed as it arrives."""

    def __init__(self, config: Path, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "kvgroomd", "run", "--config", str(config)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
        )  # fmt: skip
        self.events: list[dict[str, Any]] = []
        self.stderr = b""
        self.cursor = 0
        self.reading = threading.Event()  # cleared: stop reading stdout (the pipe fills)
        self.reading.set()
        self._cond = threading.Condition()
        self._threads = [threading.Thread(target=self._read_stdout, daemon=True),
                         threading.Thread(target=self._read_stderr, daemon=True)]  # fmt: skip
        for t in self._threads:
            t.start()

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        with self.proc.stdout as out:
            while self.reading.wait() and (line := out.readline()):
                event = json.loads(line)
                with self._cond:
                    self.events.append(event)
                    self._cond.notify_all()

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        with self.proc.stderr as err:
            self.stderr = err.read()

    def next(self, name: str, timeout: float = TIMEOUT, **match: Any) -> dict[str, Any]:
        """The next log event called `name` (after the last one returned)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for i in range(self.cursor, len(self.events)):
                    e = self.events[i]
                    if e["event"] == name and all(e.get(k) == v for k, v in match.items()):
                        self.cursor = i + 1
                        return e
                left = deadline - time.monotonic()
                if left <= 0:
                    seen = [e["event"] for e in self.events[self.cursor:]]
                    raise AssertionError(f"no {name} {match} within {timeout}s; saw {seen}")
                self._cond.wait(left)

    def named(self, name: str) -> list[dict[str, Any]]:
        with self._cond:
            return [e for e in self.events if e["event"] == name]

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def wait(self, timeout: float = TIMEOUT) -> int:
        """Exit status, once stdout and stderr are fully read."""
        status = self.proc.wait(timeout)
        for t in self._threads:
            t.join(timeout)
        return status


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A short directory for socket paths (sun_path holds 108 bytes)."""
    d = Path(tempfile.mkdtemp(prefix="kvg-"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def start(tmp_path: Path, short_dir: Path) -> Iterator[Callable[..., tuple[Daemon, NotifySocket]]]:
    """Start a daemon on `tmp_path/cache` with a config and a notify socket."""
    started: list[tuple[Daemon, NotifySocket]] = []

    def _start(config: str = "", *, abstract: bool = False,
               env: dict[str, str] | None = None) -> tuple[Daemon, NotifySocket]:  # fmt: skip
        address = f"@kvgroomd-test-{uuid.uuid4().hex}" if abstract else str(short_dir / "notify")
        notify = NotifySocket(address)
        cfg = tmp_path / "kvgroomd.yaml"
        cfg.write_text(config or f"cache_dir: {tmp_path / 'cache'}\nlog:\n  format: json\n")
        full_env = {**os.environ, "NOTIFY_SOCKET": address,
                    "WATCHDOG_USEC": str(WATCHDOG_USEC), **(env or {})}  # fmt: skip
        full_env.pop("WATCHDOG_PID", None)
        daemon = Daemon(cfg, full_env)
        started.append((daemon, notify))
        return daemon, notify

    (tmp_path / "cache").mkdir()
    yield _start
    for daemon, notify in started:
        daemon.reading.set()
        if daemon.proc.poll() is None:
            daemon.proc.kill()
        daemon.wait()
        notify.close()


def config(tmp_path: Path, **keys: str) -> str:
    """YAML for the cache dir under tmp_path plus the given top-level keys."""
    lines = [f"cache_dir: {tmp_path / 'cache'}", "log:", "  format: json"]
    lines += [f"{k}: {v}" for k, v in keys.items()]
    return "\n".join(lines) + "\n"


def unlinked_in(status: str) -> int:
    """The unlink count in a STATUS line ("... 3 unlinked")."""
    m = re.search(r"(\d+) unlinked", status)
    assert m, status
    return int(m.group(1))


def snapshots_in(status: str) -> int:
    m = re.match(r"(\d+) snapshots", status)
    assert m, status
    return int(m.group(1))


# -- tests --------------------------------------------------------------------------


def test_ready_comes_after_startup_grooming_then_watchdog_status_stopping(
    start: Callable[..., tuple[Daemon, NotifySocket]], tmp_path: Path
) -> None:
    """READY=1 is sent once start-up supersession and eviction are done, then WATCHDOG=1 and a
    current STATUS= follow, and SIGTERM ends with STOPPING=1 and exit 0.
    """
    cache = tmp_path / "cache"
    chain = b"system prompt " * 100
    write_snapshot(cache, chain[:700], reason=Reason.CONTINUED)  # superseded by the next
    write_snapshot(cache, chain[:1400], reason=Reason.CONTINUED)
    for i in range(6):  # 6 x ~100 kB against a 400 kB budget: some are evicted
        write_snapshot(cache, text_of(i), payload=100_000)
    daemon, notify = start(config(tmp_path, budget="400kB"))

    ready = notify.next("READY")
    assert ready["READY"] == "1"
    # The counts in READY's own STATUS prove the unlinks happened before it.
    assert unlinked_in(ready["STATUS"]) >= 3  # 1 superseded + at least 2 evicted
    assert daemon.next("snapshot.unlinked", cause="superseded")
    assert daemon.next("daemon.ready")
    notify.next("WATCHDOG")
    notify.next("WATCHDOG")

    before = snapshots_in(ready["STATUS"])
    write_snapshot(cache, text_of(100))
    notify.next("STATUS", where=lambda m: snapshots_in(m["STATUS"]) == before + 1)

    daemon.signal(signal.SIGTERM)
    notify.next("STOPPING")
    assert daemon.wait() == 0
    assert daemon.next("daemon.stopped")["exit_status"] == 0
    keys = notify.kinds()
    assert keys[-1] == "STOPPING"
    assert "READY" not in keys[keys.index("READY") + 1 :]  # one READY: no reload happened
    assert daemon.stderr == b""


def test_abstract_notify_socket(start: Callable[..., tuple[Daemon, NotifySocket]]) -> None:
    """An abstract NOTIFY_SOCKET name (leading '@') receives READY=1 and STOPPING=1."""
    daemon, notify = start(abstract=True)
    assert notify.address.startswith("@")
    notify.next("READY")
    notify.next("WATCHDOG")
    daemon.signal(signal.SIGTERM)
    notify.next("STOPPING")
    assert daemon.wait() == 0


def test_sighup_with_lower_budget_evicts_at_once(
    start: Callable[..., tuple[Daemon, NotifySocket]], tmp_path: Path
) -> None:
    """SIGHUP with a lower budget sends RELOADING=1 with MONOTONIC_USEC, evicts, then READY=1."""
    cache = tmp_path / "cache"
    for i in range(6):
        write_snapshot(cache, text_of(i), payload=100_000)
    daemon, notify = start(config(tmp_path, budget="10MB"))
    first = notify.next("READY")
    assert unlinked_in(first["STATUS"]) == 0

    (tmp_path / "kvgroomd.yaml").write_text(config(tmp_path, budget="300kB"))
    sent_after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    daemon.signal(signal.SIGHUP)
    reloading = notify.next("RELOADING")
    assert reloading["RELOADING"] == "1"
    assert int(reloading["MONOTONIC_USEC"]) >= sent_after  # same clock, after the signal
    again = notify.next("READY")
    assert unlinked_in(again["STATUS"]) >= 3  # the lower budget took effect before READY
    reloaded = daemon.next("daemon.reloaded")
    assert reloaded["changed"]["budget"] == 300_000
    assert daemon.next("snapshot.unlinked", cause="budget")["budget"] == 300_000

    daemon.signal(signal.SIGTERM)
    assert daemon.wait() == 0
    assert notify.kinds()[-1] == "STOPPING"


def test_sighup_with_invalid_config_keeps_the_old_one(
    start: Callable[..., tuple[Daemon, NotifySocket]], tmp_path: Path
) -> None:
    """An invalid config on SIGHUP is rejected naming the key, the old budget stays in force and
    the daemon keeps running.
    """
    cache = tmp_path / "cache"
    daemon, notify = start(config(tmp_path, budget="300kB"))
    notify.next("READY")

    (tmp_path / "kvgroomd.yaml").write_text(config(tmp_path, budget="lots"))
    daemon.signal(signal.SIGHUP)
    notify.next("RELOADING")
    notify.next("READY")  # the reload is over (and failed)
    failed = daemon.next("daemon.reload_failed")
    assert "budget" in failed["error"]
    assert failed["kept"] == "previous config"
    notify.next("WATCHDOG")

    for i in range(4):  # 4 x ~100 kB: over the old 300 kB budget
        write_snapshot(cache, text_of(i), payload=100_000)
    assert daemon.next("snapshot.unlinked", cause="budget")["budget"] == 300_000
    assert daemon.proc.poll() is None

    daemon.signal(signal.SIGTERM)
    assert daemon.wait() == 0


def test_a_rejected_reload_shows_in_status_and_metrics_until_one_succeeds(
    start: Callable[..., tuple[Daemon, NotifySocket]], tmp_path: Path
) -> None:
    """`systemctl reload` returns 0 even when the config was rejected (systemd 252), so the
    rejection stays visible: in STATUS= and as kvgroomd_config_last_reload_successful 0,
    with the last success's timestamp unchanged, until a valid reload clears both.
    """
    pytest.importorskip("prometheus_client")
    metrics = "metrics:\n  listen: 127.0.0.1:0\n"
    daemon, notify = start(config(tmp_path, budget="300kB") + metrics)
    assert "reload failed" not in notify.next("READY")["STATUS"]
    port = int(daemon.next("metrics.listening")["port"])

    def scrape() -> dict[str, float]:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            text = r.read().decode()
        return {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples}

    started = scrape()
    assert started["kvgroomd_config_last_reload_successful"] == 1
    assert time.time() - 60 < started["kvgroomd_config_last_reload_success_timestamp_seconds"]

    (tmp_path / "kvgroomd.yaml").write_text(config(tmp_path, budget="lots") + metrics)
    daemon.signal(signal.SIGHUP)
    notify.next("RELOADING")
    status = notify.next("READY")["STATUS"]
    assert "reload failed, previous config kept" in status
    assert "budget" in status  # the key at fault, as daemon.reload_failed names it
    daemon.next("daemon.reload_failed")
    failed = scrape()
    assert failed["kvgroomd_config_last_reload_successful"] == 0
    assert (failed["kvgroomd_config_last_reload_success_timestamp_seconds"]
            == started["kvgroomd_config_last_reload_success_timestamp_seconds"])  # fmt: skip

    time.sleep(0.01)  # a later success has a later timestamp
    (tmp_path / "kvgroomd.yaml").write_text(config(tmp_path, budget="200kB") + metrics)
    daemon.signal(signal.SIGHUP)
    notify.next("RELOADING")
    assert "reload failed" not in notify.next("READY")["STATUS"]
    daemon.next("daemon.reloaded")
    ok = scrape()
    assert ok["kvgroomd_config_last_reload_successful"] == 1
    assert (ok["kvgroomd_config_last_reload_success_timestamp_seconds"]
            > started["kvgroomd_config_last_reload_success_timestamp_seconds"])  # fmt: skip

    daemon.signal(signal.SIGTERM)
    assert daemon.wait() == 0


def test_sigterm_during_a_large_startup_scan_stops_cleanly(
    start: Callable[..., tuple[Daemon, NotifySocket]], tmp_path: Path
) -> None:
    """SIGTERM in the middle of a 10,000-file start-up exits 0 with STOPPING=1, no READY=1, and no
    delete left half-done.
    """
    cache = tmp_path / "cache"
    for i in range(10_000):  # header + text, sparse payload: fast to create
        write_snapshot(cache, text_of(i), payload=1000)
    before = set(os.listdir(cache))
    daemon, notify = start(config(tmp_path, budget="5MB"))  # ~12 MB of snapshots

    # WATCHDOG=1 before READY=1 comes from inside the start-up pass.
    notify.next("WATCHDOG")
    notify.next("WATCHDOG")
    daemon.signal(signal.SIGTERM)
    assert daemon.wait() == 0, daemon.stderr.decode()
    notify.next("STOPPING")
    assert "READY" not in notify.kinds(), "the start-up pass ended before the signal"

    after = set(os.listdir(cache))
    assert not [n for n in after if n.startswith(".kvgroomd-unlinking.")]
    logged = {Path(e["path"]).name for e in daemon.named("snapshot.unlinked")}
    assert before - after == logged  # every missing file was logged as unlinked
    assert daemon.events[-1]["event"] == "daemon.stopped", daemon.events[-3:]
    assert daemon.next("daemon.stopping")["signal"] == "SIGTERM"
    assert daemon.stderr == b"", daemon.stderr.decode()


def test_a_killed_observer_is_detected_restarted_and_reconciled(
    start: Callable[..., tuple[Daemon, NotifySocket]], tmp_path: Path
) -> None:
    """An exception in the watchdog handler is logged as observer.died, and the observer is
    restarted and the directory reconciled.
    """
    cache = tmp_path / "cache"
    daemon, notify = start(env={"KVGROOMD_FAULT_OBSERVER": "boom"})
    notify.next("READY")

    (cache / "boom").write_bytes(b"x")  # its close event raises in the handler
    died = daemon.next("observer.died")
    assert "injected observer fault on boom" in died["error"]
    assert died["deaths"] == 1
    assert not died["giving_up"]
    assert daemon.next("observer.restarted")["after"] == "observer died"
    assert daemon.next("reconcile.done")

    landed = write_snapshot(cache, text_of(1))  # the new observer sees it
    assert daemon.next("snapshot.added")["path"] == str(landed)
    notify.next("WATCHDOG")
    daemon.signal(signal.SIGTERM)
    assert daemon.wait() == 0


def test_an_observer_that_keeps_dying_makes_the_daemon_exit_1(
    start: Callable[..., tuple[Daemon, NotifySocket]], tmp_path: Path
) -> None:
    """Five observer deaths within the window make the daemon exit with status 1,
    so that Restart=on-failure acts.
    """
    cache = tmp_path / "cache"
    daemon, notify = start(env={"KVGROOMD_FAULT_OBSERVER": "boom"})
    notify.next("READY")
    for n in range(1, 6):
        (cache / "boom").write_bytes(b"%d" % n)
        died = daemon.next("observer.died")
        assert died["deaths"] == n
        if n < 5:
            daemon.next("observer.restarted")
    assert died["giving_up"]
    assert daemon.wait() == 1
    notify.next("STOPPING")
    assert daemon.next("daemon.stopped")["exit_status"] == 1


def test_a_stuck_work_loop_stops_the_watchdog_pings(
    start: Callable[..., tuple[Daemon, NotifySocket]], tmp_path: Path
) -> None:
    """While the work loop is blocked (its log pipe is full) no WATCHDOG=1 is sent, and pings
    resume once it unblocks.
    """
    cache = tmp_path / "cache"
    daemon, notify = start()
    notify.next("READY")
    notify.next("WATCHDOG")

    daemon.reading.clear()  # like a stuck journald: stdout fills, logging blocks
    for i in range(1000):  # ~400 bytes of log each: far more than a pipe holds
        last = write_snapshot(cache, text_of(i))
    deadline = time.monotonic() + TIMEOUT
    while not notify.quiet("WATCHDOG", 2.0):  # 20 ping intervals without a ping
        assert time.monotonic() < deadline, "pings never stopped while the loop was stuck"
    assert daemon.proc.poll() is None

    notify.mark()
    daemon.reading.set()
    notify.next("WATCHDOG")
    daemon.next("snapshot.added", path=str(last))
    daemon.signal(signal.SIGTERM)
    assert daemon.wait() == 0
    assert len(daemon.named("snapshot.added")) == 1000


def test_a_missing_cache_dir_is_waited_for_then_watched(
    start: Callable[..., tuple[Daemon, NotifySocket]], tmp_path: Path
) -> None:
    """A cache dir that does not exist yet gives READY=1 with a waiting STATUS=, and it is groomed
    once it appears.
    """
    later = tmp_path / "later"
    daemon, notify = start(f"cache_dir: {later}\nlog:\n  format: json\n")
    ready = notify.next("READY")
    assert "waiting for" in ready["STATUS"]
    daemon.next("daemon.cache_dir_missing")
    notify.next("WATCHDOG")  # waiting is a healthy state

    later.mkdir()
    chain = b"system prompt " * 100
    write_snapshot(later, chain[:700], reason=Reason.CONTINUED)
    write_snapshot(later, chain[:1400], reason=Reason.CONTINUED)
    assert daemon.next("observer.restarted")["after"] == "cache dir appeared"
    assert daemon.next("snapshot.unlinked", cause="superseded")
    notify.next("STATUS", where=lambda m: m["STATUS"].startswith("1 snapshots"))
    daemon.signal(signal.SIGTERM)
    assert daemon.wait() == 0
