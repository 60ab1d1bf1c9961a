"""The engine's options (format/engine.py), the `engine:` block and `engine_budget`."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from kvgroomd.config import parse_config, parse_engine_budget
from kvgroomd.format.engine import COMPRESSING_LAYOUTS, ENGINE_LAYOUTS, EngineOptions, KiB, MiB
from tests.unit.test_config import SRC, assert_points_at, config, error


class TestEngineOptions:
    def test_defaults_are_the_engines(self) -> None:
        """Defaults are ds4-server's: continued every 10000 tokens aligned to
        2048 (so 10240), trim 32, min 512, cold max 30000, no compression."""
        e = EngineOptions()
        assert e.layout == "detect"
        assert (e.continued_interval, e.boundary_align, e.boundary_trim) == (10000, 2048, 32)
        assert (e.min_tokens, e.cold_max_tokens) == (512, 30000)
        assert e.continued_step == 10240
        assert (e.compression, e.reject_different_quant) == (False, False)
        assert e.snapshot_overhead == int(22.9 * MiB)
        assert e.token_bytes == pytest.approx(13.45 * KiB)

    @pytest.mark.parametrize(
        ("interval", "align", "step"),
        [(10000, 2048, 10240), (10240, 2048, 10240), (10241, 2048, 12288), (4096, 0, 4096),
         (0, 2048, 0), (1, 2048, 2048)],
    )  # fmt: skip
    def test_continued_step_rounds_up_to_the_alignment(self, interval: int, align: int,
                                                       step: int) -> None:  # fmt: skip
        """As the engine's kv_cache_continued_step: 0 turns continued stores off."""
        e = EngineOptions(continued_interval=interval, boundary_align=align)
        assert e.continued_step == step

    @pytest.mark.parametrize(
        ("tokens", "stored"),
        [(5343, 4096), (2080, 2048), (2079, 2079), (544, 544), (545, 545), (600, 600),
         (4127, 2048), (30000, 28672), (100, 100)],
    )  # fmt: skip
    def test_store_len_trims_then_aligns_down(self, tokens: int, stored: int) -> None:
        """ds4_kvstore_store_len: minus the trim, aligned down, unless that
        falls below min_tokens (then the prompt's own length)."""
        assert EngineOptions().store_len(tokens) == stored

    def test_size_follows_the_measured_model(self) -> None:
        """22.9 MiB + 13.45 KiB per token: 10240 tokens ~157.3 MiB (the
        engine's log says 157.34 MiB), 49022 tokens ~666 MiB."""
        e = EngineOptions()
        assert e.size(10240) / MiB == pytest.approx(157.4, abs=0.2)
        assert e.size(49022) / MiB == pytest.approx(666.8, abs=1.0)
        assert e.size(0) == e.snapshot_overhead

    def test_compression_divides_sizes_by_the_ratio(self) -> None:
        """A compressing engine's snapshot is raw size / ratio (rounded up):
        the same budget holds `ratio` times as many."""
        raw = EngineOptions()
        packed = EngineOptions(layout="codec-at-21", compression=True, compression_ratio=2.5)
        for tokens in (512, 10240, 49022):
            assert packed.raw_size(tokens) == raw.size(tokens)
            assert packed.size(tokens) == -(-raw.size(tokens) * 2 // 5)
        off = EngineOptions(layout="codec-at-21", compression=False, compression_ratio=2.5)
        assert off.size(10240) == raw.size(10240)

    @pytest.mark.parametrize(
        ("changes", "key"),
        [({"layout": "lz5"}, "layout"), ({"min_tokens": -1}, "min_tokens"),
         ({"boundary_align": 1.5}, "boundary_align"), ({"compression_ratio": 0.5}, "compression_ratio"),
         ({"compression_ratio": float("nan")}, "compression_ratio"), ({"token_bytes": 0}, "token_bytes"),
         ({"layout": "upstream", "compression": True}, "compression")],
    )  # fmt: skip
    def test_impossible_values_are_refused(self, changes: dict[str, object], key: str) -> None:
        """A value the engine would not run with cannot be built."""
        with pytest.raises(ValueError, match=rf"^{key}: "):
            EngineOptions(**changes)  # type: ignore[arg-type]

    def test_it_is_frozen(self) -> None:
        """A value: changing it means making another."""
        with pytest.raises(AttributeError):
            EngineOptions().min_tokens = 1  # type: ignore[misc]


class TestEngineBlock:
    def test_no_block_gives_the_engine_defaults(self) -> None:
        """Without `engine:` every option is the engine's default."""
        c = config("cache_dir: /kv\n")
        assert c.engine == EngineOptions()
        assert c.engine_budget is None
        assert c.warnings == ()

    def test_every_key(self) -> None:
        """Each key of the block lands in its EngineOptions field, parsed."""
        c = config(
            "cache_dir: /kv\n"
            "engine:\n"
            "  layout: codec-at-7\n"
            "  continued_interval: 8000\n"
            "  boundary_align: 1024\n"
            "  boundary_trim: 16\n"
            "  min_tokens: 256\n"
            "  cold_max_tokens: 40000\n"
            "  compression: true\n"
            "  compression_ratio: 2.2\n"
            "  snapshot_overhead: 20MiB\n"
            "  token_bytes: 13.45KiB\n"
            "  reject_different_quant: true\n"
        )
        assert c.engine == EngineOptions(
            layout="codec-at-7", continued_interval=8000, boundary_align=1024, boundary_trim=16,
            min_tokens=256, cold_max_tokens=40000, compression=True, compression_ratio=2.2,
            snapshot_overhead=20 * MiB, token_bytes=13.45 * KiB, reject_different_quant=True,
        )  # fmt: skip
        assert c.reject_different_quant is True
        assert c.engine.continued_step == 8192

    @pytest.mark.parametrize("layout", ["detect", *ENGINE_LAYOUTS])
    def test_every_layout_name_is_accepted(self, layout: str) -> None:
        """engine.layout takes "detect" and the name of each engine's layout."""
        assert config(f"cache_dir: /kv\nengine:\n  layout: {layout}\n").engine.layout == layout

    @pytest.mark.parametrize(
        ("value", "key"),
        [("layout: lz4", "engine.layout"), ("min_tokens: -5", "engine.min_tokens"),
         ("continued_interval: 10k", "engine.continued_interval"),
         ("boundary_align: 1.5", "engine.boundary_align"), ("compression: yes please", "engine.compression"),
         ("compression_ratio: 0.9", "engine.compression_ratio"),
         ("snapshot_overhead: lots", "engine.snapshot_overhead"), ("token_bytes: 0", "engine.token_bytes"),
         ("reject_different_quant: 1", "engine.reject_different_quant"), ("colour: blue", "engine.colour")],
    )  # fmt: skip
    def test_errors_name_file_line_and_key(self, value: str, key: str) -> None:
        """A bad value (or unknown key) of the block points at its line and key."""
        assert_points_at(error(f"cache_dir: /kv\nengine:\n  min_tokens: 512\n  {value}\n"), 4, key)

    def test_compression_needs_a_compressing_layout(self) -> None:
        """compression: true with a layout that never compresses is an error
        at the compression key (with detect it is the operator's word)."""
        msg = error("cache_dir: /kv\nengine:\n  layout: header-72\n  compression: true\n")
        assert_points_at(msg, 4, "engine.compression")
        assert "header-72" in msg
        for layout in ("detect", *COMPRESSING_LAYOUTS):
            assert config(f"cache_dir: /kv\nengine:\n  layout: {layout}\n  compression: true\n")

    def test_the_block_must_be_a_mapping(self) -> None:
        """`engine: upstream` is not the block."""
        assert_points_at(error("cache_dir: /kv\nengine: upstream\n"), 2, "engine")

    def test_effective_shows_the_block(self) -> None:
        """check-config's output holds every engine option and engine_budget."""
        eff = config("cache_dir: /kv\nengine_budget: 4096\nengine:\n  layout: gb10\n").effective()
        assert eff["engine"] == dataclasses.asdict(EngineOptions(layout="gb10"))
        assert eff["engine_budget"] == 4096 * MiB
        assert "warnings" not in eff and "reject_different_quant" not in eff


class TestMovedQuantKey:
    def test_top_level_key_still_works_with_a_warning(self) -> None:
        """`reject_different_quant:` at the top is read as
        engine.reject_different_quant, and the config carries a warning
        naming file, line and the new key."""
        c = config("cache_dir: /kv\nreject_different_quant: true\n")
        assert c.engine.reject_different_quant is True
        assert c.reject_different_quant is True
        assert c.warnings == (
            f"{SRC}:2: reject_different_quant: deprecated, now engine.reject_different_quant "
            "(still read, for now)",
        )

    @pytest.mark.parametrize(
        "text",
        ["reject_different_quant: true\nengine:\n  reject_different_quant: true\n",
         "engine:\n  reject_different_quant: false\nreject_different_quant: true\n"],
    )  # fmt: skip
    def test_both_places_is_an_error(self, text: str) -> None:
        """Given both at the top and in the block (either order): an error,
        not a silent choice between them."""
        msg = error("cache_dir: /kv\n" + text)
        assert "given twice" in msg and "engine.reject_different_quant" in msg

    def test_the_block_key_gives_no_warning(self) -> None:
        """The new place is quiet."""
        c = config("cache_dir: /kv\nengine:\n  reject_different_quant: true\n")
        assert (c.reject_different_quant, c.warnings) == (True, ())


class TestEngineBudget:
    @pytest.mark.parametrize(
        ("value", "size"),
        [(4096, 4096 * MiB), ("4096", 4096 * MiB), (" 512 ", 512 * MiB), (0.5, MiB // 2),
         ("4GiB", 4 * 2**30), ("4096MiB", 4096 * MiB),
         ("100GB", 100 * 10**9)],
    )  # fmt: skip
    def test_bare_numbers_are_mib_units_are_sizes(self, value: object, size: int) -> None:
        """A bare number is MiB (ds4-server's --kv-disk-space-mb, copied as
        is); a size with a unit is that size."""
        assert parse_engine_budget(value) == size

    @pytest.mark.parametrize("value", [0, "0", "0GiB", -1, True, "lots", None, [4096]])
    def test_nonsense_is_refused(self, value: object) -> None:
        """0 (the engine then never evicts), negative, booleans and words are errors."""
        with pytest.raises(ValueError):
            parse_engine_budget(value)

    def test_config_key(self) -> None:
        """`engine_budget:` is read as MiB; null means not given; errors point at it."""
        assert config("cache_dir: /kv\nengine_budget: 4096\n").engine_budget == 4096 * MiB
        assert config("cache_dir: /kv\nengine_budget: 60GiB\n").engine_budget == 60 * 2**30
        assert config("cache_dir: /kv\nengine_budget: null\n").engine_budget is None
        assert_points_at(error("cache_dir: /kv\n\nengine_budget: 0\n"), 3, "engine_budget")

    def test_budget_stays_bytes(self) -> None:
        """`budget:` is unchanged: a bare number there is bytes."""
        c = config("cache_dir: /kv\nbudget: 4096\nengine_budget: 4096\n")
        assert (c.budget, c.engine_budget) == (4096, 4096 * MiB)


def test_config_example_documents_every_engine_key() -> None:
    """config.example.yaml shows the engine block with every key, and
    engine_budget, and parses."""
    example = Path(__file__).resolve().parents[2] / "config.example.yaml"
    c = parse_config(example.read_text(encoding="utf-8"), str(example))
    text = example.read_text(encoding="utf-8")
    assert c.engine == EngineOptions()
    for key in EngineOptions.__dataclass_fields__:
        assert re.search(rf"^\s+#?\s*{key}:", text, re.MULTILINE), key
    assert re.search(r"^#?\s*engine_budget:", text, re.MULTILINE)
