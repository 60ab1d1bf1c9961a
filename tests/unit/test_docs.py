"""The repository stands alone and its documents say what the code does.

Reads the files themselves: a broken link, a stale event table or a README
command that CI does not run fails here, not in a newcomer's first hour.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from kvgroomd import events
from kvgroomd.config import Config, parse_config, parse_duration
from kvgroomd.core.scoring import PREFILL_DEFAULTS

ROOT = Path(__file__).resolve().parents[2]
# Not the repository's: tool caches and environments beside the tracked files.
SKIP_DIRS = {".git", ".hg", "__pycache__", "build", "dist", "node_modules"}
# Built from parts so that this file does not match itself.
OUTSIDE = [b"../" + b"shared", b"/" + b"work/"]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def repository_files() -> list[Path]:
    """Every file of the working tree, without VCS data, caches or venvs."""
    out = []
    for top, dirs, files in os.walk(ROOT):
        dirs[:] = [d for d in dirs if d not in SKIP_DIRS and not d.endswith(".egg-info")
                   and (not d.startswith(".") or d == ".ci")]  # fmt: skip
        out += [Path(top, f) for f in files
                if f != ".git" and not f.endswith((".pyc", ".png"))]  # .git: a worktree's link
    return out


def test_nothing_reaches_outside_the_repository() -> None:
    """No file (test, doc, config, fixture) names a path outside the repository: a
    fresh clone must run and read the same as this tree."""
    files = repository_files()
    assert len(files) > 50
    offenders = [
        f"{p.relative_to(ROOT)}: {pattern.decode()}"
        for p in files
        for pattern in OUTSIDE
        if pattern in p.read_bytes()
    ]
    assert offenders == []


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def _anchors(md: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", md.read_text(encoding="utf-8"), flags=re.S)
    return {_slug(h) for h in re.findall(r"^#+ (.+)$", text, flags=re.M)}


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_and_anchors_resolve(doc: Path) -> None:
    """Every relative link points to a file of the repository, and every #anchor to a
    heading of that file."""
    text = re.sub(r"```.*?```", "", doc.read_text(encoding="utf-8"), flags=re.S)
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target):
            continue  # https:, mailto:
        path, _, anchor = target.partition("#")
        dest = (doc.parent / path).resolve() if path else doc
        outside = not dest.exists() or ROOT not in [dest, *dest.parents]
        if outside or (anchor and dest.suffix == ".md" and anchor not in _anchors(dest)):
            broken.append(target)
    assert broken == []


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_the_format_is_cited_from_our_own_docs(doc: Path) -> None:
    """`spec §N` meant a document outside the repository: the format is docs/format.md."""
    assert not re.search(r"\bspec (§|section)", doc.read_text(encoding="utf-8"))


def _section(md: str, title: str) -> str:
    start = md.index(f"\n## {title}\n")
    end = md.find("\n## ", start + 1)
    return md[start : end if end >= 0 else None]


def _blocks(text: str) -> list[str]:
    return [b.strip() for b in re.findall(r"```(?:sh|console)?\n(.*?)```", text, flags=re.S)]


def test_readme_set_up_is_two_commands_and_the_second_is_what_ci_runs() -> None:
    """Exactly two commands: install-and-run on a directory with the engine's budget, and
    the tests, verbatim as .ci/run runs them."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    run, tests = _blocks(_section(readme, "Set up"))
    assert "\n" not in run and "\n" not in tests
    assert re.search(r"kvgroomd run --cache-dir \S+ --engine-budget \d+$", run)
    assert tests in (ROOT / ".ci/run").read_text(encoding="utf-8").splitlines()


def test_readme_first_screen_says_what_and_why() -> None:
    """The first 30 lines say what kvgroomd is and why, before any command."""
    first = "\n".join((ROOT / "README.md").read_text(encoding="utf-8").splitlines()[:30])
    assert "ds4-server" in first and "```" not in first
    for word in ("prefill", "continued", "evict", "budget"):
        assert word in first


