"""Workloads for the simulator: YAML -> frozen values -> a list of requests.

Pure (the one loader reads a file). A workload describes what clients send to
ds4-server over time: sessions of turns that share system prompts or documents,
grow turn by turn, diverge (fork) from another session, or call tools (whose
sampled replies the client never sends back verbatim), plus server restarts
and budget changes. `requests()` expands it into the exact prompt of every
request, as segments of abstract tokens, so the replay never handles real text.

A text is a tuple of segments `(stream, tokens)`: the first `tokens` tokens of
token stream `stream`. Every stream is distinct, so a text is a byte prefix of
another exactly when its segments are (`is_prefix`), and `render()` gives bytes
with that same property for SHA-1 keys and kvgroomd's own prefix check.
"""

from __future__ import annotations

import functools
import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from kvgroomd.config import parse_size
from kvgroomd.format.engine import EngineOptions

MiB = 1 << 20
KiB = 1 << 10
DAY = 86400.0
HOUR = 3600.0

Segment = tuple[int, int]  # (token stream id, tokens)
Text = tuple[Segment, ...]


class WorkloadError(ValueError):
    """A workload file problem, naming the key it concerns."""


# -- texts -------------------------------------------------------------------


def tokens_of(text: Text) -> int:
    """Token count of a text."""
    return sum(n for _, n in text)


def truncate(text: Text, tokens: int) -> Text:
    """The first `tokens` tokens of `text`."""
    out: list[Segment] = []
    left = tokens
    for stream, n in text:
        if left <= 0:
            break
        out.append((stream, min(n, left)))
        left -= n
    return tuple(out)


def is_prefix(short: Text, long: Text) -> bool:
    """True when `short` is a (not necessarily strict) prefix of `long`."""
    k = len(short)
    if k == 0:
        return True
    if k > len(long) or short[: k - 1] != long[: k - 1]:
        return False
    (s, n), (t, m) = short[-1], long[k - 1]
    return s == t and n <= m


# Bytes: a segment renders as 0xFF, its stream id in 7 bytes, then one 0x00
# byte per token. Content bytes are never 0xFF, so two texts agree on a byte
# prefix exactly when their segments do: SHA-1 keys and supersede.judge work
# on these bytes as on real rendered text.
_STAMP = b"\xff"


def text_bytes(text: Text) -> int:
    """Length of `render(text)`."""
    return tokens_of(text) + 8 * len(text)


def render(text: Text) -> bytes:
    """Bytes standing for the text (see above)."""
    parts: list[bytes | memoryview] = []
    for s, n in text:
        parts.append(_stamp(s))
        parts.append(_zeros(n))
    return b"".join(parts)


_ZEROS = memoryview(bytes(1 << 20))


def _zeros(n: int) -> bytes | memoryview:
    return _ZEROS[:n] if n <= len(_ZEROS) else bytes(n)


@functools.lru_cache(maxsize=65536)
def _stamp(stream: int) -> bytes:
    return _STAMP + stream.to_bytes(7, "little")


# -- the workload ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EngineParams:
    """ds4-server's cache settings (spec §3) and the size and speed model."""

    budget: int = 4096 * MiB  # --kv-disk-space-mb
    min_tokens: int = 512
    cold_max_tokens: int = 30000
    continued_interval: int = 10000
    boundary_trim: int = 32
    boundary_align: int = 2048
    ctx_size: int = 262144
    quant_bits: int = 2
    # Spec §6: ~22.9 MiB + 13.45 KiB per token for DeepSeek V4 Flash.
    size_base: int = int(22.9 * MiB)
    size_per_token: float = 13.45 * KiB
    # Only for timestamps within a request (when each store lands).
    prefill_tps: float = 350.0
    decode_tps: float = 20.0

    @property
    def options(self) -> EngineOptions:
        """These settings as the engine's options (format/engine.py)."""
        return _options(self)

    @property
    def continued_step(self) -> int:
        """Continued checkpoints land at multiples of this (10240 by default)."""
        return self.options.continued_step

    def store_len(self, tokens: int) -> int:
        """The engine's cold length without an anchor: trimmed, aligned down."""
        return self.options.store_len(tokens)

    def size(self, tokens: int) -> int:
        """Bytes of a snapshot of `tokens` tokens."""
        return self.options.size(tokens)


