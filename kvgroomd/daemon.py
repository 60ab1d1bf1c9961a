"""The daemon: start-up, the event loop, timers and signals. Owns the clock.

Shell. One thread does all the work: the watcher's observer thread only
enqueues events, and signal handlers only set a flag and enqueue a wake-up,
so there is no locking anywhere. The loop sleeps in a blocking queue read
until the next event or timer (reconcile, systemd watchdog), so an idle
daemon uses no CPU.

Start-up order matters: the observer starts *before* the scan, so a snapshot
landing during the scan is either seen by the scan or queued as an event.
"""

from __future__ import annotations

import collections
import queue
import signal
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

from kvgroomd import log as events
from kvgroomd.config import Config, ConfigError, format_size, load_config
from kvgroomd.groom import Groomer, Stopped
from kvgroomd.metrics import for_config as metrics_for
from kvgroomd.notify import Notifier
from kvgroomd.unlink import recover
from kvgroomd.watch import DirGone, EventQueue, Gone, Landed, Lost, Wake, Watcher

DIR_RETRY_S = 1.0  # how often to look for a missing cache dir
OBSERVER_FAILURES = 5  # this many observer deaths ...
OBSERVER_WINDOW_S = 300.0  # ... within this window: give up, exit 1


class Daemon:
    """Runs until SIGTERM/SIGINT; SIGHUP reloads the config file."""

    def __init__(self, config: Config, log: Any, *, config_path: Path | None = None,
                 overrides: dict[str, Any] | None = None,
                 clock: Callable[[], float] = time.time) -> None:  # fmt: skip
        self.config = config
        self.config_path = config_path
        self.overrides = overrides or {}
        self.log = log
        self.clock = clock
        self.queue: EventQueue = queue.SimpleQueue()
        self.notifier = Notifier()
        self.groomer = Groomer(config, log, should_stop=lambda: self._stop)
        self.watcher = Watcher(config.cache_dir, self.queue)
        self.metrics = metrics_for(config, log)  # changes need a restart, not a reload
        self._stop = False
        self._reload = False
        self._deaths: collections.deque[float] = collections.deque()
        self._watching = False
        self._next_reconcile = 0.0
        self._next_ping = 0.0
        self._retry_at: float | None = None  # budget or directory retry

    # -- signals ----------------------------------------------------------------

    def _on_stop(self, signum: int, _frame: FrameType | None) -> None:
        self._stop = True
        self.queue.put(Wake())

    def _on_hup(self, _signum: int, _frame: FrameType | None) -> None:
        self._reload = True
        self.queue.put(Wake())

    def _install_signals(self) -> None:
        signal.signal(signal.SIGTERM, self._on_stop)
        signal.signal(signal.SIGINT, self._on_stop)
        signal.signal(signal.SIGHUP, self._on_hup)

    # -- life cycle ---------------------------------------------------------------

    def run(self) -> int:
        """Run until stopped. Exit status: 0 on a clean stop, 1 on failure."""
        self._install_signals()
        c = self.config
        self.log.info(events.STARTED, cache_dir=str(c.cache_dir), budget=c.budget,
                      policy=c.policy, dry_run=c.dry_run, supersede=c.supersede,
                      watchdog_interval=self.notifier.watchdog_interval)  # fmt: skip
        status = 0
        try:
            if not self.metrics.start():
                status = 1
            elif self._start():
                status = self._loop()
        except Stopped:
            pass
        finally:
            self.notifier.stopping()
            self.watcher.close()
            self.metrics.close()
            self.log.info(events.STOPPED, exit_status=status,
                          unlinked=sum(self.groomer.totals.unlinked.values()),
                          freed=sum(self.groomer.totals.freed.values()))  # fmt: skip
            self.notifier.close()
        return status

    def _start(self) -> bool:
        """Wait for the directory, watch it, scan and groom; then READY=1."""
        missing_logged = False
        while not self._stop:
            if self._try_watch():
                break
            if not missing_logged:
                self.log.warning(events.DIR_MISSING, cache_dir=str(self.config.cache_dir),
                                 retry_s=DIR_RETRY_S)  # fmt: skip
                missing_logged = True
            self.notifier.status(f"waiting for {self.config.cache_dir}")
            self._ping_if_due()
            self._sleep(DIR_RETRY_S)
        if self._stop:
            return False
        recover(self.config.cache_dir, self.log)
        self._reconcile(startup=True)
        self.notifier.ready(self._status())
        g = self.groomer
        self.log.info(events.READY, snapshots=len(g.index), dir_bytes=g.index.total_bytes,
                      invalid=len(g.invalid), budget=self.config.budget)  # fmt: skip
        return True

    def _try_watch(self) -> bool:
        try:
            self.watcher.start()
        except OSError:
            self.watcher.stop()
            return False
        self._watching = True
        return True

    def _sleep(self, seconds: float) -> None:
        """Wait, but wake for signals (events are not expected here)."""
        try:
            ev = self.queue.get(timeout=seconds)
        except queue.Empty:
            return
        if not isinstance(ev, Wake):
            self.queue.put(ev)

    def _loop(self) -> int:
        while not self._stop:
            try:
                ev = self.queue.get(timeout=self._timeout())
            except queue.Empty:
                ev = Wake()
            try:
                self._handle(ev)
                while not self._stop:  # drain what queued up meanwhile
                    try:
                        self._handle(self.queue.get_nowait())
                    except queue.Empty:
                        break
                if self._reload:
                    self._do_reload()
                if not self._check_watcher():
                    return 1
                now = self.clock()
                if now >= self._next_reconcile or (self._retry_at and now >= self._retry_at):
                    self._reconcile()
            except Stopped:
                break
            except OSError as e:  # e.g. the directory became unreadable
                self.log.error(events.DIR_ERROR, cache_dir=str(self.config.cache_dir),
                               error=e.strerror, errno=e.errno)  # fmt: skip
                self._retry_at = self.clock() + DIR_RETRY_S * 5
            self._ping_if_due()
        return 0

    def _timeout(self) -> float:
        deadlines = [self._next_reconcile]
        if self._retry_at:
            deadlines.append(self._retry_at)
        if self.notifier.watchdog_interval:
            deadlines.append(self._next_ping)
        return max(0.0, min(deadlines) - self.clock())

    def _handle(self, ev: object) -> None:
        g = self.groomer
        if isinstance(ev, Landed):
            g.totals.events += 1
            g.landed(ev.name, self.clock(), created=ev.created)
            self.metrics.observe_latency(time.monotonic() - ev.at)
            self._after_change()
        elif isinstance(ev, Gone):
            g.totals.events += 1
            g.gone(ev.name)
            self.metrics.update(g, self.config)
        elif isinstance(ev, Lost):
            self.log.warning(events.EVENTS_LOST, why=ev.why, action="rescan")
            self._reconcile()
        elif isinstance(ev, DirGone):
            self.log.warning(events.DIR_MISSING, cache_dir=str(self.config.cache_dir),
                             why="deleted while watched")  # fmt: skip
            self.watcher.stop()
            self._watching = False

    def _after_change(self) -> None:
        self.notifier.status(self._status())
        self.metrics.update(self.groomer, self.config)

    def _check_watcher(self) -> bool:
        """Restart a dead observer (and rescan); False when it keeps dying."""
        if self._watching and self.watcher.alive():
            return True
        now = self.clock()
        if self._watching:  # it was running and died: count it
            self._deaths.append(now)
            while self._deaths and now - self._deaths[0] > OBSERVER_WINDOW_S:
                self._deaths.popleft()
            self.log.error(events.OBSERVER_DIED, deaths=len(self._deaths),
                           window_s=OBSERVER_WINDOW_S)  # fmt: skip
            if len(self._deaths) >= OBSERVER_FAILURES:
                return False
        self.watcher.stop()
        if not self._try_watch():
            self._watching = False
            self._retry_at = now + DIR_RETRY_S
            return True
        self.log.info(events.OBSERVER_RESTARTED, cache_dir=str(self.config.cache_dir))
        self._reconcile()
        return True

    def _reconcile(self, *, startup: bool = False) -> None:
        now = self.clock()
        self._next_reconcile = now + self.config.reconcile_interval
        self._retry_at = None
        if not self._watching and not startup:
            return  # directory missing: _check_watcher retries
        self.groomer.reconcile(now, startup=startup)
        self._after_change()
        if self.config.budget is not None and self.groomer.index.total_bytes > self.config.budget:
            self._retry_at = now + max(self.config.protect_new / 4, 1.0)

    def _ping_if_due(self) -> None:
        if self.notifier.watchdog_interval and self.clock() >= self._next_ping:
            self.notifier.watchdog()
            self._next_ping = self.clock() + self.notifier.watchdog_interval

    def _do_reload(self) -> None:
        self._reload = False
        self.notifier.reloading()
        try:
            if self.config_path is None:
                raise ConfigError("no config file was given (--config): nothing to reload")
            new = load_config(self.config_path).with_overrides(**self.overrides)
            if new.cache_dir != self.config.cache_dir:
                raise ConfigError(f"{self.config_path}: cache_dir: cannot change on reload "
                                  f"(restart the service to watch {new.cache_dir})")  # fmt: skip
        except ConfigError as e:
            self.log.error(events.RELOAD_FAILED, error=str(e), kept="previous config")
            self.notifier.ready(self._status())
            return
        old = self.config.effective()
        changed = {k: v for k, v in new.effective().items() if old.get(k) != v}
        self.config = new
        self.groomer.config = new
        events.configure(new.log_format, new.log_level)
        self.log.info(events.RELOADED, changed=changed)
        self._reconcile()  # a lower budget evicts now; supersede: true sweeps
        self.notifier.ready(self._status())

    def _status(self) -> str:
        g = self.groomer
        used = format_size(g.index.total_bytes)
        budget = format_size(self.config.budget) if self.config.budget is not None else "no budget"
        n = sum(g.totals.unlinked.values())
        dry = " (dry run)" if self.config.dry_run else ""
        return f"{len(g.index)} snapshots, {used} of {budget}, {n} unlinked{dry}"