def test_the_install_steps_put_kvgroomd_where_the_units_run_it() -> None:
    """Every system-wide install recipe (pipx, uv tool, venv) ends in /usr/local/bin, the
    path of both units' ExecStart=."""
    for unit in ("kvgroomd.service", "kvgroomd@.service"):
        text = (ROOT / "systemd" / unit).read_text(encoding="utf-8")
        assert re.search(r"^ExecStart=/usr/local/bin/kvgroomd run ", text, flags=re.M), unit
    readme = _section((ROOT / "README.md").read_text(encoding="utf-8"),
                      "Run it for good, under systemd")  # fmt: skip
    systemd = _section((ROOT / "docs/systemd.md").read_text(encoding="utf-8"), "Install")
    for text in (readme, systemd):
        recipes = [line for b in _blocks(text) for line in b.splitlines()
                   if re.search(r"pipx install|uv tool install|pip install", line)
                   and not line.startswith("#")]  # fmt: skip
        assert {r.split()[1].split("=")[0] if "pipx" in r or "uv tool" in r else "venv"
                for r in recipes} == {"PIPX_HOME", "UV_TOOL_DIR", "venv"}  # fmt: skip
        for r in recipes:
            assert ("PIPX_BIN_DIR=/usr/local/bin" in r or "UV_TOOL_BIN_DIR=/usr/local/bin" in r
                    or "ln -s /opt/kvgroomd/bin/kvgroomd /usr/local/bin/kvgroomd" in r), r  # fmt: skip


def _events_table() -> dict[str, str]:
    text = (ROOT / "docs/logs.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| (?:\*\*)?`([a-z_]+\.[a-z_]+)`(?:\*\*)? \| ([a-z ,()`:]+?) \|", text,
                      flags=re.M)  # fmt: skip
    return dict(rows)


def test_one_event_table_names_every_event_once() -> None:
    """docs/logs.md has one row per event kvgroomd logs (events.py defines them all), and
    names no event that does not exist."""
    defined = {v for k, v in vars(events).items() if k.isupper() and isinstance(v, str)}
    table = _events_table()
    assert set(table) == defined
    text = (ROOT / "docs/logs.md").read_text(encoding="utf-8")
    for event in defined:
        assert len(re.findall(rf"^\| (?:\*\*)?`{re.escape(event)}`", text, flags=re.M)) == 1


def test_the_readme_has_no_second_event_table() -> None:
    """The README points to docs/logs.md instead of keeping a table that can drift."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert not re.search(r"^\| `(daemon|snapshot|observer)\.", readme, flags=re.M)


def test_the_layout_diagram_names_modules_that_exist() -> None:
    """Every module the diagram in docs/how-it-works.md draws is a file of kvgroomd/."""
    text = (ROOT / "docs/how-it-works.md").read_text(encoding="utf-8")
    diagram = re.search(r"## The layout.*?```\n(.*?)```", text, flags=re.S)
    assert diagram
    names = set(re.findall(r"\b((?:format|core|daemon|ops|sim)/[a-z_]+\.py|log\.py)\b",
                           diagram.group(1)))  # fmt: skip
    names |= {f"format/{m}" for m in re.findall(r"\b([a-z]+\.py) \(", diagram.group(1))}
    assert {"daemon/read.py", "core/index.py", "daemon/apply.py", "log.py"} <= names
    assert sorted(n for n in names if not (ROOT / "kvgroomd" / n).is_file()) == []


def test_config_example_shows_every_default() -> None:
    """config.example.yaml, which says it shows every key with its default, does: its
    values parse to the defaults, and its commented policy parameters are the defaults."""
    example = ROOT / "config.example.yaml"
    text = example.read_text(encoding="utf-8")
    c = parse_config(text, str(example))
    default = Config(cache_dir=c.cache_dir)
    for name in Config.__dataclass_fields__:
        if name not in ("warnings",):
            assert getattr(c, name) == getattr(default, name), name
    commented = dict(re.findall(r"^  # ([a-z_]+): (\S+)$", text, flags=re.M))
    assert commented
    for key, value in commented.items():
        assert parse_duration(value) == PREFILL_DEFAULTS[key], key
