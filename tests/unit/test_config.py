"""Configuration: sizes, durations, defaults, and errors that point at key and line."""

from __future__ import annotations

import math
import os
import pwd
import re
from pathlib import Path

import pytest

from kvgroomd.config import (
    Config,
    ConfigError,
    check_values,
    format_size,
    load_config,
    parse_config,
    parse_duration,
    parse_size,
)
from kvgroomd.core.scoring import DEFAULT_POLICY, POLICIES, PREFILL_DEFAULTS
from kvgroomd.format.engine import EngineOptions

SRC = "kvgroomd.yaml"


def config(text: str) -> Config:
    return parse_config(text, SRC)


def error(text: str) -> str:
    """The ConfigError message parsing `text` raises."""
    with pytest.raises(ConfigError) as e:
        parse_config(text, SRC)
    return str(e.value)


def assert_points_at(message: str, line: int, key: str) -> None:
    """The message starts with `file:line:` and names `key`."""
    assert message.startswith(f"{SRC}:{line}: "), message
    assert re.search(rf"(?<![\w.]){re.escape(key)}(?![\w])", message), message


class TestSizes:
    @pytest.mark.parametrize(
        ("text", "size"),
        [("8GiB", 8 * 2**30), ("500MiB", 500 * 2**20), ("4KiB", 4096), ("2TiB", 2 * 2**40),
         ("1.5GB", 1_500_000_000), ("500MB", 500_000_000), ("3KB", 3000), ("1TB", 10**12),
         ("4096", 4096), ("4096B", 4096), ("0", 0), ("8 GiB", 8 * 2**30), ("8gib", 8 * 2**30),
         (" 500mib ", 500 * 2**20), ("0.5KiB", 512), ("2.01KB", 2010), ("4.02KB", 4020),
         ("1.5KiB", 1536), ("1.0001KiB", 1024)],
    )  # fmt: skip
    def test_strings(self, text: str, size: int) -> None:
        """Sizes take binary (KiB..TiB) and decimal (KB..TB) units, any case;
        decimal fractions are exact, fractional bytes round down."""
        assert parse_size(text) == size

    @pytest.mark.parametrize(
        ("text", "size"),
        [("60G", 60 * 2**30), ("500M", 500 * 2**20), ("4K", 4096), ("1T", 2**40),
         ("60g", 60 * 2**30), ("1.5G", 3 * 2**29), ("8Gi", 8 * 2**30), ("64 M", 64 * 2**20)],
    )  # fmt: skip
    def test_short_units_are_binary(self, text: str, size: int) -> None:
        """`60G` and `500M` as systemd and ccache take them: a bare K/M/G/T (or
        Ki/Mi/Gi/Ti) is a power of 1024; only `GB` and friends are decimal."""
        assert parse_size(text) == size

    @pytest.mark.parametrize("n", [0, 1, 4096, 2**45])
    def test_integers_are_bytes(self, n: int) -> None:
        """A bare integer is a byte count."""
        assert parse_size(n) == n

    @pytest.mark.parametrize(
        "bad", [-1, True, False, 1.5, None, "", "GiB", "8 gigs", "-5MiB", "8GiB!", "1e9", [1],
                "8Gb!", "8iB", "8P", "8Gii"]
    )
    def test_rejected(self, bad: object) -> None:
        """Negative, boolean, float and unit-less-garbage values are rejected."""
        with pytest.raises(ValueError, match="size"):
            parse_size(bad)

    @pytest.mark.parametrize(
        ("n", "text"),
        [(0, "0 B"), (1023, "1023 B"), (1024, "1.0 KiB"), (291.8 * 2**20, "291.8 MiB"),
         (8 * 2**30, "8.0 GiB"), (3 * 2**40, "3.0 TiB")],
    )  # fmt: skip
    def test_format_size(self, n: float, text: str) -> None:
        """format_size prints binary units with one decimal."""
        assert format_size(n) == text


