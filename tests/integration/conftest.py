"""Integration fixtures: the real daemon as a subprocess, its JSON log parsed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

Record = dict[str, Any]


class DaemonProcess:
    """`python -m kvgroomd run` on a directory, with its log lines collected."""

    def __init__(self, config_path: Path, env: dict[str, str] | None = None) -> None:
        self.config_path = config_path
        self.records: list[Record] = []
        self.stderr = ""
        self._cond = threading.Condition()
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "kvgroomd", "run", "--config", str(config_path)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=full_env, text=True,
        )  # fmt: skip
        self._readers = [
            threading.Thread(target=self._read_stdout, daemon=True),
            threading.Thread(target=self._read_stderr, daemon=True),
        ]
        for t in self._readers:
            t.start()

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                rec = {"event": "<not json>", "line": line}
            with self._cond:
                self.records.append(rec)
                self._cond.notify_all()

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        self.stderr = self.proc.stderr.read()

    def events(self, event: str | None = None, **match: Any) -> list[Record]:
        """Log records so far, filtered by event name and exact key values."""
        with self._cond:
            recs = list(self.records)
        return [
            r for r in recs
            if (event is None or r.get("event") == event)
            and all(r.get(k) == v for k, v in match.items())
        ]  # fmt: skip

    def wait_for(self, event: str, timeout: float = 10.0, count: int = 1,
                 **match: Any) -> list[Record]:  # fmt: skip
        """Block until `count` records match; fail the test on timeout or exit."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = [
                    r for r in self.records
                    if r.get("event") == event and all(r.get(k) == v for k, v in match.items())
                ]  # fmt: skip
                if len(found) >= count:
                    return found
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not self._readers[0].is_alive()):
                    tail = [r.get("event") for r in self.records[-15:]]
                    pytest.fail(f"timed out waiting for {count}x {event} {match}; "
                                f"exit={self.proc.poll()} last events={tail} stderr={self.stderr[-2000:]}")  # fmt: skip
                self._cond.wait(min(left, 0.2))

    def signal(self, sig: int) -> None:
        """Send a real signal to the daemon."""
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM and wait; returns the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        for t in self._readers:
            t.join(5)
        for pipe in (self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()
        return code


def write_config(path: Path, **values: Any) -> Path:
    """Write a YAML config (JSON log, fast reconcile unless given)."""
    values.setdefault("log", {"format": "json", "level": "debug"})
    values["cache_dir"] = str(values["cache_dir"])
    path.write_text(yaml.safe_dump(values))
    return path


@pytest.fixture
def start_daemon(tmp_path: Path) -> Iterator[Callable[..., DaemonProcess]]:
    """Factory: start a daemon with config keys; every one is stopped at teardown."""
    started: list[DaemonProcess] = []

    def start(env: dict[str, str] | None = None, wait_ready: bool = True,
              **config: Any) -> DaemonProcess:  # fmt: skip
        cfg = write_config(tmp_path / f"kvgroomd-{len(started)}.yaml", **config)
        d = DaemonProcess(cfg, env)
        started.append(d)
        if wait_ready:
            d.wait_for("daemon.ready", timeout=30)
        return d

    yield start
    for d in started:
        d.stop()


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    """An empty cache directory."""
    d = tmp_path / "kv"
    d.mkdir()
    return d
