"""The daemon: start-up, the event loop, timers and signals. Owns the clock.

Shell. One thread does all the work: the watcher's observer thread only
enqueues events, and the signal thread (_threads.py) only sets a flag and
enqueues a wake-up, so there is no locking anywhere. The loop sleeps in a blocking queue read
until the next event or timer (reconcile, systemd watchdog, a retry), so an
idle daemon uses no CPU; the observer's thread reports its own end as an
event, so nothing polls it.

Start-up order matters: the observer starts *before* the scan, so a snapshot
landing during the scan is either seen by the scan or queued as an event.
READY=1 follows the start-up scan, supersession and eviction; a cache dir that
does not exist yet is not a failed start: READY=1 says "waiting" and the loop
watches and grooms it once it appears. The directory's own states (pinned
and watched, missing, down) and their retries are keeper.py's.

systemd's watchdog is fed from this same thread (between events, and between
files during long passes), and only while the observer is healthy: a hung
loop or an observer that cannot be restarted stops the pings, and systemd
restarts the service.
"""

from __future__ import annotations

import queue
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kvgroomd import log as events
from kvgroomd.config import Config, ConfigError, format_size, load_config
from kvgroomd.daemon._threads import SignalWaiter
from kvgroomd.daemon._timers import Timers
from kvgroomd.daemon.apply import recover
from kvgroomd.daemon.groom import DiskGroomer, Stopped
from kvgroomd.daemon.keeper import Check, Keeper
from kvgroomd.daemon.metrics import for_config as metrics_for
from kvgroomd.daemon.metrics import other_layouts
from kvgroomd.daemon.notify import Notifier
from kvgroomd.daemon.pinned import PinnedDir, Unpinned
from kvgroomd.daemon.trace import open_trace
from kvgroomd.daemon.watch import DirGone, EventQueue, Gone, Landed, Lost, Wake

START_EXTEND_S = 30.0  # a start-up scan still making progress asks for this much more time
RETRY_S = 5.0  # a rescan after a directory error