@functools.lru_cache(maxsize=64)
def _options(p: EngineParams) -> EngineOptions:
    return EngineOptions(
        min_tokens=p.min_tokens, cold_max_tokens=p.cold_max_tokens,
        continued_interval=p.continued_interval, boundary_trim=p.boundary_trim,
        boundary_align=p.boundary_align, snapshot_overhead=p.size_base,
        token_bytes=p.size_per_token,
    )  # fmt: skip


@dataclass(frozen=True, slots=True)
class Fork:
    """Start from another session's text just before its turn `turn`."""

    session: str
    turn: int


@dataclass(frozen=True, slots=True)
class Session:
    """One client conversation: `turns` requests, each extending the last."""

    id: str
    start: float
    turns: int = 1
    system: str | None = None  # shared system prompt: the chat anchor is its end
    context: str | None = None  # shared start of the first user message
    first: int = 500  # tokens of the first user message (after `context`)
    user: tuple[int, ...] = (500,)  # tokens of each later user/tool message (cycled)
    reply: tuple[int, ...] = (400,)  # tokens the model generates per turn (cycled)
    gap: tuple[float, ...] = (300.0,)  # seconds between turn arrivals (cycled)
    tools: bool = False  # sampled replies are not sent back verbatim
    fork: Fork | None = None


@dataclass(frozen=True, slots=True)
class Restart:
    """A clean server restart: shutdown save, then start-up eviction.

    With `budget`, the operator lowers (or raises) the engine budget, and
    kvgroomd's, which it applies first (it is running, the engine is not).
    """

    at: float
    budget: int | None = None


@dataclass(frozen=True, slots=True)
class Workload:
    """Everything one simulation replays."""

    name: str
    description: str = ""
    engine: EngineParams = field(default_factory=EngineParams)
    texts: Mapping[str, int] = field(default_factory=dict)
    sessions: tuple[Session, ...] = ()
    restarts: tuple[Restart, ...] = ()
    # kvgroomd's budget is the engine's minus this unless a config sets one:
    # it must stay below the engine's by about one incoming file (spec §3).
    headroom: int | None = None


@dataclass(frozen=True, slots=True)
class Request:
    """One request as the server sees it."""

    at: float
    session: str
    turn: int  # 1-based
    prompt: Text  # what the client sends
    suffix: Text  # what it appended since its previous prompt and reply
    anchor: int  # the chat anchor (end of the system prompt), 0 if none
    reply: Segment  # what the model samples
    tools: bool
    # Token position where the first reply (hence the first tool call) starts
    # in the prompt; len(prompt) before the first reply.
    tools_from: int
    tokens: int  # of the prompt


# -- expansion ---------------------------------------------------------------


def _at(values: tuple[Any, ...], i: int) -> Any:
    return values[i % len(values)]