class TestDurations:
    @pytest.mark.parametrize(
        ("text", "seconds"),
        [("120s", 120.0), ("5m", 300.0), ("6h", 21600.0), ("7d", 604800.0), ("250ms", 0.25),
         ("1.5h", 5400.0), ("90", 90.0), (" 2 m ", 120.0), (30, 30.0), (1.5, 1.5), (0, 0.0)],
    )  # fmt: skip
    def test_values(self, text: object, seconds: float) -> None:
        """Durations are numbers of seconds or strings with ms/s/m/h/d."""
        got = parse_duration(text)
        assert got == seconds
        assert isinstance(got, float)

    @pytest.mark.parametrize(
        "bad", [-1, -0.5, math.inf, math.nan, True, None, "", "5 minutes", "-5s", "5H", "1w", [5]]
    )
    def test_rejected(self, bad: object) -> None:
        """Negative, infinite, NaN, boolean and unknown-unit durations are rejected."""
        with pytest.raises(ValueError, match="duration"):
            parse_duration(bad)


class TestDefaults:
    def test_only_cache_dir_given(self) -> None:
        """A config with only cache_dir gets every documented default."""
        c = config("cache_dir: /var/cache/ds4\n")
        assert c == Config(cache_dir=Path("/var/cache/ds4"))
        assert c.budget is None
        assert (c.low_watermark, c.protect_new) == (0.9, 0.0)
        assert (c.policy, dict(c.policy_params)) == (DEFAULT_POLICY, {})
        assert DEFAULT_POLICY == "prefill"
        assert (c.supersede, c.reject_different_quant, c.dry_run) == (True, False, False)
        assert c.reconcile_interval == 300.0
        assert (c.log_format, c.log_level) == ("auto", "info")
        assert (c.orphan_temps, c.orphan_temp_age, c.stale_format) == (False, 3600.0, False)
        assert (c.metrics_textfile, c.metrics_listen) == (None, None)

    def test_cache_dir_expands_the_home_directory(self) -> None:
        """cache_dir: ~/x expands ~."""
        assert config("cache_dir: ~/kv\n").cache_dir == Path("~/kv").expanduser()

    def test_every_key(self) -> None:
        """Every key of a full config lands in its field, parsed."""
        c = config(
            "cache_dir: /kv\n"
            "budget: 8GiB\n"
            "low_watermark: 0.8\n"
            "protect_new: 5m\n"
            "supersede: false\n"
            "engine_budget: 4096\n"
            "engine:\n  layout: codec-at-21\n  reject_different_quant: true\n"
            "reconcile_interval: 1h\n"
            "dry_run: true\n"
            "log:\n  format: json\n  level: debug\n"
            "cleanup:\n  orphan_temps: true\n  orphan_temp_age: 2h\n  stale_format: true\n"
            "metrics:\n  textfile: /run/kv.prom\n  listen: 127.0.0.1:9101\n"
            "policy: ds4\n"
        )
        assert c == Config(
            cache_dir=Path("/kv"), budget=8 * 2**30, low_watermark=0.8, protect_new=300.0,
            policy="ds4", policy_params={}, supersede=False, engine_budget=4096 * 2**20,
            engine=EngineOptions(layout="codec-at-21", reject_different_quant=True),
            reconcile_interval=3600.0, dry_run=True, log_format="json", log_level="debug",
            orphan_temps=True, orphan_temp_age=7200.0, stale_format=True,
            metrics_textfile=Path("/run/kv.prom"), metrics_listen="127.0.0.1:9101",
        )  # fmt: skip

    def test_budget_null_means_no_budget(self) -> None:
        """budget: null (or ~) disables budget eviction."""
        assert config("cache_dir: /kv\nbudget: null\n").budget is None
        assert config("cache_dir: /kv\nbudget: ~\n").budget is None

    def test_budget_integer_bytes(self) -> None:
        """A bare integer budget is bytes."""
        assert config("cache_dir: /kv\nbudget: 1000000\n").budget == 1_000_000

    def test_effective_merges_policy_defaults(self) -> None:
        """effective() shows plain data with the policy's defaults merged in."""
        c = config("cache_dir: /kv\npolicy:\n  name: prefill\n  covered_factor: 0.5\n")
        eff = c.effective()
        assert eff["cache_dir"] == "/kv"
        assert eff["metrics_textfile"] is None
        assert eff["policy_params"] == {**PREFILL_DEFAULTS, "covered_factor": 0.5}

    def test_with_overrides_skips_none(self) -> None:
        """with_overrides applies given values and ignores None."""
        c = config("cache_dir: /kv\n").with_overrides(dry_run=True, budget=None, log_level="debug")
        assert (c.dry_run, c.budget, c.log_level) == (True, None, "debug")


