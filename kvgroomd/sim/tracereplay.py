"""Replay a recorded activity trace under any config: the operator's own traffic.

Pure. A trace (sim/trace.py) records what the cache saw, not the prompts, so
a replay rebuilds what matters and runs it through the simulator's engine
model (sim/engine.py) and the daemon's own decision core (sim/groom.py's
SimGroomer, core/groomer.py):

* Texts: a synthetic family (`family`) with exactly the recorded prefix
  relations: each file's text is its longest known prefix's text plus a
  segment of its own (sim/texts.py), so SHA-1 names, the core's supersession
  proofs and the engine's longest-prefix lookups see the same relations as
  on the operator's machine, and no others.
* Stores: every landing, at its time, with its reason, tokens, size, model,
  quant and context. The engine model evicts by its own score before each
  store, under the engine budget of the config replayed.
* Lookups: the engine looks a prompt up on disk at a session switch,
  right after saving the live session (an `evict` landing). What follows
  until the next save is that request's evidence (`Lookup`): the file it
  hit (a header rewrite with hits + n, or a consume) and the files its
  prefill stored (`cold`, `continued`), every one a prefix of its prompt;
  and the session's own save at the next switch (its prompt and reply).
  Replayed as one lookup, right after the save and before kvgroomd hears of
  the save (as live: the daemon reacts a moment later; unless the recording
  shows kvgroomd was first that time): the engine model loads the longest
  surviving prefix of that evidence (the file hit, if this config kept it;
  a longer one this config kept; a shorter prefix; or nothing), and the
  request's stores that the loaded file covers are not written again. A
  miss where the recording hit stores the file hit again (cold) when the
  engine would store a prompt of that length cold.
* Removals: the engine's consumes are hits (above); its evictions and
  kvgroomd's decisions are not replayed: the engine model and the core make
  their own under the config replayed. An unlink the trace shows losing to
  the engine (a use within LAG_S) loses in the replay too.

What cannot be known: a store the engine skipped (too big for its budget)
or a file removed before the daemon read it leaves no record; a relation to
a file removed more than 1,024 removals before a landing is not checked
(daemon/tracegone.py); a lookup that missed and stored nothing leaves no
evidence. All of these make a larger budget look worse than it is. The time
line is the recording's, though a larger budget serves faster (fewer
prefills), so what the pace decides (protect_new, which race kvgroomd wins)
can come out either way. bench/trace_fidelity.py measures both; README:
"Tune on your own traffic" has the figures.
"""

from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from kvgroomd.core.decision import Decision, Result
from kvgroomd.core.groomer import Rules
from kvgroomd.core.scoring import DEFAULT_POLICY
from kvgroomd.format.engine import EngineOptions
from kvgroomd.format.header import PREFIX_BYTES, Header, Reason, sha1_hex
from kvgroomd.sim import trace as fmt
from kvgroomd.sim.engine import EngineModel, EngineParams, Stored
from kvgroomd.sim.groom import SimGroomer
from kvgroomd.sim.memstore import ENGINE_EVICTED, MemStore
from kvgroomd.sim.storage import KeyText
from kvgroomd.sim.texts import SegText
from kvgroomd.sim.traceoutcome import Outcome, Usage, recorded

# A trace's times are when the daemon handled each change, a little after the
# engine made it. An unlink the replayed kvgroomd decides this shortly
# before a recorded hit or consume of the file loses the race, as it did
# live (the deleter finds the file touched or gone: result changed/gone).
LAG_S = 0.03
# The daemon hears a change a moment after the engine made it (inotify, then
# a read): the engine's lookup right after it saved the live session comes
# first, as live, before kvgroomd reacts to the save (sim/groom.py: latency).
# Between two ticks of the trace's millisecond clock, so that no recorded
# event ties with the daemon's reaction to another.
DAEMON_LAG_S = 0.0015


class _Disk(MemStore):
    """The simulator's directory, stamping headers with the recorded times:
    the engine's clock wrote created_at and last_used in whole seconds a
    little before the daemon saw each change (policies measure ages by them)."""

    def __init__(self) -> None:
        super().__init__()
        self.stamp: tuple[int, int] | None = None  # (created_at, last_used) of the next write
        self.used: int | None = None  # last_used of the next touch

    def write(self, name: str, header: Header, text: KeyText, trailer: bytes,
              now: float) -> None:  # fmt: skip
        if self.stamp is not None:
            header = replace(header, created_at=self.stamp[0], last_used=self.stamp[1])
        super().write(name, header, text, trailer, now)

    def touch(self, name: str, header: Header, now: float) -> None:
        if self.used is not None:
            header = replace(header, last_used=self.used)
        super().touch(name, header, now)