def requests(w: Workload) -> list[Request]:
    """Every request of the workload in arrival order (ties: session order)."""
    ids = {name: i + 1 for i, name in enumerate(sorted(w.texts))}
    next_id = len(ids) + 1
    # session -> client text before each turn, and where its replies start
    history: dict[str, list[Text]] = {}
    replies_at: dict[str, int | None] = {}
    anchors: dict[str, int] = {}
    out: list[tuple[float, int, Request]] = []
    for order, s in enumerate(_fork_order(w.sessions)):
        calls: int | None = None
        if s.fork is not None:
            base = history[s.fork.session][s.fork.turn - 1]
            anchor = anchors[s.fork.session]
            src = replies_at[s.fork.session]
            calls = src if src is not None and src < tokens_of(base) else None
        else:
            base = ((ids[s.system], w.texts[s.system]),) if s.system else ()
            anchor = w.texts[s.system] if s.system else 0
        anchors[s.id] = anchor
        before: list[Text] = []
        text, at = base, s.start
        for turn in range(1, s.turns + 1):
            before.append(text)
            if turn == 1:
                suffix: Text = ((ids[s.context], w.texts[s.context]),) if s.context else ()
                n = s.first
            else:
                suffix, n = (), _at(s.user, turn - 2)
            if n > 0:
                suffix += ((next_id, n),)
                next_id += 1
            prompt = text + suffix
            reply = (next_id, _at(s.reply, turn - 1))
            next_id += 1
            size = tokens_of(prompt)
            req = Request(
                at=at, session=s.id, turn=turn, prompt=prompt, suffix=suffix, anchor=anchor,
                reply=reply, tools=s.tools, tools_from=size if calls is None else calls,
                tokens=size,
            )  # fmt: skip
            out.append((at, order, req))
            if calls is None and reply[1] > 0:
                calls = size
            # A tool client sends back its own rendering of the reply (tool
            # call JSON, no thinking), never the sampled bytes.
            sent = (next_id, reply[1]) if s.tools else reply
            next_id += 1 if s.tools else 0
            text = prompt + ((sent,) if sent[1] > 0 else ())
            at += _at(s.gap, turn - 1)
        before.append(text)
        history[s.id] = before
        replies_at[s.id] = calls
    out.sort(key=lambda x: (x[0], x[1]))
    return [r for _, _, r in out]


def _fork_order(sessions: Sequence[Session]) -> list[Session]:
    """Sessions with every fork after the session it forks from."""
    by_id = {s.id: s for s in sessions}
    done: dict[str, Session] = {}

    def visit(s: Session, path: tuple[str, ...]) -> None:
        if s.id in done:
            return
        if s.fork is not None:
            if s.fork.session in path:
                raise WorkloadError(f"sessions.{s.id}.fork: forks form a cycle")
            visit(by_id[s.fork.session], (*path, s.id))
        done[s.id] = s

    for s in sessions:
        visit(s, (s.id,))
    return list(done.values())


# -- YAML --------------------------------------------------------------------

_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(d|h|m|s)")
_UNIT = {"d": DAY, "h": HOUR, "m": 60.0, "s": 1.0}


def parse_duration(value: object) -> float:
    """Seconds from a number or a string such as `90s`, `5m`, `1d2h30m`."""
    if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
        return float(value)
    if isinstance(value, str):
        compact = value.replace(" ", "")
        parts = _PART.findall(compact)
        if parts and "".join(n + u for n, u in parts) == compact:
            return sum(float(n) * _UNIT[u] for n, u in parts)
    raise ValueError(f"expected a duration such as 90s, 5m, 6h or 1d2h, got {value!r}")


def load_workload(path: Path | str) -> Workload:
    """Read a workload file (YAML)."""
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except OSError as e:
        raise WorkloadError(f"{p}: cannot read: {e.strerror}") from None
    except yaml.YAMLError as e:
        raise WorkloadError(f"{p}: not valid YAML: {e}") from None
    try:
        return parse_workload(data, default_name=p.stem)
    except WorkloadError as e:
        raise WorkloadError(f"{p}: {e}") from None


_TOP = {"name", "description", "engine", "texts", "sessions", "restarts", "headroom", "generate"}
_ENGINE = {
    "budget": parse_size,
    "min_tokens": int,
    "cold_max_tokens": int,
    "continued_interval": int,
    "boundary_trim": int,
    "boundary_align": int,
    "ctx_size": int,
    "quant_bits": int,
    "size_base": parse_size,
    "size_per_token": parse_size,
    "prefill_tps": float,
    "decode_tps": float,
}
_SESSION = {
    "id",
    "start",
    "turns",
    "system",
    "context",
    "first",
    "user",
    "reply",
    "gap",
    "tools",
    "fork",
    "count",
    "every",
}