class Daemon:
    """Runs until SIGTERM/SIGINT; SIGHUP reloads the config file."""

    def __init__(self, config: Config, log: Any, *, config_path: Path | None = None,
                 overrides: dict[str, Any] | None = None,
                 clock: Callable[[], float] = time.time,
                 mono: Callable[[], float] = time.monotonic) -> None:  # fmt: skip
        self.config = config
        self.config_path = config_path
        self.overrides = overrides or {}
        self.log = log
        # Two clocks: `clock` (wall time) is only ever the policy's `now`;
        # every timer runs on `mono`, so a wall clock stepped back an hour
        # cannot stop the watchdog pings or the rescans.
        self.clock = clock
        self.mono = mono
        self.queue: EventQueue = queue.SimpleQueue()
        self.notifier = Notifier()
        # Pinned once the directory exists; every file operation goes through it.
        self.directory = PinnedDir(config.cache_dir)
        self.trace = open_trace(config, log, clock=clock, mono=mono)  # off unless `trace:`
        self.groomer = DiskGroomer(config, log, should_stop=self._tick, directory=self.directory,
                                   trace=self.trace)  # fmt: skip
        self.metrics = metrics_for(config, log)  # changes need a restart, not a reload
        self._stop = False
        self._stop_signal: int | None = None
        self._reload = False
        self._ready_logged = False
        self._scanned = False  # the first full scan (quiet, recovers held files) is done
        self._starting = False
        # reconcile: the next rescan; ping: WATCHDOG=1; watch: the next try to
        # pin and watch; retry: a rescan after a directory error; budget: over
        # the limit, look again; extend: EXTEND_TIMEOUT_USEC during start-up.
        # (No timer polls the observer: its thread reports its own end.)
        self.timers = Timers(mono)
        # The directory pinned and watched, waited for, or down (keeper.py).
        self.keeper = Keeper(self.directory, self.queue, log, self.timers, mono)
        self.timers.start("reconcile")
        if self.notifier.watchdog_interval:
            self.timers.start("ping")
        self._last_status: str | None = None
        self._changed = False  # metrics need a refresh
        # Why the last reload was rejected; kept in STATUS= until one succeeds,
        # because `systemctl reload` itself returns 0 either way (systemd 252).
        self._reload_error: str | None = None

    # -- signals ----------------------------------------------------------------

    def _on_signal(self, signum: int) -> None:
        """In the signal thread (daemon/_threads.py): flag it and wake the loop."""
        if signum == signal.SIGHUP:
            self._reload = True
        else:
            self._stop = True
            self._stop_signal = signum
        self.queue.put(Wake())

    # -- life cycle ---------------------------------------------------------------

    def run(self) -> int:
        """Run until stopped. Exit status: 0 on a clean stop, 1 on failure, 6 when
        another kvgroomd already grooms the directory."""
        signals = SignalWaiter(self._on_signal)
        c = self.config
        self.log.info(events.STARTED, cache_dir=str(c.cache_dir), budget=c.budget,
                      policy=c.policy, dry_run=c.dry_run, supersede=c.supersede,
                      watchdog_interval=self.notifier.watchdog_interval)  # fmt: skip
        status = 0
        try:
            started = self.metrics.start() and self._start()  # False: a fatal failure
            # 1, or 6 when another kvgroomd holds the directory (keeper.py)
            status = self.keeper.status if not started or self._loop() else 0
        except Stopped:
            pass  # a pass stopped between two files: nothing is half-done
        except Exception:
            # A bug: say so in the JSON log and exit 1 so Restart=on-failure acts.
            self.log.exception(events.FAILED)
            status = 1
        finally:
            if self._stop_signal is not None:
                self.log.info(events.STOPPING, signal=signal.Signals(self._stop_signal).name)
            self.notifier.stopping()
            self.keeper.close()
            self.metrics.close()
            if self.trace is not None:
                self.trace.close()
            self.log.info(events.STOPPED, exit_status=status,
                          unlinked=sum(self.groomer.totals.unlinked.values()),
                          freed=sum(self.groomer.totals.freed.values()))  # fmt: skip
            self.notifier.close()
            signals.close()
        return status

    def _start(self) -> bool:
        """Watch, scan and groom; then READY=1. False on a fatal failure."""
        self._starting = True
        self.timers.start("extend", START_EXTEND_S / 3)
        if not self.keeper.begin():
            return False
        if self.keeper.watching:
            self.notifier.status(f"start-up scan of {self.config.cache_dir}")
            try:
                self._reconcile()
            except Unpinned as e:  # moved or swapped during the start-up scan
                self.keeper.unpinned(e.why)
            except OSError as e:  # e.g. unreadable: the loop retries the first scan
                self._dir_error(e)
        self._starting = False
        self.timers.cancel("extend")
        self._refresh_metrics()
        self.notifier.ready(self._status())
        self._last_status = self._status()
        if not self.keeper.missing:
            self._log_ready()
        return True

    def _log_ready(self) -> None:
        """daemon.ready: the first scan and grooming are done and we watch. With
        a missing directory systemd hears READY=1 ("waiting") at once, so the
        start does not time out, but this line waits for the directory."""
        g = self.groomer
        self._ready_logged = True
        self.log.info(events.READY, snapshots=len(g.index), dir_bytes=g.core.usage,
                      invalid=len(g.invalid), budget=g.core.limit())  # fmt: skip

    def _loop(self) -> int:
        while not self._stop:
            try:
                ev = self.queue.get(timeout=self.timers.wait())
            except queue.Empty:
                ev = Wake()
            try:
                self._handle(ev)
                while not self._stop:  # drain what queued up meanwhile
                    self._ping_if_due()  # a long burst is work, not a hang
                    try:
                        self._handle(self.queue.get_nowait())
                    except queue.Empty:
                        break
                if self._reload:
                    self._do_reload()
                if not self._check_watcher():
                    return 1
                if self.timers.due("reconcile") or self.timers.due("retry"):
                    self._reconcile()
                elif self.timers.due("budget"):
                    self.groomer.tick(self.clock())
                    self._budget_check()
                self._publish_status()
                self._flush_trace()
            except Stopped:
                break
            except Unpinned as e:  # the deleter found the directory moved or swapped
                self.keeper.unpinned(e.why)
            except OSError as e:  # e.g. the directory became unreadable
                self._dir_error(e)
            self._ping_if_due()
        return 0

    def _flush_trace(self) -> None:
        """Write the trace's buffer when due, and wake up when the rest is."""
        if self.trace is None:
            return
        self.trace.flush_if_due()
        at = self.trace.flush_at()
        if at is None:
            self.timers.cancel("trace")
        else:
            self.timers.start("trace", max(0.0, at - self.mono()))

    def _dir_error(self, e: OSError) -> None:
        self.log.error(events.DIR_ERROR, cache_dir=str(self.config.cache_dir),
                       error=e.strerror, errno=e.errno)  # fmt: skip
        self.timers.start("retry", RETRY_S)

    def _handle(self, ev: object) -> None:
        g = self.groomer
        if isinstance(ev, Landed):
            g.totals.events += 1
            g.landed(ev.name, self.clock(), created=ev.created)
            self.metrics.observe_latency(time.monotonic() - ev.at)
            self._changed = True
        elif isinstance(ev, Gone):
            g.totals.events += 1
            g.gone(ev.name)
            self._changed = True
        elif isinstance(ev, Lost):
            self.log.warning(events.EVENTS_LOST, why=ev.why, action="rescan")
            self._reconcile()
        elif isinstance(ev, DirGone):
            self.keeper.dir_event(ev.why)
        # ObserverDied: nothing to do here; _check_watcher sees it right after.

    def _publish_status(self) -> None:
        """Send STATUS= when it changed, and refresh the metrics after any
        change: once per wake-up, not per event (a burst is one update)."""
        self._refresh_metrics()
        status = self._status()
        if status != self._last_status:
            self.notifier.status(status)
            self._last_status = status

    def _check_watcher(self) -> bool:
        """Restart a dead observer, or watch a directory that appeared, then
        rescan what happened meanwhile; False when it keeps failing."""
        found = self.keeper.check()
        if found is Check.RESTARTED:
            self._reconcile()
            if not self._ready_logged:
                self._log_ready()
        return found is not Check.FATAL

    def _reconcile(self) -> None:
        self.timers.start("reconcile", self.config.reconcile_interval)
        self.timers.cancel("retry")
        if not self.keeper.watching:
            return  # directory missing or observer down: _check_watcher retries
        self.directory.check()  # a rescan of a directory that moved away is no use: Unpinned
        first = not self._scanned  # quiet (no snapshot.added per file), and
        if first:  # the one time to put back what a crash left mid-delete
            recover(self.directory, self.log)
        self.groomer.reconcile(self.clock(), startup=first)
        self._scanned = True
        self._changed = True
        self._budget_check()

    def _budget_check(self) -> None:
        """Still over the limit while young files count for more (protect_new):
        look again in a quarter of protect_new rather than at the next rescan.
        Without protect_new time changes nothing, so nothing is polled."""
        limit = self.groomer.core.limit()
        young = self.config.protect_new > 0
        if young and limit is not None and self.groomer.core.usage > limit:
            self.timers.start("budget", max(self.config.protect_new / 4, 1.0))
        else:
            self.timers.cancel("budget")

    def _tick(self) -> bool:
        """Between files of a long pass: feed the watchdog from this very
        thread (a stuck pass stops the pings), keep a long but progressing
        start-up alive, and say whether to stop."""
        self._ping_if_due()
        if self._starting and self.notifier.enabled and self.timers.due("extend"):
            self.notifier.extend_timeout(START_EXTEND_S)
            self.timers.start("extend", START_EXTEND_S / 3)
        return self._stop

    def _ping_if_due(self) -> None:
        if not self.notifier.watchdog_interval or not self.timers.due("ping"):
            return
        if not self.keeper.healthy():
            return  # let systemd's watchdog fire if this does not heal
        self.notifier.watchdog()
        self.timers.start("ping", self.notifier.watchdog_interval)

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
            self._reload_error = str(e)
            self.metrics.config_loaded(False, self.clock())
            self._ready_again()
            return
        self._reload_error = None
        self.metrics.config_loaded(True, self.clock())
        old = self.config.effective()
        changed = {k: v for k, v in new.effective().items() if old.get(k) != v}
        if new.trace != self.config.trace:  # on, off or elsewhere: a new recorder
            if self.trace is not None:
                self.trace.close()
            self.trace = self.groomer.trace = open_trace(new, self.log, clock=self.clock,
                                                         mono=self.mono)  # fmt: skip
            if self.trace is not None:
                self.trace.attach(self.groomer.core, self.groomer.texts)
        self.config = new
        self.groomer.reconfigure(new)
        events.configure(new.log_format, new.log_level)
        self.log.info(events.RELOADED, changed=changed)
        self._reconcile()  # a lower budget evicts now; supersede: true sweeps
        self._ready_again()

    def _refresh_metrics(self) -> None:
        if self._changed:
            self._changed = False
            self.metrics.update(self.groomer, self.config)

    def _ready_again(self) -> None:
        """End of a reload, successful or not (systemd 252: READY=1 again)."""
        self._refresh_metrics()
        self._last_status = self._status()
        self.notifier.ready(self._last_status)

    def _status(self) -> str:
        failed = f"; reload failed, previous config kept: {self._reload_error}"
        return self._usage() + (failed if self._reload_error else "")

    def _usage(self) -> str:
        if self.keeper.missing:
            return f"waiting for {self.config.cache_dir} to appear"
        g = self.groomer
        used = format_size(g.core.usage)
        limit = g.core.limit()
        budget = format_size(limit) if limit is not None else "no budget"
        n = sum(g.totals.unlinked.values())
        dry = " (dry run)" if self.config.dry_run else ""
        others, other_bytes = other_layouts(g.invalid)
        apart = f"; {others} of other layouts ({format_size(other_bytes)})" if others else ""
        return f"{len(g.index)} snapshots, {used} of {budget}, {n} unlinked{dry}{apart}"