@dataclass(frozen=True, slots=True)
class Setup:
    """One config to replay under: the core's rules and the engine's settings."""

    label: str
    rules: Rules
    engine_budget: int | None  # the engine's --kv-disk-space-mb in bytes; None: never evicts
    engine: EngineOptions = field(default_factory=EngineOptions)
    reconcile_interval: float = 300.0
    follow_reloads: bool = False  # apply the trace's own reloads (the recorded config)
    settings: Mapping[str, str] = field(default_factory=dict)  # what --set changed
    room: str = "same"  # its budgets against the recorded ones (traceoutcome.room)


@dataclass(frozen=True, slots=True)
class Lookup:
    """One disk lookup the trace shows, and what it wanted.

    The engine looks a prompt up on disk when a request does not continue
    the live session: right after saving that session (an `evict` landing).
    What follows until the next such save is that request's evidence: the
    file it hit (a header rewrite, or a consume), and the files its prefill
    stored (`cold`, `continued`), every one a prefix of its prompt. The
    lookup wanted at least the longest of them (`wants`)."""

    at: int  # index of its first event
    wants: str  # the id of the longest text it is known to have wanted
    members: tuple[int, ...]  # indices of its hit and store events
    hit: str | None  # the file it hit, if it did
    # The save of this session at the next switch (its prompt and reply),
    # when the trace shows it extends what the lookup wanted: any file stored
    # before the lookup that is a prefix of it is a prefix of the prompt.
    then: str | None = None
    # The index of the save of the session before (the switch; None: no
    # save): the engine looked up right after it, before the daemon heard of
    # the save, unless the recording shows kvgroomd was first that time.
    opened: int | None = None
    daemon_first: bool = False


@dataclass(frozen=True, slots=True)
class Prepared:
    """A trace made ready to replay: the events in order, each file's text
    in the synthetic family, the recorded config and what the recording
    itself measured."""

    events: tuple[fmt.Event, ...]  # in time order
    hits: tuple[int, ...]  # the disk hits each event shows (sim/trace.hit_counts)
    fresh: tuple[bool, ...]  # which landings are new files (not one read again)
    lookups: tuple[Lookup, ...]
    facts: Mapping[str, fmt.Facts]
    parent: Mapping[str, str | None]
    conflicts: int
    config: Mapping[str, Any]  # the first recorded config
    recorded: Outcome
    ctx_size: int  # the server's context: the largest seen
    span: tuple[float, float]


def prepare(trace: fmt.Trace) -> Prepared:
    """Classify, order and measure a trace (once for all the configs replayed)."""
    configs = [e.config for e in trace.events if e.kind == fmt.CONFIG]
    config = configs[0] if configs else {}
    events = sorted(trace.events, key=lambda e: e.t)  # stable: a millisecond keeps its order
    parent, conflicts = family(trace.relations, trace.facts)
    ctx = max((f.ctx_size for f in trace.facts.values()), default=32768)
    span = (events[0].t, events[-1].t) if events else (0.0, 0.0)
    hits, fresh = fmt.hit_counts(events)
    lookups = _lookups(events, hits, fresh, trace.facts, parent)
    measured = recorded(events, hits, fresh, len(lookups), trace.facts)
    return Prepared(tuple(events), tuple(hits), tuple(fresh), tuple(lookups), dict(trace.facts),
                    parent, conflicts, config, measured, ctx, span)  # fmt: skip


_SAVES = (int(Reason.EVICT), int(Reason.SHUTDOWN))
_PREFILL = (int(Reason.COLD), int(Reason.CONTINUED))


def _used(e: fmt.Event, hits: int) -> bool:
    """The engine served this file from disk here (a hit, or a consume)."""
    return hits > 0 or (e.kind == fmt.ENGINE and e.cause == fmt.CONSUMED)


