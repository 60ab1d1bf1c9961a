"""Command-line conventions shared by every subcommand."""

from __future__ import annotations

import json
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest

COMMANDS = ["run", "check-config", "groom", "ls", "stats", "tail"]


class TestHelpAndVersion:
    @pytest.mark.parametrize("command", COMMANDS)
    def test_every_subcommand_has_help(self, cli_inproc: Any, command: str) -> None:
        """`kvgroomd COMMAND --help` prints a usage line and exits 0."""
        code, out, _ = cli_inproc(command, "--help")
        assert code == 0
        assert out.startswith(f"usage: kvgroomd {command}")

    def test_simulate_has_help(self, cli_inproc: Any) -> None:
        """`kvgroomd simulate --help` prints the simulator's usage and exits 0."""
        code, out, _ = cli_inproc("simulate", "--help")
        assert code == 0
        assert out.startswith("usage: kvgroomd simulate")

    def test_version(self, cli_inproc: Any) -> None:
        """`kvgroomd --version` prints the installed version and exits 0."""
        code, out, _ = cli_inproc("--version")
        assert (code, out.strip()) == (0, f"kvgroomd {version('kvgroomd')}")

    def test_groom_help_lists_the_exit_codes(self, cli_inproc: Any) -> None:
        """`groom --help` documents exit codes 0 to 4."""
        out = cli_inproc("groom", "--help")[1]
        for code in range(5):
            assert f"\n  {code}  " in out


class TestUsageErrors:
    @pytest.mark.parametrize(
        "args", [[], ["nope"], ["ls", "--bogus"], ["groom", "--budget", "lots"]]
    )
    def test_usage_errors_exit_2(self, cli_inproc: Any, args: list[str]) -> None:
        """A missing or unknown command, an unknown option or a bad size exits with status 2."""
        code, _, err = cli_inproc(*args)
        assert code == 2
        assert "usage:" in err


class TestSizes:
    @pytest.mark.parametrize(
        ("text", "value"),
        [("8GiB", 8 * 2**30), ("500MiB", 500 * 2**20), ("123456", 123456), ("60G", 60 * 2**30),
         ("500M", 500 * 2**20)],
    )
    def test_sizes_accept_binary_units_and_bytes(self, cli_inproc: Any, shared_fixture_cache: Path,
                                                 text: str, value: int) -> None:  # fmt: skip
        """`--budget` takes 60G, 500M (binary, as systemd), 8GiB, 500MiB or a byte count."""
        code, out, err = cli_inproc("ls", shared_fixture_cache, "--json", "--budget", text)
        assert code == 0, err
        assert json.loads(out)["budget"] == value
