"""Supersession over one index: which snapshots a text strictly extends.

Pure. Two ways in, one rule (core/supersede.py): a file that lands is
checked against the candidates its prefix keys name (`landing`), and a sweep
proves every pair across the index (`sweep`: files that landed while nobody
watched, arrivals out of order). Both mark the proven shorter files
`covered` (the policy's fact) and, when supersession is on, return the
decisions for those the rule lets go; the decision core (groomer.py) holds
them in its ledger. A sweep is skipped while nothing was added, replaced or
removed since the last one (`due`).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from kvgroomd import events
from kvgroomd.core.decision import Cause, Decision
from kvgroomd.core.index import Index, Snapshot, decide_rows
from kvgroomd.core.steps import Note, Texts
from kvgroomd.core.supersede import (
    CHAIN_REASONS,
    Probes,
    candidate_rows,
    prove,
    superseding,
    sweep_pairs_flat,
)
from kvgroomd.format.layouts import text_offsets

Rows = npt.NDArray[np.intp]
_CHAIN_CODES = np.array([int(r) for r in CHAIN_REASONS])


class Chains:
    """The supersession state of one index: the generation last swept."""

    def __init__(self, index: Index) -> None:
        self.index = index
        self._swept = -1  # index generation at the end of the last sweep

    @property
    def due(self) -> bool:
        """Whether a sweep could find anything new (the index changed since)."""
        return self.index.generation != self._swept

    def again(self) -> None:
        """Sweep at the next chance, changed or not (an unlink did not go as
        decided: its file is judged again)."""
        self._swept = -1

    def landing(self, new: Snapshot, text: bytes, now: float, *, strict_quant: bool,
                supersede: bool, notes: bool,
                ) -> tuple[list[Decision], list[Note], list[str]]:  # fmt: skip
        """Prove which indexed files `new`'s text strictly extends; mark them
        covered and decide the superseded ones (`supersede`); `notes`: an
        EXTENDS note for what it extends (the activity trace wants them).
        Also returns the names of the files it extends, longest first."""
        index = self.index
        row = index.row_of(new.name)
        if new.header.reason not in CHAIN_REASONS or row is None:
            return [], [], []
        cands = candidate_rows(index, row, text, strict_quant=strict_quant)
        if not len(cands):
            return [], [], []
        cols = index.columns()
        proven = prove(cols, np.array([row]), np.array([0, len(cands)]), cands, [text])
        covered = cands[proven]
        longest = np.argsort(-cols["text_bytes"][covered].astype(np.int64), kind="stable")
        extends = index.names_at(covered[longest])
        out = self._extends(np.full(len(covered), row), covered) if notes else []
        if not supersede:
            return [], out, extends
        index.set_column("covered", covered, True)
        go = covered[superseding(cols, np.full(len(covered), row), covered)]
        return self._decide(go, np.full(len(go), row), now), out, extends

    def sweep(self, texts: Texts, now: float, *, strict_quant: bool, supersede: bool,
              notes: bool, probes: Probes | None = None,
              ) -> tuple[list[Decision], list[Note]]:  # fmt: skip
        """Apply the rule across everything indexed. Without `probes` the
        heads of the indexed texts are read again to get them."""
        index = self.index
        pairs_n, pairs_o = self.pairs(texts, strict_quant=strict_quant, probes=probes)
        out = self._extends(pairs_n, pairs_o) if notes else []
        decisions: list[Decision] = []
        if supersede:
            cols = index.columns()
            # Covered flags go on before any decision moves a row; a file whose
            # longer twin is superseded stays covered by what superseded the
            # twin (its pair is proven too: prefixes and compatibility are
            # transitive).
            covered = np.zeros(len(index), dtype=bool)
            covered[pairs_o] = True
            index.set_column("covered", np.arange(len(index)), covered)
            go = superseding(cols, pairs_n, pairs_o)
            if go.any():
                # Longest N first, as the pairs come; each O goes once, naming
                # the longest file that supersedes it.
                olds, first = np.unique(pairs_o[go], return_index=True)
                by = pairs_n[go][first]
                order = np.argsort(first, kind="stable")
                decisions = self._decide(olds[order], by[order], now)
        self._swept = index.generation
        return decisions, out

    def pairs(self, texts: Texts, *, strict_quant: bool,
              probes: Probes | None = None) -> tuple[Rows, Rows]:  # fmt: skip
        """Every proven (N row, O row) pair of the index: O's text is a strict
        prefix of N's and N can stand in for O. Longest N first, then O by row.
        What a sweep acts on, and what `ls` shows as chains."""
        index = self.index
        if probes is None:
            probes = self._probes(texts)
        n_rows, bounds, o_rows = sweep_pairs_flat(index, probes, strict_quant=strict_quant)
        cols = index.columns()
        n_texts = texts.texts(index.names_array(n_rows), cols["text_bytes"][n_rows],
                              text_offsets(cols["layout"][n_rows]))  # fmt: skip
        proven = prove(cols, n_rows, bounds, o_rows, n_texts)
        return np.repeat(n_rows, np.diff(bounds))[proven], o_rows[proven]

    def _probes(self, texts: Texts) -> Probes:
        """Prefix probes of every indexed chain snapshot, from a fresh read of
        each file's head (a file replaced since it was indexed gives none)."""
        index = self.index
        cols = index.columns()
        rows = np.flatnonzero(np.isin(cols["reason"], _CHAIN_CODES))
        loaded = texts.heads(index.names_array(rows))
        cols = index.columns()
        at = index.rows_of(loaded.names)
        same = at >= 0
        same[same] = ((cols["dev"][at[same]] == loaded.rows["dev"][same])
                      & (cols["ino"][at[same]] == loaded.rows["ino"][same]))  # fmt: skip
        keep = same[loaded.probe_rows]
        return at[loaded.probe_rows[keep]], loaded.probe_keys[keep]

    def _extends(self, n_rows: Rows, o_rows: Rows) -> list[Note]:
        """One EXTENDS note per N of proven (N, O) pairs (grouped by N, as
        they come): N's text strictly extends each O's."""
        if not len(n_rows):
            return []
        starts = np.flatnonzero(np.concatenate(([True], n_rows[1:] != n_rows[:-1])))
        ends = np.append(starts[1:], len(n_rows))
        n_names = self.index.names_at(n_rows[starts])
        o_names = self.index.names_at(o_rows)
        return [Note(events.EXTENDS, "debug", {"name": n, "extends": o_names[a:b]})
                for n, a, b in zip(n_names, starts.tolist(), ends.tolist(), strict=True)]

    def _decide(self, olds: Rows, by: Rows, now: float) -> list[Decision]:
        """Supersession decisions for rows `olds`, each superseded by row `by[i]`."""
        cols = self.index.columns()
        by_sha = [n[:40].lower() for n in self.index.names_at(by)]
        return decide_rows(self.index, olds, Cause.SUPERSEDED, now,
                           superseded_by=np.array(by_sha),
                           superseded_by_tokens=cols["tokens"][by])  # fmt: skip


def joined(found: list[Probes]) -> Probes:
    """The probes of several parts as one (index rows, keys) pair."""
    if len(found) == 1:
        return found[0]
    if not found:
        return np.zeros(0, dtype=np.int32), np.zeros(0, dtype=np.uint32)
    return (np.concatenate([f[0] for f in found]), np.concatenate([f[1] for f in found]))
