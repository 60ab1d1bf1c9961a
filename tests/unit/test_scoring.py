"""Tests for kvgroomd.core.scoring: the engine's score and the default policy."""

from __future__ import annotations

import re
import time
from pathlib import Path

import numpy as np
import pytest

from kvgroomd.core.index import ROW, Columns
from kvgroomd.core.scoring import DAY, DEFAULT_POLICY, HOUR, POLICIES, PREFILL_DEFAULTS, Clock
from kvgroomd.format.header import EXT_TOOL_MAP, Reason

MiB = 1 << 20
NOW = 1_800_000_000.0
DOCS = Path(__file__).resolve().parents[2] / "docs" / "policy.md"


def size_of(tokens: int) -> int:
    """Spec §6 size model: 22.9 MiB + 13.45 KiB per token."""
    return int(22.9 * MiB + 13.45 * 1024 * tokens)


def cols(*rows: dict[str, object]) -> Columns:
    """Columns from partial rows: a fresh, current-ABI snapshot unless told."""
    out = np.zeros(len(rows), dtype=ROW)
    for i, r in enumerate(rows):
        tokens = int(r.get("tokens", 10240))  # type: ignore[call-overload]
        out[i]["tokens"] = tokens
        out[i]["size"] = r.get("size", size_of(tokens))
        out[i]["created_at"] = r.get("created_at", NOW)
        out[i]["last_used"] = r.get("last_used", out[i]["created_at"])
        out[i]["reason"] = int(r.get("reason", Reason.CONTINUED))  # type: ignore[call-overload]
        out[i]["abi"] = r.get("abi", 2)
        for key in ("hits", "ext_flags", "covered", "act", "head", "sib_used", "sib_unused"):
            if key in r:
                out[i][key] = r[key]
    return out


def prefill(c: Columns, **params: float) -> np.ndarray:
    """The default policy's values for `c` at NOW."""
    return POLICIES["prefill"].score(c, Clock(NOW), params)


class TestEngineScore:
    """The "ds4" policy reproduces the engine's own eviction score (spec §3)."""

    def test_formula(self) -> None:
        """A never-hit continued file scores tokens / size."""
        c = cols({"tokens": 10240})
        assert POLICIES["ds4"].score(c, Clock(NOW))[0] == pytest.approx(10240 / size_of(10240))

    def test_checkpoint_reasons_doubled(self) -> None:
        """Cold, evict and shutdown files score twice a continued one of the same size."""
        c = cols(
            *({"reason": r} for r in (Reason.CONTINUED, Reason.COLD, Reason.EVICT, Reason.SHUTDOWN))
        )
        s = POLICIES["ds4"].score(c, Clock(NOW))
        assert s[1:] == pytest.approx([2 * s[0]] * 3)

    def test_hits_halve_every_six_hours(self) -> None:
        """Two hits last used six hours ago count as one: the score doubles."""
        c = cols({"hits": 2, "last_used": NOW - 6 * HOUR}, {})
        s = POLICIES["ds4"].score(c, Clock(NOW))
        assert s[0] == pytest.approx(2 * s[1])

    def test_faded_hits_count_zero(self) -> None:
        """Hits decayed below 0.01 are ignored, as in the engine."""
        c = cols({"hits": 1, "last_used": NOW - 48 * HOUR}, {})
        s = POLICIES["ds4"].score(c, Clock(NOW))
        assert s[0] == s[1]