def _mapping(v: object, key: str, allowed: set[str] | None = None) -> dict[str, Any]:
    if not isinstance(v, dict) or not all(isinstance(k, str) for k in v):
        raise WorkloadError(f"{key}: expected a mapping of key: value")
    if allowed is not None:
        for k in v:
            if k not in allowed:
                raise WorkloadError(f"{key}.{k}: unknown key (known: {', '.join(sorted(allowed))})")
    return v


def _get(parse: Any, v: object, key: str) -> Any:
    try:
        if parse is int:
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"expected a whole number >= 0, got {v!r}")
            return v
        if parse is float:
            if isinstance(v, bool) or not isinstance(v, int | float) or v <= 0:
                raise ValueError(f"expected a number > 0, got {v!r}")
            return float(v)
        if parse is bool:
            if not isinstance(v, bool):
                raise ValueError(f"expected true or false, got {v!r}")
            return v
        if parse is str:
            if not isinstance(v, str) or not v:
                raise ValueError(f"expected a name, got {v!r}")
            return v
        return parse(v)
    except ValueError as e:
        raise WorkloadError(f"{key}: {e}") from None


def _several(parse: Any, v: object, key: str) -> tuple[Any, ...]:
    """One value or a non-empty list of them (used in turn order, cycled)."""
    if isinstance(v, list):
        if not v:
            raise WorkloadError(f"{key}: expected a value or a non-empty list")
        return tuple(_get(parse, x, f"{key}[{i}]") for i, x in enumerate(v))
    return (_get(parse, v, key),)


def parse_workload(data: object, default_name: str = "workload") -> Workload:
    """A Workload from parsed YAML, or WorkloadError naming the bad key."""
    top = _mapping(data, "workload", _TOP)
    engine = EngineParams()
    if "engine" in top:
        e = _mapping(top["engine"], "engine", set(_ENGINE))
        engine = replace(engine, **{k: _get(_ENGINE[k], v, f"engine.{k}") for k, v in e.items()})
    name = _get(str, top.get("name", default_name), "name")
    description = str(top.get("description", ""))
    headroom = _get(parse_size, top["headroom"], "headroom") if "headroom" in top else None
    restarts = _restarts(top.get("restarts", []))
    if "generate" in top:
        g = _mapping(top["generate"], "generate", {"kind", "seed", "days"})
        if g.get("kind") != "mixed-month":
            raise WorkloadError(f"generate.kind: expected mixed-month, got {g.get('kind')!r}")
        for k in ("texts", "sessions"):
            if k in top:
                raise WorkloadError(f"{k}: not allowed with generate (the generator makes them)")
        w = mixed_month(
            seed=_get(int, g.get("seed", 1), "generate.seed"),
            days=_get(int, g.get("days", 30), "generate.days"),
            engine=engine if "engine" in top else None,
        )
        merged = tuple(sorted((*w.restarts, *restarts), key=lambda r: r.at))
        return replace(
            w,
            name=name,
            description=description or w.description,
            headroom=headroom,
            restarts=merged,
        )
    texts_raw = _mapping(top.get("texts", {}), "texts")
    texts = {k: _get(int, v, f"texts.{k}") for k, v in texts_raw.items()}
    sessions = _sessions(top.get("sessions", []), texts)
    return Workload(name, description, engine, texts, sessions, restarts, headroom)


def _sessions(raw: object, texts: Mapping[str, int]) -> tuple[Session, ...]:
    if not isinstance(raw, list):
        raise WorkloadError("sessions: expected a list")
    out = [s for i, item in enumerate(raw) for s in _session(item, f"sessions[{i}]", texts)]
    by_id: dict[str, Session] = {}
    for s in out:
        if s.id in by_id:
            raise WorkloadError(f"sessions.{s.id}: id given twice")
        by_id[s.id] = s
    for s in out:
        if s.fork is None:
            continue
        src = by_id.get(s.fork.session)
        if src is None:
            raise WorkloadError(f"sessions.{s.id}.fork.session: no session {s.fork.session!r}")
        if not 1 <= s.fork.turn <= src.turns + 1:
            raise WorkloadError(
                f"sessions.{s.id}.fork.turn: {s.fork.session} has {src.turns} turns"
            )
    return tuple(out)


