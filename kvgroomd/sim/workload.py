"""Workloads for the simulator: YAML -> frozen values -> a list of requests.

Pure (the one loader reads a file). A workload describes what clients send to
ds4-server over time: sessions of turns that share system prompts or documents,
grow turn by turn, diverge (fork) from another session, or call tools (whose
sampled replies the client never sends back verbatim), plus server restarts
and budget changes. `requests()` expands it into the exact prompt of every
request, as segments of abstract tokens, so the replay never handles real text.

Texts are tuples of segments of token streams (`kvgroomd.sim.texts`).
Generated workloads (`generate:`) come from `kvgroomd.sim.generate`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from kvgroomd.config import parse_duration, parse_size
from kvgroomd.sim.engine import EngineParams
from kvgroomd.sim.server import Turn
from kvgroomd.sim.texts import EMPTY, Segment, SegText, Text, tokens_of

DAY = 86400.0
HOUR = 3600.0

class WorkloadError(ValueError):
    """A workload file problem, naming the key it concerns."""


# -- the workload ------------------------------------------------------------


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

    def as_turn(self) -> Turn[SegText]:
        """This request for the server model."""
        return Turn(
            self.session, self.turn, SegText(self.prompt, self.tokens),
            SegText((self.reply,), self.reply[1]) if self.reply[1] > 0 else EMPTY,
            SegText(self.suffix), self.anchor, self.tools, self.tools_from,
        )  # fmt: skip


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
def _boolean(v: object) -> bool:
    if not isinstance(v, bool):
        raise ValueError(f"expected true or false, got {v!r}")
    return v


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
    "compression": _boolean,
    "compression_ratio": float,
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
        from kvgroomd.sim.generate import generate  # noqa: PLC0415 - the generators import this

        for k in ("texts", "sessions"):
            if k in top:
                raise WorkloadError(f"{k}: not allowed with generate (the generator makes them)")
        w = generate(_mapping(top["generate"], "generate"), engine if "engine" in top else None)
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


def scale_time(w: Workload, k: float) -> Workload:
    """The same traffic `k` times slower (k < 1: faster): every arrival, gap
    and restart time multiplied by k, prefill and generation speeds divided."""
    sessions = tuple(replace(s, start=s.start * k, gap=tuple(g * k for g in s.gap))
                     for s in w.sessions)  # fmt: skip
    restarts = tuple(replace(r, at=r.at * k) for r in w.restarts)
    engine = replace(w.engine, prefill_tps=w.engine.prefill_tps / k,
                     decode_tps=w.engine.decode_tps / k)  # fmt: skip
    return replace(w, sessions=sessions, restarts=restarts, engine=engine)
