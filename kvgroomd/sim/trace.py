"""The activity trace: what the daemon records of its cache, and how it is read back.

Pure: the format's data model, its encoding (the recorder, daemon/trace.py,
writes lines with it) and its reader (the replay, sim/tracereplay.py, reads
them). No prompt text ever enters a trace: files are named by a keyed hash of
their SHA-1 name (`Ids`), texts by their length and by the prefix relations
kvgroomd proved between them.

A trace is a sequence of files (the current one and its rotated elders,
oldest first), each a sequence of lines. Every file starts with a header
line, a JSON object naming the format and its version; every daemon start
writes another. Records are JSON arrays, kind first, then the time in
milliseconds since the last header's `t0` (Unix seconds):

    ["C", t, {config}]                 the rules in force (at start, on a reload)
    ["P", t, id, *FACTS]               present when the state was taken (start, rotation)
    ["S", t, n]                        the state above is complete: n files
    ["A", t, id, *FACTS]               landed (a new file under that name)
    ["N", t, id, *FACTS]               landed again under the same name (another inode)
    ["U", t, id, hits, last_used, size]  rewritten in place: a hit, a trailer
    ["X", t, id, [id, ...]]            its text strictly extends these (SHA-1 proven)
    ["E", t, id, cause]                removed by the engine: consumed | evicted |
                                       replaced | other (`engine_cause`)
    ["D", t, id, cause, result, by]    kvgroomd's decision and what became of it
                                       (by: the superseding id, or null)

FACTS are reason (header byte 5), tokens, size, text_bytes, model_id,
quant_bits, ctx_size, created_at, hits, last_used, family (`Ids.family`:
which files share their first 64 text bytes, as policies group them).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

FORMAT = "kvgroomd-trace"
VERSION = 1
KEY_BYTES = 32
MEMO = 1 << 16  # names whose ids are remembered (hits come back to the same files)

CONFIG, PRESENT, STATE, ADDED, REPLACED, UPDATED, EXTENDS, ENGINE, DECIDED = (
    "C", "P", "S", "A", "N", "U", "X", "E", "D")  # fmt: skip
CONSUMED, EVICTED, REPLACED_BY_ENGINE, OTHER = "consumed", "evicted", "replaced", "other"
# The tuning-relevant part of a config (config.Config.effective()): what a
# trace records, and what a replay can change.
CONFIG_KEYS = ("budget", "engine_budget", "engine", "low_watermark", "protect_new", "policy",
               "policy_params", "supersede", "reconcile_interval", "dry_run")  # fmt: skip


class TraceError(ValueError):
    """A trace that cannot be read: the file, line and what is wrong."""


class Ids:
    """Names to trace ids: a keyed BLAKE2b of the name's SHA-1, 64 bits.

    The SHA-1 in a snapshot's name is over its text: anyone holding a guess
    of a prompt (a public system prompt, a template) could confirm it was
    used by hashing it. A keyed hash cannot be checked without the key,
    which stays beside the daemon (the state directory), never in the trace.
    """

    def __init__(self, key: bytes) -> None:
        self.key = key
        # Says which key without giving it away: two runs with one key id
        # name the same file alike (a trace spanning restarts links up).
        self.key_id = hashlib.blake2b(key, digest_size=4, person=b"kvg-tkid").hexdigest()
        self._memo: dict[str, str] = {}

    def of(self, name: str) -> str:
        """The trace id of a file name (`<40 hex>.kv`; any other name as is)."""
        fid = self._memo.get(name)
        if fid is None:
            if len(self._memo) >= MEMO:
                self._memo.clear()
            fid = self._memo[name] = self._of(name)
        return fid

    def family(self, head: int) -> str:
        """The trace's name for a text family: the core's head key (a hash of
        a text's first 64 bytes: every chat of one system prompt shares it),
        keyed-hashed too, 32 bits. "" for texts under 64 bytes (no family)."""
        if not head:
            return ""
        return hashlib.blake2b(head.to_bytes(8, "little"), digest_size=4, key=self.key,
                               person=b"kvg-fam").hexdigest()  # fmt: skip

    def _of(self, name: str) -> str:
        try:
            raw = bytes.fromhex(name[:40]) if name.endswith(".kv") and len(name) == 43 else None
        except ValueError:
            raw = None
        data = raw if raw is not None else name.encode("utf-8", "surrogateescape")
        return hashlib.blake2b(data, digest_size=8, key=self.key).hexdigest()


def engine_cause(tokens: int, usage_before: int, next_size: int | None, *,
                 engine_budget: int | None, cold_max_tokens: int, same_name: bool = False,
                 extended: bool = False, consumable: bool = True) -> str:  # fmt: skip
    """Why the engine removed a file, as far as kvgroomd can tell.

    The engine removes a file for three reasons (spec §3). A replacement: a
    file under the same name lands next (`same_name`). A consume: a hit on
    a file of more than cold_max_tokens unlinks it after loading. The hit is
    a lookup at a session switch, right after the evict save of the
    session before, so a file stored since the last evict or shutdown save
    (by the live session itself) cannot be consumed (`consumable`); and the
    live session then holds that text, so its next store (a continued
    checkpoint, its evict or shutdown save) strictly extends the file
    (`extended`, proven by SHA-1). Its budget eviction: it runs just before
    a store, only when the directory and the file about to be stored
    (`next_size`, the next landing; None: none came) exceed its budget
    (current engines; older ones evicted after the rename and read as
    consumes or `other` here). Without the engine's budget only the size
    and those signs tell them apart. What fits none is `other` (an
    operator, a tool)."""
    if same_name:
        return REPLACED_BY_ENGINE
    big = consumable and 0 < cold_max_tokens < tokens
    if big and extended:
        return CONSUMED
    if engine_budget is None:
        return CONSUMED if big and next_size is None else EVICTED
    if next_size is not None and usage_before + next_size > engine_budget:
        return EVICTED
    if big:
        return CONSUMED
    return EVICTED if 0 < cold_max_tokens < tokens else OTHER


def header_line(t0: float, key_id: str, *, start: bool, version: str = "") -> str:
    """The first line of every trace file, and of every daemon start."""
    return json.dumps({"format": FORMAT, "version": VERSION, "t0": round(t0, 3), "ids": key_id,
                       "start": start, "kvgroomd": version}, separators=(",", ":"))  # fmt: skip


def line(*record: object) -> str:
    """One record as a line (no newline): a JSON array, written by hand for
    the fields every record has (ints, ids), json for the rest."""
    return "[" + ",".join([_field(x) for x in record]) + "]"


def _field(x: object) -> str:
    if type(x) is int:
        return str(x)
    if type(x) is str and x.isalnum():  # kinds, ids, causes: nothing to escape
        return f'"{x}"'
    return json.dumps(x, separators=(",", ":"))


def config_record(effective: Mapping[str, Any]) -> dict[str, Any]:
    """The part of a config a trace records (`CONFIG_KEYS`)."""
    return {k: effective[k] for k in CONFIG_KEYS if k in effective}


# -- reading ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Facts:
    """What the trace says of one file (its header, its size)."""

    reason: int
    tokens: int
    size: int
    text_bytes: int
    model_id: int
    quant_bits: int
    ctx_size: int
    created_at: int
    hits: int
    last_used: int
    family: str = ""  # files of one family share their first 64 text bytes


@dataclass(frozen=True, slots=True)
class Event:
    """One record, in absolute time. `id` is unique across the trace
    (key id + file id); `facts` for P/A/N, `extends` for X, `hits`/`size`
    for U, `cause`/`result`/`by` for E and D, `config` for C."""

    kind: str
    t: float
    id: str = ""
    facts: Facts | None = None
    extends: tuple[str, ...] = ()
    hits: int = 0
    last_used: int = 0
    size: int = 0
    cause: str = ""
    result: str = ""
    by: str | None = None
    config: Mapping[str, Any] = field(default_factory=dict)
    run: int = 0  # which daemon run (a header with start: true begins one)
    rotation: bool = False  # a P/S of a file's opening state (not a daemon start)


@dataclass
class Trace:
    """A whole trace, read: its events in order and what is known of each file."""

    events: list[Event]
    facts: dict[str, Facts]  # the last facts of each id
    relations: set[tuple[str, str]]  # (n, o): o's text is a strict prefix of n's
    runs: int
    versions: set[int]


def _facts(rec: list[Any]) -> Facts:
    r, tok, size, tb, model, quant, ctx, created, hits, used = (int(v) for v in rec[3:13])
    return Facts(r, tok, size, tb, model, quant, ctx, created, hits, used,
                 str(rec[13]) if len(rec) > 13 else "")  # fmt: skip


def read(files: Iterable[tuple[str, Iterable[str]]]) -> Trace:
    """Read trace files (name, lines), oldest first. A trace file's opening
    state (P/S after a header that is not a daemon start) repeats what the
    previous file already said; it is kept (marked `rotation`) so a trace
    whose oldest files rotated away still has its starting state."""
    events: list[Event] = []
    facts: dict[str, Facts] = {}
    relations: set[tuple[str, str]] = set()
    versions: set[int] = set()
    run = 0
    seen_header = False
    for source, lines in files:
        t0, ns, rotation = 0.0, "", False
        for n, text in enumerate(lines, 1):
            text = text.strip()  # noqa: PLW2901
            if not text:
                continue
            try:
                rec = json.loads(text)
            except ValueError:
                if n > 1 and not text.endswith(("]", "}")):
                    continue  # a last line cut short (a crash mid-write): skipped
                raise TraceError(f"{source}:{n}: not a trace line") from None
            if isinstance(rec, dict):
                if rec.get("format") != FORMAT:
                    raise TraceError(f"{source}:{n}: not a {FORMAT} file")
                if rec.get("version") != VERSION:
                    raise TraceError(f"{source}:{n}: {FORMAT} version {rec.get('version')} "
                                     f"(this kvgroomd reads version {VERSION})")  # fmt: skip
                versions.add(int(rec["version"]))
                t0, ns = float(rec["t0"]), str(rec.get("ids", ""))
                rotation = not rec.get("start", True)
                if not rotation:
                    run += 1
                seen_header = True
                continue
            if not seen_header:
                raise TraceError(f"{source}:{n}: no header line before the first record")
            try:
                events.append(_event(rec, _Where(t0, ns, run, rotation), facts, relations))
            except (IndexError, TypeError, ValueError, KeyError):
                raise TraceError(f"{source}:{n}: malformed {str(rec[:1])[1:-1]} record") from None
            if rec[0] in (ADDED, REPLACED, CONFIG, ENGINE, DECIDED, UPDATED, EXTENDS):
                rotation = False  # a file's opening state ends with its first news
    return Trace(events, facts, relations, run, versions)


@dataclass(frozen=True, slots=True)
class _Where:
    """Where a record is: its header's t0 and key id, its run, and whether
    it is part of a rotated file's opening state."""

    t0: float
    ns: str
    run: int
    rotation: bool


def _event(rec: list[Any], at: _Where, facts: dict[str, Facts],
           relations: set[tuple[str, str]]) -> Event:  # fmt: skip
    kind, t, run = str(rec[0]), at.t0 + int(rec[1]) / 1000, at.run
    fid = f"{at.ns}:{rec[2]}" if kind not in (CONFIG, STATE) else ""
    if kind == CONFIG:
        ev = Event(kind, t, config=dict(rec[2]), run=run)
    elif kind == STATE:
        ev = Event(kind, t, size=int(rec[2]), run=run, rotation=at.rotation)
    elif kind in (PRESENT, ADDED, REPLACED):
        f = facts[fid] = _facts(rec)
        ev = Event(kind, t, fid, facts=f, run=run, rotation=at.rotation and kind == PRESENT)
    elif kind == UPDATED:
        ev = Event(kind, t, fid, hits=int(rec[3]), last_used=int(rec[4]), size=int(rec[5]),
                   run=run)  # fmt: skip
    elif kind == EXTENDS:
        olds = tuple(f"{at.ns}:{o}" for o in rec[3])
        relations.update((fid, o) for o in olds)
        ev = Event(kind, t, fid, extends=olds, run=run)
    elif kind == ENGINE:
        ev = Event(kind, t, fid, cause=str(rec[3]), run=run)
    elif kind == DECIDED:
        by = None if rec[5] is None else f"{at.ns}:{rec[5]}"
        ev = Event(kind, t, fid, cause=str(rec[3]), result=str(rec[4]), by=by, run=run)
    else:
        raise ValueError(kind)
    return ev


def hit_counts(events: Iterable[Event]) -> tuple[list[int], list[bool]]:
    """Disk hits each event shows (in order): the rise of a file's hit
    counter since it was last seen; and which landings are new files. A
    landing (A) of a file still present is the same file read again (after
    a deleter found it touched, or a rescan) and continues its count; a new
    file (A of a file gone, N: a new inode) counts from 0; a file present at
    a start only sets the count."""
    out: list[int] = []
    new: list[bool] = []
    last: dict[str, int] = {}
    present: set[str] = set()
    for e in events:
        n, fresh = 0, False
        if e.kind in (PRESENT, ADDED, REPLACED) and e.facts is not None:
            h = e.facts.hits
            if e.kind == ADDED and e.id in present:
                n = h - last.get(e.id, h)
            elif e.kind != PRESENT:
                n, fresh = h, True
            last[e.id] = h
            present.add(e.id)
        elif e.kind == UPDATED:
            n = e.hits - last.get(e.id, e.hits)
            last[e.id] = e.hits
        elif e.kind == ENGINE or (e.kind == DECIDED and e.result in ("unlinked", "gone")):
            present.discard(e.id)
        out.append(max(n, 0))
        new.append(fresh)
    return out, new


# -- a text family with exactly the recorded prefix relations ------------------------


def family(relations: Iterable[tuple[str, str]],
           text_bytes: Mapping[str, int]) -> tuple[dict[str, str | None], int]:  # fmt: skip
    """Each id's parent: its longest known strict prefix (None: a root).

    Two texts that are both prefixes of a third are prefixes of each other,
    the shorter of the longer: so every id's known prefixes form one chain,
    and the relations recorded (each only among files present together)
    merge into a forest. Returns the parents and how many relations could
    not be placed (two different texts of one length, both prefixes of a
    third: impossible for real texts, so a sign of a damaged trace)."""
    parent: dict[str, str | None] = dict.fromkeys(text_bytes)
    conflicts = 0

    def length(x: str) -> int:
        return text_bytes.get(x, 0)

    def ensure(y: str, z: str) -> None:
        """Make z an ancestor of y (z's text is shorter)."""
        nonlocal conflicts
        while True:
            p = parent.get(y)
            if p == z:
                return
            if p is None or length(p) < length(z):
                parent[y] = z
                if p is None:
                    return
                y, z = z, p  # p must now be an ancestor of z: merge the two chains
                continue
            if length(p) == length(z):
                conflicts += 1
                return
            y = p

    for n, o in sorted(relations, key=lambda r: (length(r[0]), length(r[1]), r)):
        if n in parent and o in parent and length(o) < length(n):
            ensure(n, o)
        elif n != o:
            conflicts += 1
    return parent, conflicts


__all__ = ["ADDED", "CONFIG", "CONSUMED", "DECIDED", "ENGINE", "EVICTED", "EXTENDS", "FORMAT",
           "PRESENT", "REPLACED", "STATE", "UPDATED", "VERSION", "Event", "Facts", "Ids",
           "Trace", "TraceError", "config_record", "engine_cause", "family", "header_line",
           "hit_counts", "line", "read"]  # fmt: skip