def _lookups(events: Sequence[fmt.Event], hits: Sequence[int], fresh: Sequence[bool],
             facts: Mapping[str, fmt.Facts],
             parent: Mapping[str, str | None]) -> list[Lookup]:  # fmt: skip
    """The lookups the trace shows (`Lookup`): a save of the live session
    (evict, shutdown) starts the next one; so do a second hit before the next
    save (a session too short to save) and a store no longer than the
    longest so far that is not known to be its prefix (the request after a
    session whose save the engine skipped, as too big for its budget: the
    evidence of one lookup is prefixes of one prompt, a chain)."""
    out: list[Lookup] = []
    members: list[int] = []
    hit: str | None = None
    opened: int | None = None
    unlinked: list[str] = []  # kvgroomd's unlinks after the save, before the lookup's evidence

    def close(save: str | None) -> None:
        nonlocal members, hit, opened
        if members:
            wants = max((events[i].id for i in members),
                        key=lambda x: facts[x].text_bytes if x in facts else -1)  # fmt: skip
            then = save if save is not None and _descends(save, wants, parent) else None
            # The lookup did not load a longer prefix of its prompt that
            # kvgroomd unlinked meanwhile: kvgroomd was first, this time.
            least = facts[hit].text_bytes if hit is not None and hit in facts else -1
            first = opened is not None and any(
                facts[u].text_bytes > least and _descends(then or wants, u, parent)
                for u in unlinked if u in facts)  # fmt: skip
            out.append(Lookup(members[0], wants, tuple(members), hit, then, opened, first))
            opened = None
        members, hit = [], None
        unlinked.clear()

    for i, e in enumerate(events):
        landing = e.kind in (fmt.ADDED, fmt.REPLACED) and fresh[i] and e.facts is not None
        if landing and e.facts is not None and e.facts.reason in _SAVES:
            close(e.id)
            opened = i
        elif e.kind == fmt.DECIDED and e.result == "unlinked" and not members:
            unlinked.append(e.id)
        elif _used(e, hits[i]) and e.id in facts:
            if hit is not None:
                close(None)
            members.append(i)
            hit = e.id
        elif landing and e.facts is not None and e.facts.reason in _PREFILL:
            if members and _another(e.id, [events[m].id for m in members], facts, parent):
                close(None)
            members.append(i)
    close(None)
    return out


def _another(fid: str, members: Sequence[str], facts: Mapping[str, fmt.Facts],
             parent: Mapping[str, str | None]) -> bool:  # fmt: skip
    """A store `fid` belongs to another request than `members`: it is no
    longer than the longest of them and not known to be its prefix (a longer
    one with no known relation is taken as the same request's)."""
    longest = max(members, key=lambda x: facts[x].text_bytes if x in facts else -1)
    size = facts[fid].text_bytes if fid in facts else -1
    mine = fid == longest or _descends(longest, fid, parent) or _descends(fid, longest, parent)
    return size <= (facts[longest].text_bytes if longest in facts else -1) and not mine


def _descends(x: str, ancestor: str, parent: Mapping[str, str | None]) -> bool:
    """`ancestor`'s text is a known strict prefix of `x`'s."""
    y = parent.get(x)
    while y is not None:
        if y == ancestor:
            return True
        y = parent.get(y)
    return False


def family(relations: set[tuple[str, str]],
           facts: Mapping[str, fmt.Facts]) -> tuple[dict[str, str | None], int]:  # fmt: skip
    """The recorded relations as a forest (sim/trace.family)."""
    return fmt.family(relations, {k: f.text_bytes for k, f in facts.items()})


# -- replaying -------------------------------------------------------------------------


class _Texts:
    """The synthetic text of each id: its parent's text and one segment of its
    own; a root starts with 64 bytes of its family's (`Facts.family`), as its
    real text starts with what its family shares (policies group by them)."""

    def __init__(self, parent: Mapping[str, str | None],
                 families: Mapping[str, str] | None = None) -> None:  # fmt: skip
        self.parent = parent
        self.families = families or {}
        self._text: dict[str, SegText] = {}
        self._stream: dict[str, int] = {}
        self._family: dict[str, SegText] = {}

    def of(self, fid: str) -> SegText:
        text = self._text.get(fid)
        if text is None:
            chain = []
            x: str | None = fid
            while x is not None and x not in self._text:
                chain.append(x)
                x = self.parent.get(x)
            base = self._text[x] if x is not None else self._root(chain[-1])
            for y in reversed(chain):
                stream = self._stream.setdefault(y, len(self._stream) + 1)
                base = base + SegText(((stream, 1),), 1)
                self._text[y] = base
            text = self._text[fid]
        return text

    def _root(self, fid: str) -> SegText:
        """What a root's text starts with: its family's 64 bytes (a segment of
        56 tokens renders as 8 + 56 bytes), or nothing."""
        family = self.families.get(fid, "")
        if not family:
            return SegText(())
        head = self._family.get(family)
        if head is None:
            head = self._family[family] = SegText((((1 << 48) + len(self._family), 56),), 56)
        return head


