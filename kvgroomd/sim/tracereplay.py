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
  Replayed as one lookup: the engine model loads the longest surviving
  prefix of that evidence (the file hit, if this config kept it; a longer
  one this config kept; a shorter prefix; or nothing), and the request's
  stores that the loaded file covers are not written again. A miss where
  the recording hit stores the file hit again (cold) when the engine would
  store a prompt of that length cold.
* Removals: the engine's consumes are hits (above); its evictions and
  kvgroomd's decisions are not replayed: the engine model and the core make
  their own under the config replayed.

What cannot be known: prefix relations are proven only between files on
disk together, so a file removed before a longer text of its session
landed is not known to be a prefix of it; a lookup that missed and stored
nothing leaves no evidence. A replay therefore credits a bigger budget
conservatively (README: "Tune on your own traffic" has the measurement).
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

GiB = 1 << 30
# A trace's times are when the daemon handled each change, a little after the
# engine made it. An unlink the replayed kvgroomd decides this shortly
# before a recorded hit or consume of the file loses the race, as it did
# live (the deleter finds the file touched or gone: result changed/gone).
LAG_S = 0.03


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


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one replay (or the recording itself) measured."""

    label: str
    tokens_from_disk: int
    hits: int
    lookups: int
    bytes_written: int
    engine_evictions: int
    consumed: int
    unlinked: Mapping[str, int]
    peak_bytes: int
    mean_bytes: float
    settings: Mapping[str, str] = field(default_factory=dict)

    def summary(self, recorded: Outcome | None = None) -> dict[str, Any]:
        """Plain data for --json; with `recorded`, the differences to it."""
        out: dict[str, Any] = {
            "label": self.label,
            "settings": dict(self.settings),
            "tokens_from_disk": self.tokens_from_disk,
            "hits": self.hits,
            "lookups": self.lookups,
            "gib_written": round(self.bytes_written / GiB, 3),
            "engine_evictions": self.engine_evictions,
            "consumed": self.consumed,
            "unlinked": dict(self.unlinked),
            "peak_gib": round(self.peak_bytes / GiB, 3),
            "mean_gib": round(self.mean_bytes / GiB, 3),
        }
        if recorded is not None:
            base = recorded.tokens_from_disk
            out["vs_recorded"] = {
                "tokens_from_disk": self.tokens_from_disk - base,
                "tokens_from_disk_ratio": round(self.tokens_from_disk / base, 4) if base else None,
                "gib_written": round((self.bytes_written - recorded.bytes_written) / GiB, 3),
                "engine_evictions": self.engine_evictions - recorded.engine_evictions,
            }
        return out


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
    return Prepared(tuple(events), tuple(hits), tuple(fresh), tuple(lookups), dict(trace.facts),
                    parent, conflicts, config,
                    _recorded(events, hits, fresh, lookups, trace.facts), ctx, span)  # fmt: skip


_SAVES = (int(Reason.EVICT), int(Reason.SHUTDOWN))
_PREFILL = (int(Reason.COLD), int(Reason.CONTINUED))


def _used(e: fmt.Event, hits: int) -> bool:
    """The engine served this file from disk here (a hit, or a consume)."""
    return hits > 0 or (e.kind == fmt.ENGINE and e.cause == fmt.CONSUMED)


def _lookups(events: Sequence[fmt.Event], hits: Sequence[int], fresh: Sequence[bool],
             facts: Mapping[str, fmt.Facts],
             parent: Mapping[str, str | None]) -> list[Lookup]:  # fmt: skip
    """The lookups the trace shows (`Lookup`): a save of the live session
    (evict, shutdown) starts the next one; a second hit before the next
    save is a lookup of its own (a session too short to save)."""
    out: list[Lookup] = []
    members: list[int] = []
    hit: str | None = None

    def close(save: str | None) -> None:
        nonlocal members, hit
        if members:
            wants = max((events[i].id for i in members),
                        key=lambda x: facts[x].text_bytes if x in facts else -1)  # fmt: skip
            then = save if save is not None and _descends(save, wants, parent) else None
            out.append(Lookup(members[0], wants, tuple(members), hit, then))
        members, hit = [], None

    for i, e in enumerate(events):
        landing = e.kind in (fmt.ADDED, fmt.REPLACED) and fresh[i] and e.facts is not None
        if landing and e.facts is not None and e.facts.reason in _SAVES:
            close(e.id)
        elif _used(e, hits[i]) and e.id in facts:
            if hit is not None:
                close(None)
            members.append(i)
            hit = e.id
        elif landing and e.facts is not None and e.facts.reason in _PREFILL:
            members.append(i)
    close(None)
    return out


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


def _recorded(events: Sequence[fmt.Event], hit_counts: Sequence[int], news: Sequence[bool],
              lookups: Sequence[Lookup], facts: Mapping[str, fmt.Facts]) -> Outcome:  # fmt: skip
    """What the recording measured: tokens served from disk (hits times the
    tokens of the file hit, consumes included), bytes landed, the engine's
    evictions, kvgroomd's unlinks, and the directory's size over time."""
    tokens = hits = written = evicted = consumed = 0
    unlinked: Counter[str] = Counter()
    sizes = _Sizes()
    usage = _Usage()
    started = False
    for e, n, fresh in zip(events, hit_counts, news, strict=True):
        f = facts.get(e.id)
        if n and f is not None:
            hits += n
            tokens += n * f.tokens
        if e.kind in (fmt.PRESENT, fmt.ADDED, fmt.REPLACED) and e.facts is not None:
            sizes[e.id] = e.facts.size
            if fresh:
                written += e.facts.size
        elif e.kind == fmt.UPDATED:
            sizes[e.id] = e.size
        elif e.kind == fmt.ENGINE:
            sizes.pop(e.id, None)
            if e.cause == fmt.CONSUMED and f is not None:
                consumed += 1
                hits += 1
                tokens += f.tokens
            elif e.cause == fmt.EVICTED:
                evicted += 1
        elif e.kind == fmt.DECIDED and e.result in ("unlinked", "would_unlink"):
            if e.result == "unlinked":
                sizes.pop(e.id, None)
            unlinked[e.cause] += 1  # (a decision the engine beat has its own E record)
        elif e.kind == fmt.STATE:
            started = True
        if started:
            usage.at(e.t, sizes.total)
    return Outcome("recorded", tokens, hits, len(lookups), written, evicted, consumed,
                   dict(unlinked), usage.peak, usage.mean())  # fmt: skip


class _Sizes(dict[str, int]):
    """File sizes by id, and their total."""

    total = 0

    def __setitem__(self, key: str, value: int) -> None:
        self.total += value - self.get(key, 0)
        super().__setitem__(key, value)

    def pop(self, key: str, default: Any = None) -> Any:
        value = super().pop(key, None)
        if value is None:
            return default
        self.total -= value
        return value


class _Usage:
    """Bytes on disk over time: the peak and the time-weighted mean."""

    def __init__(self) -> None:
        self.peak = 0
        self._t: float | None = None
        self._bytes = 0
        self._area = 0.0
        self._t0: float | None = None

    def at(self, t: float, usage: int | None) -> None:
        if self._t is not None:
            self._area += self._bytes * (t - self._t)
        if self._t0 is None:
            self._t0 = t
        self._t = t
        if usage is not None:
            self._bytes = usage
            self.peak = max(self.peak, usage)

    def mean(self) -> float:
        span = (self._t or 0.0) - (self._t0 or 0.0)
        return self._area / span if span > 0 else float(self._bytes)


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
                                  before_unlink=self._race)  # fmt: skip
        self.names: dict[str, str] = {}
        self.ids: dict[str, str] = {}  # replay name -> trace id
        self.uses = _uses(prep.events, prep.hits)
        self.tokens = self.hits = self.lookups = self.written = self.consumed = 0
        self.usage = _Usage()

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
        events, prep = self.prep.events, self.prep
        i = self._initial(events)
        member = {m: lk for lk in prep.lookups for m in lk.members}
        covered: set[str] = set()  # what the current lookup's file serves: not stored again
        run = events[i - 1].run if i else 0
        pending: list[fmt.Event] = []  # a later run's opening state, until its S
        for j in range(i, len(events)):
            e, hits = events[j], prep.hits[j]
            if e.run != run:
                run = e.run
                pending = []
            if e.kind == fmt.PRESENT:
                if not e.rotation:
                    pending.append(e)
                continue
            if e.kind == fmt.STATE:
                if not e.rotation and pending:
                    self._restart(pending, e.t)
                pending = []
                continue
            self.groomer.tick(e.t)
            lk = member.get(j)
            if lk is not None and lk.at == j:
                covered = self._lookup(lk, e)
            if e.kind in (fmt.ADDED, fmt.REPLACED) and e.facts is not None and prep.fresh[j]:
                if lk is None or e.id not in covered:
                    self._store(e.id, e.facts, e.t, replace_=e.kind == fmt.REPLACED)
            elif e.kind == fmt.CONFIG and self.setup.follow_reloads:
                self.groomer.reconfigure(rules_of(e.config), e.t)
            for _ in range(hits - 1 if lk is not None and lk.hit == e.id else hits):
                self._hit(e.id, e.t)  # hits the daemon saw as one header rewrite
            self.usage.at(e.t, self.disk.index.total_bytes)
        evicted = self.disk.deleted[ENGINE_EVICTED]
        unlinked = Counter(cause for _name, cause in self.groomer.unlinked)
        return Outcome(self.setup.label, self.tokens, self.hits, self.lookups, self.written,
                       evicted, self.consumed, dict(unlinked), self.usage.peak,
                       self.usage.mean(), dict(self.setup.settings))  # fmt: skip

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

    def _lookup(self, lk: Lookup, e: fmt.Event) -> set[str]:
        """A lookup the trace shows, at its first event: served by the longest
        surviving prefix of what it wanted (`lk.wants`), or by nothing. It
        returns what the served file covers (it and its known prefixes: the
        request's prefill does not store those again). A miss where the
        recording hit stores the file hit again (cold) when the engine would
        store a prompt of that length cold."""
        self.lookups += 1
        used = e.last_used if e.kind == fmt.UPDATED and e.id == lk.hit else None
        served = self._serve(self._best(lk), e.t, used)
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
                self._store(lk.hit, replace(f, reason=int(Reason.COLD), hits=0), e.t,
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


def format_table(recorded: Outcome, runs: Sequence[Outcome], conflicts: int = 0) -> str:
    """The runs beside the recording: tokens from disk, writes, evictions, disk used."""
    width = max([len(r.label) for r in (recorded, *runs)] + [8])
    head = (f"{'run':<{width}} {'tokens from disk':>16} {'vs recorded':>11} {'hits':>9} "
            f"{'GiB written':>11} {'engine evictions':>16} {'mean GiB':>8} "
            f"{'peak GiB':>8}")  # fmt: skip
    lines = [head, "-" * len(head)]
    base = recorded.tokens_from_disk
    for r in (recorded, *runs):
        ratio = "" if r is recorded else (f"{r.tokens_from_disk / base - 1:+.1%}" if base
                                          else "-")  # fmt: skip
        lines.append(f"{r.label:<{width}} {r.tokens_from_disk:>16,} {ratio:>11} "
                     f"{f'{r.hits}/{r.lookups}':>9} {r.bytes_written / GiB:>11.2f} "
                     f"{r.engine_evictions:>16} {r.mean_bytes / GiB:>8.2f} "
                     f"{r.peak_bytes / GiB:>8.2f}")  # fmt: skip
    if conflicts:
        lines.append(f"({conflicts} prefix relations could not be placed: a damaged trace?)")
    return "\n".join(lines)


__all__ = ["Outcome", "Prepared", "Setup", "engine_of", "family", "format_table", "prepare",
           "replay", "rules_of"]  # fmt: skip
