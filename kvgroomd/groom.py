"""The groomer: keeps the index in step with the directory and applies policy.

Shell, but a thin one: it reads files (read.py), updates the index, asks the
pure policies (supersede.py, evict.py) for decisions and hands each one to the
only deleter (unlink.py). Used by the daemon for every event and by
`kvgroomd groom --once` for one pass. It owns no clock: callers pass `now`.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from kvgroomd import log as events
from kvgroomd.cleanup import plan as cleanup_plan
from kvgroomd.config import Config
from kvgroomd.decision import Cause, Decision, Fingerprint
from kvgroomd.evict import Budget, choose
from kvgroomd.index import Change, Index, Snapshot, drift
from kvgroomd.names import SnapshotName, classify
from kvgroomd.read import Invalid, fingerprint, read_snapshot, read_text
from kvgroomd.scan import scan_temps
from kvgroomd.scoring import POLICIES
from kvgroomd.supersede import TRIGGERS, judge, prefix_candidates, sweep_plan
from kvgroomd.unlink import Result, apply


class Stopped(Exception):  # noqa: N818 - a signal, not an error
    """A long pass noticed a stop request and returned early, leaving the
    index consistent (every file it holds was read whole)."""


@dataclass
class Totals:
    """Counters for STATUS=, metrics and the end-of-pass log."""

    unlinked: Counter[str] = field(default_factory=Counter)
    freed: Counter[str] = field(default_factory=Counter)
    invalid: int = 0
    events: int = 0
    repairs: int = 0
    failed: int = 0  # unlinks that hit an OS error (permissions, ...)


class Groomer:
    """Index + policy + deleter for one cache directory."""

    def __init__(self, config: Config, log: Any,
                 should_stop: Callable[[], bool] = lambda: False) -> None:  # fmt: skip
        self.config = config
        self.directory = config.cache_dir
        self.log = log
        self.index = Index()
        self.invalid: dict[str, tuple[tuple[int, int, int] | None, str]] = {}
        # Dry run: files we would have unlinked, by the version judged. They
        # leave the index as if deleted, so a dry run decides what a real run
        # would, and stay out until the engine changes them.
        self.dry_removed: dict[str, Fingerprint] = {}
        self.totals = Totals()
        self.should_stop = should_stop
        self._unreachable: str | None = None  # why usage stays over budget, once logged

    # -- events -------------------------------------------------------------

    def landed(self, name: str, now: float, *, created: bool = False) -> None:
        """A snapshot-named file appeared or was rewritten: index it and groom.
        `created`: only its creation was seen, so it may still be being written."""
        kind = classify(name)
        if not isinstance(kind, SnapshotName):
            return
        snap = self._refresh(kind, in_flight=created)
        if snap is not None and self.config.supersede:
            self._supersede_by(snap, now)
        self.enforce_budget(now)

    def gone(self, name: str) -> None:
        """A snapshot-named file disappeared (the engine evicted or consumed it)."""
        self.invalid.pop(name, None)
        self.dry_removed.pop(name, None)
        if (old := self.index.pop(name)) is not None:
            self.log.info(events.REMOVED, path=str(self.directory / name), sha=old.sha,
                          reason=old.header.reason.label, size=old.size,
                          dir_bytes=self.index.total_bytes)  # fmt: skip

    # -- passes ---------------------------------------------------------------

    def reconcile(self, now: float, *, startup: bool = False) -> None:
        """Rescan the directory, repair drift, then groom everything on disk."""
        scan = self._scan()
        d = drift(self.index, scan)
        for name in d.gone:
            self.gone(name)
        added = changed = 0
        for i, name in enumerate(d.added + d.changed):
            if i % 256 == 0 and self.should_stop():
                raise Stopped
            before = self.index.fingerprint(name)
            self._refresh(SnapshotName(name, name[:40].lower()), quiet=startup)
            # Only what changes the index is drift: an invalid file read again is not.
            if self.index.fingerprint(name) != before:
                added, changed = (added + 1, changed) if before is None else (added, changed + 1)
        for name in [n for n in self.invalid if n not in scan]:
            del self.invalid[name]
        repairs = 0 if startup else added + changed + len(d.gone)
        self.totals.repairs += repairs
        self.clean_leaks(now)
        if self.config.supersede:
            self.sweep(now)
        self.enforce_budget(now)
        self.log.info(events.RECONCILE_DONE, startup=startup, snapshots=len(self.index),
                      dir_bytes=self.index.total_bytes, invalid=len(self.invalid),
                      repaired=repairs, added=added, changed=changed,
                      gone=len(d.gone))  # fmt: skip

    def sweep(self, now: float) -> None:
        """Apply the supersession rule across everything indexed (out-of-order
        arrivals, files that landed while we were not watching)."""
        covered: dict[str, bool] = dict.fromkeys(self.index.names, False)
        plan = sweep_plan(self.index, strict_quant=self.config.reject_different_quant,
                          tick=self._check_stop)  # fmt: skip
        for i, (name, candidate_names) in enumerate(plan):
            if i % 64 == 0 and self.should_stop():
                raise Stopped
            snap = self.index.get(name)
            if snap is None:
                continue  # superseded itself earlier in this pass
            candidates = [c for c in map(self.index.get, candidate_names) if c is not None]
            covered.update(dict.fromkeys(self._supersede_with(snap, candidates, now), True))
        self.index.set_covered(covered)

    def clean_leaks(self, now: float) -> None:
        """Opt-in leak cleanup (config `cleanup.*`): crash-left temp files and
        ABI-0 files. Runs at start-up and on every reconcile; see cleanup.py."""
        c = self.config
        if not (c.orphan_temps or c.stale_format):
            return
        temps = scan_temps(self.directory) if c.orphan_temps else []
        if self.dry_removed:  # dry run: judge each temp file once, like snapshots
            present = {t.name for t in temps}
            for name in [n for n in self.dry_removed if ".kv.tmp." in n and n not in present]:
                del self.dry_removed[name]
            temps = [t for t in temps if self.dry_removed.get(t.name) != t.seen]
        decisions = cleanup_plan(temps, self.index, now, orphans=c.orphan_temps,
                                 orphan_age=c.orphan_temp_age, stale=c.stale_format)  # fmt: skip
        self.execute(decisions)

    def _check_stop(self) -> None:
        if self.should_stop():
            raise Stopped

    def enforce_budget(self, now: float) -> None:
        """Evict by policy when usage is over the budget."""
        if self.config.budget is None or self.index.total_bytes <= self.config.budget:
            self._unreachable = None
            return
        budget = Budget(self.config.budget, self.config.low_watermark, self.config.protect_new)
        decisions = choose(self.index, budget, now, POLICIES[self.config.policy],
                           dict(self.config.policy_params))  # fmt: skip
        failed = self.totals.failed
        self.execute(decisions, budget=self.config.budget)
        if self.index.total_bytes <= self.config.budget or self.config.dry_run:
            self._unreachable = None
            return
        why = ("unlinks failed (see snapshot.unlink_failed)" if self.totals.failed > failed
               else "the rest is protected (young, agent or unknown reason)")  # fmt: skip
        # Once per episode: every event re-runs this pass while, say, a burst
        # of young files holds usage up; one line says so, not one per event.
        if why != self._unreachable:
            self.log.warning(events.BUDGET_UNREACHABLE, dir_bytes=self.index.total_bytes,
                             budget=self.config.budget, why=why)  # fmt: skip
        self._unreachable = why

    def execute(self, decisions: Iterable[Decision], **context: Any) -> int:
        """Hand each decision to the deleter; keep the index in step. Bytes freed."""
        freed = 0
        context.setdefault("budget", self.config.budget)
        for d in decisions:
            # Each unlink is whole (compare-and-delete), so stopping between
            # two is clean; a budget cut can mean thousands of them.
            if self.should_stop():
                raise Stopped
            usage = self.index.total_bytes
            if d.cause is Cause.ORPHAN_TEMP:  # temp files are not in the index or budget
                usage += d.seen.size
            outcome = apply(self.directory, d, dry_run=self.config.dry_run, usage=usage,
                            log=self.log, context=context)  # fmt: skip
            if outcome.result is Result.UNLINKED:
                self.index.pop(d.name)
                self.totals.unlinked[d.cause] += 1
                self.totals.freed[d.cause] += outcome.freed
            elif outcome.result is Result.WOULD_UNLINK:
                self.index.pop(d.name)
                self.dry_removed[d.name] = d.seen
            elif outcome.result is Result.GONE:
                self.index.pop(d.name)
            elif outcome.result is Result.CHANGED and d.name.endswith(".kv"):
                self._refresh(SnapshotName(d.name, d.name[:40].lower()))
            elif outcome.result is Result.FAILED:
                self.totals.failed += 1
            freed += outcome.freed
        return freed

    # -- internals ------------------------------------------------------------

    def _scan(self) -> dict[str, Fingerprint]:
        """Snapshot names in the directory -> lstat fingerprints (regular or not)."""
        found: dict[str, Fingerprint] = {}
        with os.scandir(self.directory) as it:
            for i, entry in enumerate(it):
                if i % 1024 == 0 and self.should_stop():
                    raise Stopped
                if not isinstance(classify(entry.name), SnapshotName):
                    continue
                try:
                    fp = fingerprint(entry.stat(follow_symlinks=False))
                except FileNotFoundError:
                    continue
                if self.dry_removed.get(entry.name) != fp:
                    found[entry.name] = fp
        return found

    def _refresh(self, name: SnapshotName, *, quiet: bool = False,
                 in_flight: bool = False) -> Snapshot | None:  # fmt: skip
        """Re-read one file into the index. Returns it when it is newly indexed
        (added or replaced by another inode), which is what triggers supersession.
        `in_flight`: a file still being written is not reported as invalid."""
        got = read_snapshot(self.directory, name)
        if isinstance(got, Snapshot) and self.dry_removed.get(name.name) == got.seen:
            return None  # dry run: already judged, treat as gone
        if got is None:
            self.gone(name.name)
            return None
        if isinstance(got, Invalid):
            if not (in_flight and got.why in ("short", "truncated")):
                self._report_invalid(got)
            return None
        self.invalid.pop(name.name, None)
        change = self.index.put(got)
        if change is Change.ADDED and not quiet:
            self.log.info(events.ADDED, **self._fields(got))
        elif change is Change.REPLACED:
            self.log.info(events.REPLACED, **self._fields(got))
        elif change is Change.UPDATED:
            self.log.debug(events.UPDATED, **self._fields(got))
        return got if change in (Change.ADDED, Change.REPLACED) else None

    def _report_invalid(self, bad: Invalid) -> None:
        """Log an unusable file once per version of it; drop it from the index."""
        self.index.pop(bad.name)  # a snapshot damaged in place is no longer counted
        # Once per version: an in-place touch of a bad file is not news.
        version = (bad.seen.dev, bad.seen.ino, bad.seen.size) if bad.seen else None
        if self.invalid.get(bad.name) == (version, bad.why):
            return
        self.invalid[bad.name] = (version, bad.why)
        self.totals.invalid += 1
        self.log.warning(events.INVALID, path=str(self.directory / bad.name), why=bad.why,
                         detail=bad.detail,
                         size=bad.seen.size if bad.seen else None)  # fmt: skip

    def _supersede_by(self, new: Snapshot, now: float) -> tuple[str, ...]:
        """Check `new` against its candidates; unlink what it supersedes.
        Returns the names its text covers (strictly extends)."""
        candidates = prefix_candidates(
            self.index, new, strict_quant=self.config.reject_different_quant
        )
        return self._supersede_with(new, candidates, now)

    def _supersede_with(self, new: Snapshot, candidates: list[Snapshot],
                        now: float) -> tuple[str, ...]:  # fmt: skip
        if not candidates:
            return ()
        text = read_text(self.directory, new)
        if text is None:
            return ()  # changed or gone under us; its own event follows
        verdict = judge(new, text, candidates, now=now)
        self.index.set_covered(dict.fromkeys(verdict.covered, True))
        if verdict.superseded and new.header.reason in TRIGGERS:
            self.execute(verdict.superseded)
        return verdict.covered

    def _fields(self, s: Snapshot) -> dict[str, Any]:
        h = s.header
        return {
            "path": str(self.directory / s.name), "sha": s.sha, "reason": h.reason.label,
            "tokens": h.tokens, "hits": h.hits, "size": s.size, "model_id": h.model_id,
            "quant_bits": h.quant_bits, "ctx_size": h.ctx_size, "abi": h.abi,
            "dir_bytes": self.index.total_bytes,
        }  # fmt: skip


def cause_totals(totals: Totals) -> dict[str, Any]:
    """Unlinks and bytes freed by cause, for summaries."""
    return {str(c): {"unlinked": totals.unlinked[c], "freed": totals.freed[c]} for c in Cause}