class TestPolicy:
    def test_bare_name(self) -> None:
        """`policy: NAME` selects a policy with no parameter overrides."""
        c = config("cache_dir: /kv\npolicy: ds4\n")
        assert (c.policy, dict(c.policy_params)) == ("ds4", {})

    def test_mapping_with_params(self) -> None:
        """`policy: {name, param: value}` takes durations and plain numbers."""
        c = config(
            "cache_dir: /kv\npolicy:\n  name: prefill\n  hit_half_turnovers: 3\n"
            "  covered_factor: 0.5\n  consume_tokens: 20000\n"
        )
        assert c.policy == "prefill"
        assert dict(c.policy_params) == {
            "hit_half_turnovers": 3.0,
            "covered_factor": 0.5,
            "consume_tokens": 20000.0,
        }

    def test_mapping_without_name_is_the_default_policy(self) -> None:
        """A policy mapping without `name` tunes the default policy."""
        c = config("cache_dir: /kv\npolicy:\n  idle_half_turnovers: 2\n")
        assert c.policy == DEFAULT_POLICY
        assert dict(c.policy_params) == {"idle_half_turnovers": 2.0}

    def test_every_registered_policy_is_accepted(self) -> None:
        """Each name in POLICIES is a valid `policy:` value."""
        for name in POLICIES:
            assert config(f"cache_dir: /kv\npolicy: {name}\n").policy == name