def _session(item: object, where: str, texts: Mapping[str, int]) -> list[Session]:
    """One `sessions:` entry: a session, or `count` of them `every` apart."""
    s = _mapping(item, where, _SESSION)
    if "id" not in s:
        raise WorkloadError(f"{where}.id: required")
    sid = _get(str, s["id"], f"{where}.id")
    key = f"sessions.{sid}"
    fields: dict[str, Any] = {
        "id": sid,
        "start": _get(parse_duration, s.get("start", 0), f"{key}.start"),
    }
    one: tuple[tuple[str, Any], ...] = (("turns", int), ("first", int), ("tools", bool))
    for k, parse in one:
        if k in s:
            fields[k] = _get(parse, s[k], f"{key}.{k}")
    several: tuple[tuple[str, Any], ...] = (("user", int), ("reply", int), ("gap", parse_duration))
    for k, parse in several:
        if k in s:
            fields[k] = _several(parse, s[k], f"{key}.{k}")
    for k in ("system", "context"):
        if k in s:
            ref = _get(str, s[k], f"{key}.{k}")
            if ref not in texts:
                raise WorkloadError(f"{key}.{k}: no text named {ref!r} under texts")
            fields[k] = ref
    if "fork" in s:
        f = _mapping(s["fork"], f"{key}.fork", {"session", "turn"})
        if "system" in s:
            raise WorkloadError(f"{key}.system: a fork inherits its source's text")
        fields["fork"] = Fork(
            _get(str, f.get("session"), f"{key}.fork.session"),
            _get(int, f.get("turn", 1), f"{key}.fork.turn"),
        )
    if fields.get("turns", 1) < 1:
        raise WorkloadError(f"{key}.turns: expected at least 1")
    count = _get(int, s.get("count", 1), f"{key}.count")
    every = _get(parse_duration, s.get("every", 0), f"{key}.every")
    base = Session(**fields)
    if count == 1:
        return [base]
    return [replace(base, id=f"{sid}.{j}", start=base.start + j * every) for j in range(count)]


def _restarts(raw: object) -> tuple[Restart, ...]:
    if not isinstance(raw, list):
        raise WorkloadError("restarts: expected a list")
    out = []
    for i, item in enumerate(raw):
        key = f"restarts[{i}]"
        if isinstance(item, dict):
            r = _mapping(item, key, {"at", "budget"})
            if "at" not in r:
                raise WorkloadError(f"{key}.at: required")
            budget = _get(parse_size, r["budget"], f"{key}.budget") if "budget" in r else None
            out.append(Restart(_get(parse_duration, r["at"], f"{key}.at"), budget))
        else:
            out.append(Restart(_get(parse_duration, item, key)))
    return tuple(sorted(out, key=lambda r: r.at))


# -- the mixed month ---------------------------------------------------------


