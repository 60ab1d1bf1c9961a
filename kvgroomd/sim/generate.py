"""`generate:` in a workload file: a seeded generator instead of sessions.

Pure. Kinds: `mixed-month` (seed, days), `interleaved` (seed, pace, and any
field of `agents.Interleaved`) and every adversarial generator of
`agents.ADVERSARIAL` (seed, pace).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml

from kvgroomd.sim.agents import ADVERSARIAL, PACES, Interleaved, interleaved, interleaved_params
from kvgroomd.sim.engine import EngineParams
from kvgroomd.sim.month import mixed_month
from kvgroomd.sim.workload import Workload, WorkloadError, load_workload, parse_workload

KINDS = ("mixed-month", "interleaved", *ADVERSARIAL)


def generate(g: Mapping[str, Any], engine: EngineParams | None) -> Workload:
    """The workload `g` asks for; `engine` (when the file has `engine:`) overrides
    the generator's engine settings."""
    kind = g.get("kind")
    if kind not in KINDS:
        raise WorkloadError(f"generate.kind: expected one of {', '.join(KINDS)}, got {kind!r}")
    seed = g.get("seed", 1)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise WorkloadError(f"generate.seed: expected a whole number, got {seed!r}")
    rest = {k: v for k, v in g.items() if k not in ("kind", "seed")}
    if kind == "mixed-month":
        days = rest.pop("days", 30)
        _no_more(rest, kind)
        if isinstance(days, bool) or not isinstance(days, int) or days < 1:
            raise WorkloadError(f"generate.days: expected a whole number >= 1, got {days!r}")
        return mixed_month(seed=seed, days=days, engine=engine)
    pace = rest.pop("pace", "instant")
    if pace not in PACES:
        raise WorkloadError(f"generate.pace: expected one of {', '.join(PACES)}, got {pace!r}")
    if kind == "interleaved":
        known = set(Interleaved.__dataclass_fields__)
        for k in rest:
            if k not in known:
                known_keys = ", ".join(sorted(known))
                raise WorkloadError(f"generate.{k}: unknown key (known: {known_keys})")
        try:
            p = interleaved_params(dict(rest))
        except (TypeError, ValueError) as e:
            raise WorkloadError(f"generate: {e}") from None
        return interleaved(seed, p, engine, pace)
    _no_more(rest, kind)
    return ADVERSARIAL[kind](seed, engine, pace)


def _no_more(rest: Mapping[str, Any], kind: str) -> None:
    for k in rest:
        raise WorkloadError(f"generate.{k}: not a setting of {kind}")


def load_source(source: str, seed: int | None, pace: str | None, budget: int | None) -> Workload:
    """A workload file, or a generator named by its kind; `seed` and `pace`
    replace the generator's, `budget` the engine's. Reads a file (the one
    impure function here)."""
    path = Path(source)
    if source in KINDS and not path.exists():
        data: Any = {"name": source, "generate": {"kind": source}}
    elif seed is None and pace is None:
        w = load_workload(path)
        return w if budget is None else replace(w, engine=replace(w.engine, budget=budget))
    else:
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except OSError as e:
            raise WorkloadError(f"{path}: cannot read: {e.strerror}") from None
        if not isinstance(data, dict) or not isinstance(data.get("generate"), dict):
            raise WorkloadError(f"{path}: --seeds and --pace need a generated workload "
                                "(`generate:`)")  # fmt: skip
        data = {**data, "generate": dict(data["generate"])}
        data.setdefault("name", path.stem)
    if seed is not None:
        data["generate"]["seed"] = seed
    if pace is not None:
        data["generate"]["pace"] = pace
    w = parse_workload(data, default_name=str(data.get("name", "workload")))
    return w if budget is None else replace(w, engine=replace(w.engine, budget=budget))
