"""The daemon as a process, for tests and benchmarks: `python -m kvgroomd run`
with its JSON log lines collected, and (optionally) systemd's side of the
notify socket, so READY=1 can be timed.

Test support, not part of the daemon: the integration tests' `start_daemon`
fixture and bench/ both use this one class.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import yaml

Record = dict[str, Any]


def write_config(path: Path, **values: Any) -> Path:
    """A YAML config at `path` (JSON log at debug level unless given)."""
    values.setdefault("log", {"format": "json", "level": "debug"})
    values["cache_dir"] = str(values["cache_dir"])
    path.write_text(yaml.safe_dump(values))
    return path


class DaemonProcess:
    """`python -m kvgroomd run --config FILE` and what it says.

    `prefix`: a command to run it under (e.g. setpriv, to drop privileges).
    `notify_dir`: bind a NOTIFY_SOCKET there and read it for the daemon's
    whole life (a daemon whose STATUS= datagrams are not read blocks in
    sendto() once the socket's queue is full); `ready_at` is then when
    READY=1 came (monotonic seconds)."""

    def __init__(self, config_path: Path, env: dict[str, str] | None = None,
                 prefix: tuple[str, ...] = (), notify_dir: Path | None = None) -> None:  # fmt: skip
        self.config_path = config_path
        self.records: list[Record] = []
        self.stderr = ""
        self._cond = threading.Condition()
        self._stopped = False
        self.ready_at: float | None = None
        self._ready = threading.Event()
        self.sock: socket.socket | None = None
        self.sock_path: str | None = None
        extra = dict(env or {})
        if notify_dir is not None:
            self.sock_path = tempfile.mktemp(prefix="notify-", dir=notify_dir)
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self.sock.bind(self.sock_path)
            extra.setdefault("NOTIFY_SOCKET", self.sock_path)
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **extra}
        self.t_spawn = time.monotonic()
        self.wall_spawn = time.time()
        self.proc = subprocess.Popen(
            [*prefix, sys.executable, "-m", "kvgroomd", "run", "--config", str(config_path)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=full_env, text=True,
        )  # fmt: skip
        self.pid = self.proc.pid
        self._readers = [threading.Thread(target=self._read_stdout, daemon=True),
                         threading.Thread(target=self._read_stderr, daemon=True)]  # fmt: skip
        if self.sock is not None:
            self._readers.append(threading.Thread(target=self._read_notify, daemon=True))
        for t in self._readers:
            t.start()

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                rec = {"event": "<not json>", "line": line}
            rec["_seen"] = time.monotonic()  # when it reached us (latency figures)
            with self._cond:
                self.records.append(rec)
                self._cond.notify_all()

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        self.stderr = self.proc.stderr.read()

    def _read_notify(self) -> None:
        assert self.sock is not None
        self.sock.settimeout(0.5)
        while not self._stopped:
            try:
                msg = self.sock.recv(4096).decode()
            except TimeoutError:
                continue
            except OSError:
                return
            if "READY=1" in msg.split("\n") and self.ready_at is None:
                self.ready_at = time.monotonic()
                self._ready.set()

    def wait_ready(self, timeout: float) -> float:
        """Seconds from spawn to READY=1 on the notify socket."""
        if not self._ready.wait(timeout) or self.ready_at is None:
            raise TimeoutError(f"no READY=1 within {timeout} s; exit={self.proc.poll()}")
        return self.ready_at - self.t_spawn

    def events(self, event: str | None = None, **match: Any) -> list[Record]:
        """Log records so far, filtered by event name and exact key values."""
        with self._cond:
            recs = list(self.records)
        return [r for r in recs if (event is None or r.get("event") == event)
                and all(r.get(k) == v for k, v in match.items())]  # fmt: skip

    def wait_for(self, event: str, timeout: float = 10.0, count: int = 1,
                 **match: Any) -> list[Record]:  # fmt: skip
        """Block until `count` records match; TimeoutError (with the last
        events and stderr) on timeout or when the daemon has exited."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = [r for r in self.records if r.get("event") == event
                         and all(r.get(k) == v for k, v in match.items())]  # fmt: skip
                if len(found) >= count:
                    return found
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not self._readers[0].is_alive()):
                    tail = [r.get("event") for r in self.records[-15:]]
                    msg = (f"timed out waiting for {count}x {event} {match}; "
                           f"exit={self.proc.poll()} last events={tail} "
                           f"stderr={self.stderr[-2000:]}")  # fmt: skip
                    raise TimeoutError(msg)
                self._cond.wait(min(left, 0.2))

    def signal(self, sig: int) -> None:
        """Send a real signal to the daemon."""
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM and wait (SIGKILL after `timeout`); the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(15)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self._stopped = True
        for t in self._readers:
            t.join(5)
        for pipe in (self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()
        if self.sock is not None:
            self.sock.close()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.sock_path or "")
        return code