class TestErrors:
    def test_unknown_top_level_key(self) -> None:
        """A mistyped top-level key is named with its line."""
        msg = error("cache_dir: /kv\n\nbudgt: 8GiB\n")
        assert_points_at(msg, 3, "budgt")
        assert "unknown key" in msg
        assert "budget" in msg  # the known keys are listed

    def test_unknown_nested_key_under_log(self) -> None:
        """A mistyped key under log: is named as log.<key> with its line."""
        msg = error("cache_dir: /kv\nlog:\n  format: json\n  levl: debug\n")
        assert_points_at(msg, 4, "log.levl")
        assert "unknown key" in msg

    def test_block_that_is_not_a_mapping(self) -> None:
        """log: given a scalar is named with its line."""
        msg = error("cache_dir: /kv\nlog: json\n")
        assert_points_at(msg, 2, "log")
        assert "mapping" in msg

    @pytest.mark.parametrize(
        ("text", "line", "key"),
        [("cache_dir: /kv\ndry_run: 'yes'\n", 2, "dry_run"),
         ("cache_dir: 5\n", 1, "cache_dir"),
         ("cache_dir: /kv\nsupersede: 1\n", 2, "supersede"),
         ("cache_dir: /kv\nlow_watermark: high\n", 2, "low_watermark"),
         ("cache_dir: /kv\ncleanup:\n  orphan_temps: sometimes\n", 3, "cleanup.orphan_temps"),
         ("cache_dir: /kv\nbudget: [8, GiB]\n", 2, "budget"),
         ("cache_dir: /kv\nmetrics:\n  textfile: 3\n", 3, "metrics.textfile")],
    )  # fmt: skip
    def test_wrong_type(self, text: str, line: int, key: str) -> None:
        """A value of the wrong type is named with its key and line."""
        assert_points_at(error(text), line, key)

    @pytest.mark.parametrize(
        ("text", "line", "key"),
        [("cache_dir: /kv\nbudget: 8 gigs\n", 2, "budget"),
         ("cache_dir: /kv\nbudget: -1\n", 2, "budget"),
         ("cache_dir: /kv\nlow_watermark: 1.5\n", 2, "low_watermark"),
         ("cache_dir: /kv\nlow_watermark: 0\n", 2, "low_watermark"),
         ("cache_dir: /kv\nprotect_new: soon\n", 2, "protect_new"),
         ("cache_dir: /kv\nreconcile_interval: 0s\n", 2, "reconcile_interval"),
         ("cache_dir: /kv\nlog:\n  level: loud\n", 3, "log.level"),
         ("cache_dir: /kv\nlog:\n  format: xml\n", 3, "log.format"),
         ("cache_dir: /kv\nmetrics:\n  listen: nowhere\n", 3, "metrics.listen"),
         ("cache_dir: ''\n", 1, "cache_dir")],
    )  # fmt: skip
    def test_bad_value(self, text: str, line: int, key: str) -> None:
        """A value of the right type but out of range is named with key and line."""
        assert_points_at(error(text), line, key)

    def test_unknown_policy_name_bare(self) -> None:
        """An unknown bare policy name is named with its line and the known ones."""
        msg = error("cache_dir: /kv\nbudget: 1GiB\npolicy: lru\n")
        assert_points_at(msg, 3, "policy.name")
        assert "'lru'" in msg
        assert all(name in msg for name in POLICIES)

    def test_unknown_policy_name_in_mapping(self) -> None:
        """An unknown name inside a policy mapping is reported on the name's line."""
        msg = error("cache_dir: /kv\npolicy:\n  hit_half_life: 1d\n  name: lfu\n")
        assert_points_at(msg, 4, "policy.name")
        assert "'lfu'" in msg

    def test_unknown_policy_parameter(self) -> None:
        """A parameter the policy does not have is named with its line."""
        msg = error("cache_dir: /kv\npolicy:\n  name: prefill\n  half_life: 1d\n")
        assert_points_at(msg, 4, "policy.half_life")
        assert "hit_half_turnovers" in msg  # the known parameters are listed

    def test_the_engines_cold_max_tokens_reaches_the_core_and_the_policy(self) -> None:
        """engine.cold_max_tokens is the core's consume threshold (headroom)
        and the policy's consume_tokens, unless the policy block sets that."""
        rules = config("cache_dir: /kv\nengine:\n  cold_max_tokens: 20000\n").rules()
        assert rules.cold_max_tokens == 20000
        assert rules.policy_params["consume_tokens"] == 20000
        own = config("cache_dir: /kv\nengine:\n  cold_max_tokens: 20000\n"
                     "policy:\n  consume_tokens: 25000\n").rules()  # fmt: skip
        assert own.policy_params["consume_tokens"] == 25000

    @pytest.mark.parametrize(("old", "new"), [("idle_half_life", "idle_half_turnovers"),
                                              ("hit_half_life", "hit_half_turnovers")])
    def test_a_retired_parameter_says_what_replaced_it(self, old: str, new: str) -> None:
        """A wall-clock half-life of earlier releases is refused with its line,
        naming the parameter that replaced it and why the value cannot carry over."""
        msg = error(f"cache_dir: /kv\npolicy:\n  name: prefill\n  {old}: 2d\n")
        assert_points_at(msg, 4, f"policy.{old}")
        assert new in msg and "turnovers of the cache" in msg

    def test_parameter_of_a_policy_without_parameters(self) -> None:
        """ds4 takes no parameters: any is an error naming it."""
        msg = error("cache_dir: /kv\npolicy:\n  name: ds4\n  hit_half_life: 1d\n")
        assert_points_at(msg, 4, "policy.hit_half_life")
        assert "none" in msg

    def test_bad_policy_parameter_value(self) -> None:
        """A policy parameter value that is not a number/duration is named with its line."""
        msg = error("cache_dir: /kv\npolicy:\n  name: prefill\n\n  covered_factor: lots\n")
        assert_points_at(msg, 5, "policy.covered_factor")

    def test_missing_cache_dir(self) -> None:
        """A config without cache_dir says cache_dir is required, with a line."""
        msg = error("budget: 8GiB\nsupersede: true\n")
        assert_points_at(msg, 1, "cache_dir")
        assert "required" in msg

    @pytest.mark.parametrize("text", ["", "# only a comment\n"])
    def test_empty_config_requires_cache_dir(self, text: str) -> None:
        """An empty config names the missing cache_dir."""
        assert "cache_dir" in error(text)

    def test_duplicate_top_level_key(self) -> None:
        """A key given twice is reported at its second occurrence."""
        msg = error("cache_dir: /a\nbudget: 1GiB\ncache_dir: /b\n")
        assert_points_at(msg, 3, "cache_dir")
        assert "twice" in msg

    def test_duplicate_nested_key(self) -> None:
        """A key given twice inside a block is named block.key with its line."""
        msg = error("cache_dir: /a\nlog:\n  level: info\n  level: debug\n")
        assert_points_at(msg, 4, "log.level")
        assert "twice" in msg

    def test_duplicate_policy_parameter(self) -> None:
        """A policy parameter given twice is named with its line."""
        msg = error("cache_dir: /a\npolicy:\n  covered_factor: 0.1\n  covered_factor: 0.2\n")
        assert_points_at(msg, 4, "policy.covered_factor")

    @pytest.mark.parametrize(
        ("text", "line", "key"),
        [("cache_dir: /kv\n  budget: 8GiB\n", 2, "budget"),
         ("cache_dir: /kv\nbudget: 8GiB\n\tlog: x\n", 3, "log"),
         ("cache_dir: /kv\nlog: {format: json\n", 3, "format")],
    )  # fmt: skip
    def test_yaml_syntax_error(self, text: str, line: int, key: str) -> None:
        """A YAML syntax error names the file and line, and quotes the offending text."""
        msg = error(text)
        assert_points_at(msg, line, key)
        assert "not valid YAML" in msg
        assert "<unicode string>" not in msg

    @pytest.mark.parametrize(
        ("text", "line", "key"),
        [
            ("cache_dir: !foo /kv\n", 1, "cache_dir"),
            ("cache_dir: /kv\nbudget: !!int lots\n", 2, "budget"),
            ("cache_dir: /kv\nprotect_new: 2024-13-45\n", 2, "protect_new"),
            ("cache_dir: /kv\npolicy: !lru ds4\n", 2, "policy.name"),
            ("cache_dir: /kv\npolicy:\n  covered_factor: !!float x\n", 3, "policy.covered_factor"),
            ("cache_dir: /kv\nlog:\n  !x level: info\n", 3, "log"),
        ],
    )
    def test_bad_tag_or_tagged_scalar(self, text: str, line: int, key: str) -> None:
        """A value YAML cannot construct (unknown tag, bad !!int) is a ConfigError
        naming key and line, not a stack trace."""
        msg = error(text)
        assert_points_at(msg, line, key)
        assert "not valid YAML" in msg

    def test_top_level_not_a_mapping(self) -> None:
        """A config that is a list, not a mapping, is rejected with a line."""
        msg = error("- cache_dir: /kv\n")
        assert msg.startswith(f"{SRC}:1: ")
        assert "mapping" in msg

    def test_non_string_key(self) -> None:
        """A key that is not a word (e.g. a number) is rejected with its line."""
        msg = error("cache_dir: /kv\n42: x\n")
        assert msg.startswith(f"{SRC}:2: ")
        assert "42" in msg

    def test_errors_are_value_errors(self) -> None:
        """ConfigError is a ValueError, so callers can catch either."""
        assert issubclass(ConfigError, ValueError)