class _Replay:
    def __init__(self, prep: Prepared, setup: Setup) -> None:
        self.prep = prep
        self.setup = setup
        self.texts = _Texts(prep.parent, {k: f.family for k, f in prep.facts.items()})
        opts = setup.engine
        self.params = EngineParams(
            budget=setup.engine_budget or 0, min_tokens=opts.min_tokens,
            cold_max_tokens=opts.cold_max_tokens, continued_interval=opts.continued_interval,
            boundary_trim=opts.boundary_trim, boundary_align=opts.boundary_align,
            ctx_size=prep.ctx_size)  # fmt: skip
        self.disk = _Disk()
        self.model = EngineModel(self.disk, self.params, budget=setup.engine_budget,
                                 reject_different_quant=setup.rules.strict_quant)  # fmt: skip
        self.groomer = SimGroomer(replace(setup.rules, prefixes=False), self.disk,
                                  reconcile_interval=setup.reconcile_interval,
                                  latency=DAEMON_LAG_S, before_unlink=self._race)  # fmt: skip
        self.names: dict[str, str] = {}
        self.ids: dict[str, str] = {}  # replay name -> trace id
        self.uses = _uses(prep.events, prep.hits)
        self.member = {m: lk for lk in prep.lookups for m in lk.members}
        self.opens = {lk.opened: lk for lk in prep.lookups
                      if lk.opened is not None and not lk.daemon_first}  # fmt: skip
        self.covered: set[str] = set()  # what the current lookup's file serves: not stored again
        self.tokens = self.hits = self.lookups = self.written = self.consumed = 0
        self.usage = Usage()

    def name(self, fid: str) -> str:
        name = self.names.get(fid)
        if name is None:
            name = self.names[fid] = sha1_hex(self.texts.of(fid).render()) + ".kv"
            self.ids[name] = fid
        return name

    def _race(self, d: Decision, now: float) -> Result | None:
        """An unlink loses (GONE: the core forgets the file; the engine's use
        shows it again) when the trace records the engine using the file
        within LAG_S of `now` (the daemon saw it late, the engine did it first)."""
        times = self.uses.get(self.ids.get(d.name, ""))
        if not times:
            return None
        i = bisect.bisect_left(times, now)
        return Result.GONE if i < len(times) and times[i] <= now + LAG_S else None

    def run(self) -> Outcome:
        events = self.prep.events
        i = self._initial(events)
        run = events[i - 1].run if i else 0
        pending: list[fmt.Event] = []  # a later run's opening state, until its S
        for j in range(i, len(events)):
            e = events[j]
            if e.run != run:
                run, pending = e.run, []
            if e.kind == fmt.PRESENT:
                if not e.rotation:
                    pending.append(e)
            elif e.kind == fmt.STATE:
                if not e.rotation and pending:
                    self._restart(pending, e.t)
                pending = []
            else:
                self._event(j, e)
            self.usage.at(e.t, self.disk.index.total_bytes)
        if len(events) > i:
            self.groomer.tick(events[-1].t + DAEMON_LAG_S)  # what the daemon has yet to hear
        evicted = self.disk.deleted[ENGINE_EVICTED]
        unlinked = Counter(cause for _name, cause in self.groomer.unlinked)
        return Outcome(self.setup.label, self.tokens, self.hits, self.lookups, self.written,
                       evicted, self.consumed, dict(unlinked), self.usage.peak,
                       self.usage.mean(), dict(self.setup.settings),
                       self.setup.room)  # fmt: skip

    def _event(self, j: int, e: fmt.Event) -> None:
        """Event `j` of the trace: a store, a lookup, hits, a reload."""
        heard = min(self.usage.last + DAEMON_LAG_S, e.t)
        if heard > self.usage.last:  # the daemon has acted on the last change by then
            self.groomer.tick(heard)
            self.usage.at(heard, self.disk.index.total_bytes)
        self.groomer.tick(e.t)
        lk = self.member.get(j)
        if lk is not None and lk.at == j and (lk.opened is None or lk.daemon_first):
            if lk.opened is not None:  # after kvgroomd's reaction to the save, as recorded
                self.groomer.tick(max(e.t, self.prep.events[lk.opened].t + DAEMON_LAG_S))
            self.covered = self._lookup(lk, e.t)
        if e.kind in (fmt.ADDED, fmt.REPLACED) and e.facts is not None and self.prep.fresh[j]:
            if lk is None or e.id not in self.covered:
                self._store(e.id, e.facts, e.t, replace_=e.kind == fmt.REPLACED)
            if (switch := self.opens.get(j)) is not None:  # the lookup right after this save
                self.covered = self._lookup(switch, e.t)
        elif e.kind == fmt.CONFIG and self.setup.follow_reloads:
            self.groomer.reconfigure(rules_of(e.config), e.t)
        hits = self.prep.hits[j]
        for _ in range(hits - 1 if lk is not None and lk.hit == e.id else hits):
            self._hit(e.id, e.t)  # hits the daemon saw as one header rewrite

    def _initial(self, events: Sequence[fmt.Event]) -> int:
        """The directory as the trace first saw it (the first state, up to its
        S): written in place, then the core's start-up scan."""
        i = 0
        while i < len(events) and events[i].kind != fmt.STATE:
            e = events[i]
            if e.kind == fmt.PRESENT and e.facts is not None:
                self._put(e.id, e.facts, e.t)
            i += 1
        if i == len(events):
            return 0  # no state: the replay starts from an empty directory
        t = events[i].t
        self.disk.watcher = self.groomer
        self.groomer.rescan(t)
        self.usage.at(t, self.disk.index.total_bytes)
        return i + 1

    def _put(self, fid: str, f: fmt.Facts, t: float) -> None:
        """A file that was there already (not a store the replay counts)."""
        text = self.texts.of(fid)
        payload = max(f.size - PREFIX_BYTES - text.nbytes, 0)
        h = self.model.header(text, f.tokens, Reason.from_byte(f.reason), t, model_id=f.model_id,
                              quant_bits=f.quant_bits, ctx_size=f.ctx_size,
                              payload_bytes=payload)  # fmt: skip
        h = replace(h, hits=f.hits, created_at=f.created_at, last_used=f.last_used)
        self.disk.write(self.name(fid), h, text, b"", t)

    def _restart(self, present: list[fmt.Event], t: float) -> None:
        """A later daemon start: what was found is the directory now (files
        that came or went while no daemon watched)."""
        found = {e.id: e.facts for e in present if e.facts is not None}
        names = {self.name(fid): fid for fid in found}
        for name in [n for n in self.disk.index.names if n not in names]:
            self.disk.delete(name, "unwatched", t)
        for name, fid in names.items():
            if name not in self.disk:
                self._put(fid, found[fid], t)
        self.groomer.rescan(t)

    def _store(self, fid: str, f: fmt.Facts, t: float, *, replace_: bool = False,
               stamp: bool = True) -> None:  # fmt: skip
        text = self.texts.of(fid)
        store = self.model.write_new if self.name(fid) in self.disk and replace_ else (
            self.model.store)  # fmt: skip
        self.disk.stamp = (f.created_at, f.last_used) if stamp else None
        payload = max(f.size - PREFIX_BYTES - text.nbytes, 0)
        try:
            what, _name = store(text, f.tokens, Reason.from_byte(f.reason), t,
                                model_id=f.model_id, quant_bits=f.quant_bits,
                                ctx_size=f.ctx_size, payload_bytes=payload)  # fmt: skip
        finally:
            self.disk.stamp = None
        if what is Stored.WRITTEN:
            self.written += f.size

    def _lookup(self, lk: Lookup, t: float) -> set[str]:
        """A lookup the trace shows, at its first event: served by the longest
        surviving prefix of what it wanted (`lk.wants`), or by nothing. It
        returns what the served file covers (it and its known prefixes: the
        request's prefill does not store those again). A miss where the
        recording hit stores the file hit again (cold) when the engine would
        store a prompt of that length cold."""
        self.lookups += 1
        hit = next((self.prep.events[m] for m in lk.members
                    if self.prep.events[m].id == lk.hit), None)  # fmt: skip
        used = hit.last_used if hit is not None and hit.kind == fmt.UPDATED else None
        served = self._serve(self._best(lk), t, used)
        if served is not None:
            covered = set()
            x: str | None = served
            while x is not None:
                covered.add(x)
                x = self.prep.parent.get(x)
            return covered
        if lk.hit is not None:
            f, p = self.prep.facts[lk.hit], self.params
            if p.min_tokens <= f.tokens <= p.cold_max_tokens:
                self._store(lk.hit, replace(f, reason=int(Reason.COLD), hits=0), t,
                            stamp=False)  # fmt: skip
        return set()

    def _best(self, lk: Lookup) -> str:
        """Which of the lookup's evidence (the file it hit, the files its
        prefill stored: every one a prefix of its prompt) has the longest
        surviving prefix here: the file the engine's lookup would load."""
        evidence = {self.prep.events[m].id for m in lk.members}
        if lk.then is not None:
            evidence.add(lk.then)  # not stored yet: its prefixes stored before are the prompt's
        if len(evidence) == 1:
            return lk.wants
        best, most = lk.wants, -1
        for fid in evidence:
            f = self.prep.facts[fid]
            name = self.model.find(self.texts.of(fid), model_id=f.model_id,
                                   quant_bits=f.quant_bits, ctx_size=self.prep.ctx_size)
            found = None if name is None else self.disk.entry(name)
            if found is not None and found[0].text_bytes > most:
                best, most = fid, found[0].text_bytes
        return best

    def _hit(self, fid: str, t: float) -> None:
        """One more use of `fid` at the same moment (hits the daemon saw together)."""
        self.lookups += 1
        self._serve(fid, t, None)

    def _serve(self, fid: str, t: float, used: int | None) -> str | None:
        """The engine's lookup of `fid`'s text: the id of the file it loaded."""
        f = self.prep.facts[fid]
        self.disk.used = used
        try:
            hit = self.model.lookup(self.texts.of(fid), t, model_id=f.model_id,
                                    quant_bits=f.quant_bits,
                                    ctx_size=self.prep.ctx_size)  # fmt: skip
        finally:
            self.disk.used = None
        if hit is None:
            return None
        self.hits += 1
        self.tokens += hit.tokens
        self.consumed += hit.consumed
        return self.ids.get(hit.name)