def mixed_month(seed: int = 1, days: int = 30, engine: EngineParams | None = None) -> Workload:
    """A seeded month of one developer's use of a shared ds4-server.

    Weekdays: three to six tool-calling agent sessions on a shared 12k-token
    system prompt (8-45 turns, 20-85k tokens, overlapping so the live session
    switches), four to ten chats on a 533-token system prompt (30% resumed
    hours or days later, 20% of the longer ones forked by an edited message),
    and up to two long one-shot prompts over 16-105k-token documents (40% of
    them on a document seen before). Weekends are mostly idle. The server
    restarts three times.
    """
    rng = random.Random(seed)
    eng = engine or EngineParams(budget=16 * 1024 * MiB)
    texts = {"agent-sys": 12_000, "chat-sys": 533}
    sessions: list[Session] = []
    n = 0

    def sid(kind: str) -> str:
        nonlocal n
        n += 1
        return f"{kind}-{n}"

    docs: list[str] = []  # documents seen so far, to be asked about again
    for day in range(days):
        base = day * DAY
        weekend = day % 7 in (5, 6)
        if weekend and rng.random() < 0.7:
            continue
        work = (9 * HOUR, 19 * HOUR)
        # Agent work: a few sessions a day, overlapping (two terminals).
        for _ in range(rng.randint(1, 2) if weekend else rng.randint(3, 6)):
            turns = rng.randint(8, 45)
            sessions.append(
                Session(
                    id=sid("agent"),
                    start=base + rng.uniform(*work),
                    turns=turns,
                    system="agent-sys",
                    first=rng.randint(300, 2500),
                    user=tuple(rng.choice((200, 400, 800, 1500, 3000)) for _ in range(turns)),
                    reply=tuple(rng.randint(80, 700) for _ in range(turns)),
                    gap=tuple(rng.uniform(20, 150) for _ in range(turns)),
                    tools=True,
                )
            )
        # Chats: short conversations with a small shared system prompt.
        for _ in range(rng.randint(1, 3) if weekend else rng.randint(4, 10)):
            turns = rng.randint(1, 8)
            s = Session(
                id=sid("chat"),
                start=base + rng.uniform(8 * HOUR, 23 * HOUR),
                turns=turns,
                system="chat-sys",
                first=rng.randint(100, 1500),
                user=(rng.randint(50, 600),),
                reply=tuple(rng.randint(150, 1200) for _ in range(turns)),
                gap=tuple(rng.uniform(60, 900) for _ in range(turns)),
            )
            sessions.append(s)
            # Resumed later the same day or days later (the user comes back).
            if rng.random() < 0.3:
                back = rng.choice((2 * HOUR, 6 * HOUR, DAY, 2 * DAY, 4 * DAY))
                sessions.append(
                    Session(
                        id=sid("resume"),
                        start=s.start + turns * 900 + back,
                        turns=rng.randint(1, 4),
                        fork=Fork(s.id, s.turns + 1),
                        user=(rng.randint(50, 600),),
                        first=rng.randint(50, 600),
                        reply=(rng.randint(150, 1000),),
                        gap=(rng.uniform(60, 600),),
                    )
                )
            # An edit: the user rewrites a message and the chat diverges.
            if turns >= 3 and rng.random() < 0.2:
                at = rng.randint(2, turns)
                sessions.append(
                    Session(
                        id=sid("edit"),
                        start=s.start + at * 900 + 60,
                        turns=rng.randint(1, 3),
                        fork=Fork(s.id, at),
                        first=rng.randint(50, 600),
                        user=(rng.randint(50, 600),),
                        reply=(rng.randint(150, 1000),),
                        gap=(300.0,),
                    )
                )
        # Long one-shot prompts over a document, sometimes asked about again.
        for _ in range(0 if weekend else rng.randint(0, 2)):
            if docs and rng.random() < 0.4:
                doc = rng.choice(docs)
            else:
                doc = f"doc-{len(docs) + 1}"
                texts[doc] = rng.choice((16_000, 24_000, 40_000, 60_000, 105_000))
                docs.append(doc)
            sessions.append(
                Session(
                    id=sid("oneshot"),
                    start=base + rng.uniform(*work),
                    turns=rng.randint(1, 2),
                    context=doc,
                    first=rng.randint(50, 300),
                    user=(rng.randint(50, 300),),
                    reply=(rng.randint(300, 1500),),
                    gap=(600.0,),
                )
            )
    restarts = tuple(
        Restart(d * DAY + rng.uniform(12 * HOUR, 20 * HOUR))
        for d in sorted(rng.sample(range(days), k=min(3, days)))
    )
    return Workload(
        name="mixed-month",
        description=f"seeded mixed month of agent, chat and one-shot use (seed {seed}, {days} d)",
        engine=eng,
        texts=texts,
        sessions=tuple(sessions),
        restarts=restarts,
    )