BOMB = """cache_dir: /kv
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
"""


class TestHostileFiles:
    """Config bombs (#11.4): refused fast, with file:line, in a bounded message."""

    def test_alias_bomb_is_refused_at_its_first_anchor(self) -> None:
        """A billion-laughs file is refused at the line of its first anchor, at once."""
        msg = error(BOMB)
        assert_points_at(msg, 2, "anchors")
        assert "aliases" in msg

    @pytest.mark.parametrize(
        ("text", "line"),
        [("cache_dir: &d /kv\n", 1), ("x: &x 1\ncache_dir: /kv\n", 1),
         ("cache_dir: /kv\nbudget: *nowhere\n", 2),
         ("cache_dir: /kv\nlog: &l {format: json}\ncleanup: *l\n", 2)],
    )  # fmt: skip
    def test_any_anchor_or_alias_is_refused(self, text: str, line: int) -> None:
        """A single anchor or alias anywhere is refused with its line."""
        assert error(text).startswith(f"{SRC}:{line}: anchors and aliases")

    def test_deep_nesting_is_refused(self) -> None:
        """Thousands of nested lists are refused before YAML's composer recurses."""
        msg = error("cache_dir: /kv\nbudget: " + "[" * 5000 + "]" * 5000 + "\n")
        assert msg.startswith(f"{SRC}:2: nested more than")

    def test_a_huge_value_is_quoted_short(self) -> None:
        """A 60,000-character value is quoted in at most a few dozen characters."""
        msg = error("cache_dir: /kv\nbudget: '" + "9x" * 30_000 + "'\n")
        assert_points_at(msg, 2, "budget")
        assert len(msg) < 300, len(msg)

    def test_a_huge_key_is_quoted_short(self) -> None:
        """An unknown 60,000-character key is named in a bounded message."""
        msg = error("cache_dir: /kv\n" + "k" * 60_000 + ": 1\n")
        assert msg.startswith(f"{SRC}:2: ")
        assert len(msg) <= 600

    def test_text_over_the_size_limit_is_refused(self) -> None:
        """A config text over 64 KiB is refused before it is parsed."""
        assert "at most 64 KiB" in error("cache_dir: /kv\n" + "#" * 70_000 + "\n")

    def test_file_over_the_size_limit_is_refused_unread(self, tmp_path: Path) -> None:
        """A 100 MiB (sparse) config file is refused by its size."""
        p = tmp_path / "big.yaml"
        with p.open("wb") as f:
            f.truncate(100 * 2**20)
        with pytest.raises(ConfigError, match="at most 64 KiB"):
            load_config(p)

    def test_fifo_is_refused_without_blocking(self, tmp_path: Path) -> None:
        """A FIFO named as the config file is refused at once, not read forever."""
        p = tmp_path / "fifo.yaml"
        os.mkfifo(p)
        with pytest.raises(ConfigError, match="not a regular file"):
            load_config(p)


