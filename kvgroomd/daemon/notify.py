"""systemd's notify protocol (sd_notify(3)) over $NOTIFY_SOCKET, stdlib only.

Shell. Silent when not run by systemd. An abstract socket name is given with a
leading '@', which stands for the NUL byte the kernel expects.

Sends are bounded by a timeout: an AF_UNIX datagram send blocks while the
receiver's queue is full (net.unix.max_dgram_qlen, often 10), and a stuck
manager must not turn SIGTERM into a hang. A send that times out is dropped.
"""

from __future__ import annotations

import os
import socket
import time

SEND_TIMEOUT_S = 0.5  # longest a notification may hold up the work loop


class Notifier:
    """Sends READY=1, STATUS=..., WATCHDOG=1, RELOADING=1, STOPPING=1."""

    def __init__(self, env: dict[str, str] | None = None) -> None:
        env = dict(os.environ) if env is None else env
        addr = env.get("NOTIFY_SOCKET", "")
        self.address: str | bytes | None = None
        if addr.startswith("@"):
            self.address = b"\0" + addr[1:].encode()
        elif addr.startswith("/"):
            self.address = addr
        self.watchdog_interval: float | None = None
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        if usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid())):
            self.watchdog_interval = int(usec) / 2e6  # ping at half the timeout
        self._sock: socket.socket | None = None

    @property
    def enabled(self) -> bool:
        """True when systemd (or a test) listens."""
        return self.address is not None

    def send(self, *fields: str) -> bool:
        """Send one datagram of newline-separated KEY=VALUE fields."""
        if self.address is None:
            return False
        if self._sock is None:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.settimeout(SEND_TIMEOUT_S)
        try:
            self._sock.sendto("\n".join(fields).encode(), self.address)
        except OSError:  # incl. TimeoutError
            return False  # systemd gone (stopping) or stuck: nothing useful to do
        return True

    def ready(self, status: str) -> None:
        """Start-up (or a reload) is complete."""
        self.send("READY=1", f"STATUS={status}")

    def status(self, status: str) -> None:
        """Update the one-line status `systemctl status` shows."""
        self.send(f"STATUS={status}")

    def watchdog(self) -> None:
        """Tell the service manager the work loop is alive."""
        self.send("WATCHDOG=1")

    def extend_timeout(self, seconds: float) -> None:
        """Ask for `seconds` more before the start-up (or stop) timeout fires:
        a long start-up scan that makes progress is not a failed start."""
        self.send(f"EXTEND_TIMEOUT_USEC={int(seconds * 1e6)}")

    def reloading(self) -> None:
        """Start of a reload (systemd 253+ wants MONOTONIC_USEC with it)."""
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self.send("RELOADING=1", f"MONOTONIC_USEC={usec}")

    def stopping(self) -> None:
        """Shutdown has begun."""
        self.send("STOPPING=1")

    def close(self) -> None:
        """Release the socket."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None