def _uses(events: Sequence[fmt.Event], hits: Sequence[int]) -> dict[str, list[float]]:
    """When the engine used each file (a hit, a consume), in time order."""
    uses: dict[str, list[float]] = {}
    for e, n in zip(events, hits, strict=True):
        if n or (e.kind == fmt.ENGINE and e.cause == fmt.CONSUMED):
            uses.setdefault(e.id, []).append(e.t)
    return uses


def replay(prep: Prepared, setup: Setup) -> Outcome:
    """Replay the trace under `setup`."""
    return _Replay(prep, setup).run()


def rules_of(config: Mapping[str, Any], **changes: Any) -> Rules:
    """The core's rules from a recorded config (sim/trace.config_record)."""
    engine = dict(config.get("engine") or {})
    rules = Rules(
        supersede=bool(config.get("supersede", True)),
        strict_quant=bool(engine.get("reject_different_quant", False)),
        budget=config.get("budget"), engine_budget=config.get("engine_budget"),
        low_watermark=float(config.get("low_watermark", 0.9)),
        protect_new=float(config.get("protect_new", 120.0)),
        policy=str(config.get("policy", DEFAULT_POLICY)),
        policy_params=dict(config.get("policy_params") or {}),
        dry_run=bool(config.get("dry_run", False)),
        cold_max_tokens=int(engine.get("cold_max_tokens", 30000)),
    )  # fmt: skip
    return replace(rules, **changes)


def engine_of(config: Mapping[str, Any]) -> EngineOptions:
    """The engine's options from a recorded config."""
    known = EngineOptions.__dataclass_fields__
    return EngineOptions(**{k: v for k, v in dict(config.get("engine") or {}).items()
                            if k in known})  # fmt: skip


__all__ = ["Lookup", "Prepared", "Setup", "engine_of", "family", "prepare", "replay",
           "rules_of"]  # fmt: skip
