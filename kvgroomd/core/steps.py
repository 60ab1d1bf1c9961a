"""What the decision core takes and gives: its rules, its text source, its steps.

Pure values and one protocol, shared by the core (core/groomer.py) and the
shells that drive it (daemon/groom.py, sim/groom.py, ops).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from kvgroomd.core.decision import Decision
from kvgroomd.core.facts import Loaded
from kvgroomd.core.index import Snapshot
from kvgroomd.core.scoring import DEFAULT_POLICY


class Texts(Protocol):
    """Where the core gets texts: the daemon reads files, the simulator its memory."""

    def text(self, snap: Snapshot) -> bytes | None:
        """The whole text of `snap`, if the file is still that version."""

    def texts(self, names: npt.NDArray[np.bytes_], lengths: npt.NDArray[np.integer[Any]],
              offsets: npt.NDArray[np.integer[Any]]) -> Iterator[bytes | None]:  # fmt: skip
        """`lengths[i]` text bytes of each file from byte `offsets[i]` (its
        layout's: format/layouts.text_offsets), in order (None: gone or
        short). Callers prove what a text is by its SHA-1, so no version check."""

    def heads(self, names: npt.NDArray[np.bytes_]) -> Loaded:
        """Headers and text heads of many files again (their prefix probes)."""


@dataclass(frozen=True, slots=True)
class Rules:
    """What the core is told by the configuration (config.Config.rules())."""

    supersede: bool = True
    strict_quant: bool = False  # the engine runs with --kv-cache-reject-different-quant
    budget: int | None = None  # a cap on usage, bytes
    engine_budget: int | None = None  # the engine's --kv-disk-space-mb, bytes
    low_watermark: float = 0.9
    protect_new: float = 0.0
    policy: str = DEFAULT_POLICY
    policy_params: Mapping[str, float] = field(default_factory=dict)
    dry_run: bool = False
    orphan_temps: bool = False
    orphan_temp_age: float = 3600.0
    stale_format: bool = False
    # The engine's --kv-cache-cold-max-tokens: a file above it leaves when it
    # is hit (consumed), which the headroom must not take for an eviction.
    cold_max_tokens: int = 30000
    # Note every prefix relation proven (events.EXTENDS), with or without
    # supersession: the activity trace records them (daemon/trace.py).
    prefixes: bool = False


@dataclass(frozen=True, slots=True)
class Note:
    """A fact for the log: an event name (events.py), its level and fields.
    A `name` field is a file name in the directory (the shell adds its path)."""

    event: str
    level: str  # debug | info | warning
    fields: dict[str, Any]


@dataclass
class Step:
    """What one event leads to: notes to log first, then decisions to apply
    in order (settling each before the next)."""

    decisions: list[Decision] = field(default_factory=list)
    notes: list[Note] = field(default_factory=list)

    def __iadd__(self, other: Step) -> Step:
        self.decisions += other.decisions
        self.notes += other.notes
        return self


@dataclass(frozen=True, slots=True)
class Repairs:
    """What a rescan found different from the index."""

    added: int
    changed: int
    gone: int

    @property
    def total(self) -> int:
        """Every repair."""
        return self.added + self.changed + self.gone