class TestImplausibleValues:
    """Values no operator means (#11.8): refused with a clear error."""

    @pytest.mark.parametrize(
        "path", ["/", "/etc", "/root", "/proc", "/sys", "/dev", "/usr", "/boot", "/var",
                 "/tmp", "/etc/ds4", "/proc/1", "/sys/fs", "/usr/lib/x", "//etc/", "/var/../etc"],
    )  # fmt: skip
    def test_system_directories_are_refused(self, path: str) -> None:
        """A system directory (or one inside /etc, /proc, /sys, /dev, /usr/lib ...) is refused."""
        msg = error(f"cache_dir: {path}\n")
        assert_points_at(msg, 1, "cache_dir")
        assert "system directory" in msg

    def test_home_directories_are_refused(self) -> None:
        """$HOME and every user's home directory (as written or via ~) are refused."""
        for text in ("cache_dir: '~'\n", f"cache_dir: {os.path.expanduser('~')}\n",
                     f"cache_dir: {pwd.getpwuid(0).pw_dir}\n"):  # fmt: skip
            msg = error(text)
            assert "home directory" in msg or "system directory" in msg, msg

    def test_symlink_to_a_system_directory_is_refused(self, tmp_path: Path) -> None:
        """A path that resolves to /etc is refused like /etc."""
        (tmp_path / "kv").symlink_to("/etc")
        assert "system directory" in error(f"cache_dir: {tmp_path / 'kv'}\n")

    def test_plausible_directories_are_accepted(self, tmp_path: Path) -> None:
        """Directories under /var/cache, /srv, /mnt, a home directory or /tmp are fine."""
        for path in ("/var/cache/ds4-kv", "/srv/kv", "/mnt/ssd/kv", "~/kv", str(tmp_path)):
            assert config(f"cache_dir: {path}\n").cache_dir.is_absolute()

    def test_relative_cache_dir_is_made_absolute(self) -> None:
        """A relative cache_dir is made absolute once, at load."""
        assert config("cache_dir: kv\n").cache_dir == Path.cwd() / "kv"

    @pytest.mark.parametrize("value", ["0", "0B", "0GiB", "'0'"])
    def test_budget_zero_is_refused(self, value: str) -> None:
        """budget: 0 (in any unit) is an error that says what it would do and the alternative."""
        msg = error(f"cache_dir: /kv\nbudget: {value}\n")
        assert_points_at(msg, 2, "budget")
        assert "evict every snapshot" in msg and "no budget" in msg

    @pytest.mark.parametrize("value", ["0.4B", "1.5B", "0.4", "0.0001KiB"])
    def test_fractional_bytes_are_refused(self, value: str) -> None:
        """A size that is not a whole number of bytes is an error, not rounded to 0."""
        msg = error(f"cache_dir: /kv\nbudget: '{value}'\n")
        assert_points_at(msg, 2, "budget")
        assert "not a whole number of bytes" in msg

    def test_command_line_values_get_the_same_checks(self) -> None:
        """--cache-dir / and --budget 0 are refused like the same config keys."""
        with pytest.raises(ConfigError, match="system directory"):
            check_values(Config(cache_dir=Path("/")))
        with pytest.raises(ConfigError, match="evict every snapshot"):
            check_values(Config(cache_dir=Path("/kv"), budget=0))
