"""The Config value: everything kvgroomd can be told, with its defaults
(defaults live only here), and what the decision core gets of it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from kvgroomd.core.groomer import Rules
from kvgroomd.core.scoring import DEFAULT_POLICY, POLICIES
from kvgroomd.format.engine import EngineOptions
from kvgroomd.format.layouts import Reading

TRACE_MAX_SIZE = 256 * 2**20  # all of a trace's files together, by default
TRACE_SEGMENTS = 4  # files a trace rotates through (the current one included)
TRACE_DEFAULT_PATH = Path("trace.jsonl")  # `trace: true`: in the state directory


@dataclass(frozen=True, slots=True)
class TraceSettings:
    """The `trace:` block: where the daemon records the cache's activity
    (daemon/trace.py) and how much of it it keeps."""

    path: Path  # a relative path is under kvgroomd's state directory ($STATE_DIRECTORY)
    max_size: int = TRACE_MAX_SIZE  # bytes, every segment together
    segments: int = TRACE_SEGMENTS  # path, path.1, ..., path.<segments - 1>


@dataclass(frozen=True, slots=True)
class Config:
    """Everything kvgroomd can be told. See config.example.yaml."""

    cache_dir: Path
    budget: int | None = None  # bytes; None: no budget eviction
    # The engine's --kv-disk-space-mb, in bytes (None: not given).
    engine_budget: int | None = None
    # The engine's other cache flags (format/engine.py), the `engine:` block.
    engine: EngineOptions = field(default_factory=EngineOptions)
    # Snapshots of layouts the named engine does not read: counted and
    # evicted like its own (True), or reported apart and left alone.
    evict_other_layouts: bool = False
    low_watermark: float = 0.9
    protect_new: float = 0.0  # seconds (0: the value alone decides; core/evict.py)
    policy: str = DEFAULT_POLICY
    policy_params: Mapping[str, float] = field(default_factory=dict)
    supersede: bool = True
    reconcile_interval: float = 300.0  # seconds
    dry_run: bool = False
    log_format: str = "auto"  # auto | json | console
    log_level: str = "info"
    orphan_temps: bool = False
    orphan_temp_age: float = 3600.0
    stale_format: bool = False
    metrics_textfile: Path | None = None
    metrics_listen: str | None = None  # "127.0.0.1:9101"
    trace: TraceSettings | None = None  # the activity trace; None: off
    # What the file says that still works but should change (a moved key):
    # check-config prints these, the daemon logs them at start.
    warnings: tuple[str, ...] = ()

    @property
    def reading(self) -> Reading:
        """How to read the directory's files: the engine's layout (format/layouts.py)."""
        return Reading(self.engine.layout, self.evict_other_layouts)

    @property
    def reject_different_quant(self) -> bool:
        """The engine runs with --kv-cache-reject-different-quant (`engine:` block)."""
        return self.engine.reject_different_quant

    def rules(self) -> Rules:
        """What the decision core needs of this config."""
        return Rules(
            supersede=self.supersede, strict_quant=self.reject_different_quant,
            budget=self.budget, engine_budget=self.engine_budget,
            low_watermark=self.low_watermark, protect_new=self.protect_new, policy=self.policy,
            policy_params=self._policy_params(), dry_run=self.dry_run,
            orphan_temps=self.orphan_temps, orphan_temp_age=self.orphan_temp_age,
            stale_format=self.stale_format, cold_max_tokens=self.engine.cold_max_tokens,
            prefixes=self.trace is not None,
        )  # fmt: skip

    def _policy_params(self) -> dict[str, float]:
        """The policy's parameters; one that mirrors an engine option (the
        tokens over which a hit consumes a file) follows the `engine:` block
        unless the policy block sets it."""
        params = dict(self.policy_params)
        if "consume_tokens" in POLICIES[self.policy].defaults:
            params.setdefault("consume_tokens", float(self.engine.cold_max_tokens))
        return params

    def effective(self) -> dict[str, Any]:
        """The config as plain data, for `check-config` and the start-up log."""
        out = asdict(self)
        del out["warnings"]
        out["cache_dir"] = str(self.cache_dir)
        out["metrics_textfile"] = str(self.metrics_textfile) if self.metrics_textfile else None
        if self.trace is not None:
            out["trace"] = {**out["trace"], "path": str(self.trace.path)}
        out["policy_params"] = {**POLICIES[self.policy].defaults, **self._policy_params()}
        return out

    def with_overrides(self, **changes: Any) -> Config:
        """A copy with CLI overrides applied (None means "not given")."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