class TestPrefillPolicy:
    """The default policy values a file by the prefill it is expected to save
    per byte, with idleness on the cache's own clock (bytes landed)."""

    def test_is_the_default(self) -> None:
        """The daemon's default policy is "prefill"."""
        assert DEFAULT_POLICY == "prefill"

    def test_hits_raise_value(self) -> None:
        """A file hit three times is worth more than the same file never hit."""
        v = prefill(cols({"hits": 3}, {}))
        assert v[0] > v[1]

    def test_idle_is_measured_in_turnovers(self) -> None:
        """A file last used `idle_half_turnovers` turnovers ago (a turnover: as
        many bytes landed since as the cache holds) is worth half a file used
        just now."""
        half = PREFILL_DEFAULTS["idle_half_turnovers"]
        since = int(half * 2 * size_of(10240))  # two files held
        c = cols({"act": 0}, {"act": since})
        v = POLICIES["prefill"].score(c, Clock(NOW, activity=since))
        assert v[0] == pytest.approx(0.5 * v[1])

    def test_wall_time_does_not_matter(self) -> None:
        """Days of wall time with no activity change nothing; the same activity
        at any pace gives the same values."""
        c = cols({"act": 100, "hits": 2}, {"act": 5000, "reason": Reason.EVICT})
        now = POLICIES["prefill"].score(c, Clock(NOW, activity=9000))
        later = POLICIES["prefill"].score(c, Clock(NOW + 30 * DAY, activity=9000))
        assert now.tolist() == later.tolist()

    def test_the_conversation_just_left_comes_first(self) -> None:
        """Of two conversation saves on a hit anchor, the one switched away
        from last is worth more."""
        anchor = {"reason": Reason.COLD, "tokens": 5000, "hits": 9, "head": 7, "act": 0}
        c = cols(anchor, {"reason": Reason.EVICT, "tokens": 12000, "head": 7, "act": 10**9},
                 {"reason": Reason.EVICT, "tokens": 12000, "head": 7, "act": 2 * 10**9})  # fmt: skip
        v = POLICIES["prefill"].score(c, Clock(NOW, activity=2 * 10**9))
        assert v[2] > v[1]

    def test_a_big_never_hit_stranger_ranks_below_hit_anchors_and_fresh_saves(self) -> None:
        """A save that shares no text family with anything hit and was never
        hit itself (a one-shot document) is worth less per byte than a hit
        anchor and than a fresh conversation save, however big it is."""
        c = cols({"reason": Reason.COLD, "tokens": 5000, "hits": 3, "head": 1},
                 {"reason": Reason.EVICT, "tokens": 9000, "head": 1},
                 {"reason": Reason.EVICT, "tokens": 60000, "head": 2})  # fmt: skip
        v = prefill(c)
        assert v[2] < v[0] and v[2] < v[1]

    def test_shared_anchors_are_worth_the_most_per_byte(self) -> None:
        """An anchor hit by many conversations outranks a fresh conversation save."""
        c = cols({"reason": Reason.COLD, "tokens": 5000, "hits": 20, "head": 1},
                 {"reason": Reason.EVICT, "tokens": 9000, "head": 1})  # fmt: skip
        v = prefill(c)
        assert v[0] > 10 * v[1]

    def test_anchor_above_whole_prompt_cold(self) -> None:
        """A cold anchor (unaligned length) outranks a whole-prompt cold of the same size."""
        v = prefill(
            cols(
                {"reason": Reason.COLD, "tokens": 6000, "size": size_of(6144)},
                {"reason": Reason.COLD, "tokens": 6144},
            )
        )
        assert v[0] > v[1]

    def test_small_hit_anchor_above_big_once_hit_save(self) -> None:
        """Spec §6 "small prefixes first": a 533-token anchor hit 16 times
        outranks a 90k-token save hit once, per byte."""
        v = prefill(cols({"reason": Reason.COLD, "tokens": 533, "hits": 16},
                         {"reason": Reason.EVICT, "tokens": 90000, "hits": 1}))  # fmt: skip
        assert v[0] > v[1]

    def test_tool_evict_save_is_nearly_dead(self) -> None:
        """An evict save with a tool-id map is worth tool_factor of one without."""
        v = prefill(
            cols({"reason": Reason.EVICT, "ext_flags": EXT_TOOL_MAP}, {"reason": Reason.EVICT})
        )
        assert v[0] == pytest.approx(PREFILL_DEFAULTS["tool_factor"] * v[1])

    def test_tool_map_on_continued_is_not_penalised(self) -> None:
        """A continued file with a tool-id map is valued like one without."""
        v = prefill(cols({"ext_flags": EXT_TOOL_MAP}, {}))
        assert v[0] == v[1]

    def test_saves_whose_siblings_went_unused_are_discounted(self) -> None:
        """A save is worth its prior times (used + 1) / (used + unused + 2)
        over sibling_reuse when that is below 1: four siblings left unused
        halve it; siblings mostly used, or none known, change nothing."""
        save = {"reason": Reason.EVICT}
        v = prefill(cols({**save, "sib_unused": 4}, save,
                         {**save, "sib_used": 3, "sib_unused": 1}))  # fmt: skip
        share = PREFILL_DEFAULTS["sibling_reuse"]
        assert v[0] == pytest.approx(min((0 + 1) / (0 + 4 + 2) / share, 1) * v[1])
        assert v[0] == pytest.approx(v[1] / 2)
        assert v[2] == v[1]

    def test_covered_save_is_discounted(self) -> None:
        """An evict save that a longer file extends is worth covered_factor of itself."""
        v = prefill(cols({"covered": True, "reason": Reason.EVICT}, {"reason": Reason.EVICT}))
        assert v[0] == pytest.approx(PREFILL_DEFAULTS["covered_factor"] * v[1])

    def test_covered_anchor_and_continued_keep_value(self) -> None:
        """A covered anchor or continued file serves diverging prompts: no discount."""
        anchor = {"reason": Reason.COLD, "tokens": 5343}
        v = prefill(cols({**anchor, "covered": True}, anchor, {"covered": True}, {}))
        assert (v[0], v[2]) == (v[1], v[3])

    def test_consumed_files_count_one_hit(self) -> None:
        """Over consume_tokens, a much-hit file is worth at most one hit."""
        v = prefill(
            cols({"tokens": 40000, "hits": 9, "reason": Reason.COLD}, {"tokens": 40000}),
            prior_continued=1.0,
        )
        assert v[0] == pytest.approx(v[1])

    def test_legacy_files_discounted(self) -> None:
        """A file of the older format is worth legacy_factor of a current one."""
        v = prefill(cols({"abi": 0}, {}))
        assert v[0] == pytest.approx(PREFILL_DEFAULTS["legacy_factor"] * v[1])

    def test_params_override_defaults(self) -> None:
        """A parameter given by the config replaces its default."""
        c = cols({"reason": Reason.EVICT})
        assert prefill(c, prior_evict=2.0)[0] == pytest.approx(
            2.0 / PREFILL_DEFAULTS["prior_evict"] * prefill(c)[0]
        )

    def test_vectorised(self) -> None:
        """Scoring 100,000 snapshots takes well under a second."""
        n = 100_000
        c = np.zeros(n, dtype=ROW)
        c["tokens"] = np.arange(n) % 90000 + 512
        c["size"] = c["tokens"].astype(np.int64) * 14000 + 24 * MiB
        c["created_at"] = NOW - np.arange(n)
        c["act"] = np.arange(n) * 1000
        c["head"] = np.arange(n) % 97
        c["reason"] = np.arange(n) % 5
        start = time.perf_counter()
        v = prefill(c)
        assert time.perf_counter() - start < 0.5
        assert v.shape == (n,)
        assert np.isfinite(v).all()

    def test_every_parameter_documented(self) -> None:
        """docs/policy.md explains every parameter of the default policy."""
        text = DOCS.read_text(encoding="utf-8")
        missing = [k for k in PREFILL_DEFAULTS if not re.search(rf"`{k}`", text)]
        assert missing == []
