"""Reading a config file safely: a bounded regular file, refused when it
holds what a config has no use for (anchors and aliases, deep nesting), and
walked node by node so every value keeps its line number."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import yaml

from kvgroomd.config.errors import MAX_SHOWN, ConfigError, shown

MAX_FILE_BYTES = 64 * 1024  # a config file is a few hundred bytes; config.example.yaml ~3 KiB
MAX_DEPTH = 8  # nesting of mappings and lists (the deepest key is policy.<param>: 2)


class NodeReader:
    """Walks the YAML node tree so every value keeps its line number."""

    def __init__(self, text: str, source: str) -> None:
        self.source = source
        self.loader = yaml.SafeLoader(text)
        self.loader.name = source  # marks in YAML errors name the file, not "<unicode string>"

    def error(self, node: yaml.Node | yaml.Event | None, key: str, msg: str) -> ConfigError:
        mark = node.start_mark if node is not None else None
        where = f"{self.source}:{mark.line + 1}" if mark is not None else self.source
        key = key if len(key) <= MAX_SHOWN else shown(key)
        return ConfigError(f"{where}: {key}: {msg}" if key else f"{where}: {msg}")

    def mapping(self, node: yaml.Node, key: str) -> list[tuple[str, yaml.Node, yaml.Node]]:
        if not isinstance(node, yaml.MappingNode):
            raise self.error(node, key, "expected a mapping of key: value")
        items, seen = [], set()
        for k, v in node.value:
            name = self.value(k, key)
            if not isinstance(name, str):
                raise self.error(k, key, f"keys must be words, got {shown(name)}")
            if name in seen:
                raise self.error(k, f"{key}.{name}" if key else name, "given twice")
            seen.add(name)
            items.append((name, k, v))
        return items

    def value(self, node: yaml.Node, key: str) -> object:
        # Unknown tags (`!foo`) and bad tagged scalars (`!!int x`) fail here.
        try:
            return self.loader.construct_object(node, deep=True)
        except (yaml.YAMLError, ValueError) as e:
            problem = getattr(e, "problem", None) or str(e)
            raise self.error(node, key, f"not valid YAML: {problem}") from None


def refuse_unplain(r: NodeReader, text: str) -> None:
    """Refuse what a config file has no use for, before anything is built.

    Anchors and aliases (`&a`, `*a`) are how a few hundred bytes expand to
    gigabytes (the "billion laughs"); deep nesting is how a small file
    exhausts the recursion of YAML's composer. The parser's event stream is
    read in linear time, and nothing is constructed from it."""
    depth = 0
    events = yaml.SafeLoader(text)
    events.name = r.source
    try:
        while events.check_event():
            ev = events.get_event()  # type: ignore[no-untyped-call]
            if isinstance(ev, yaml.AliasEvent) or getattr(ev, "anchor", None) is not None:
                raise r.error(ev, "", "anchors and aliases (&name, *name) are not allowed "
                              "in a config file: write each value out")  # fmt: skip
            if isinstance(ev, yaml.CollectionStartEvent):
                depth += 1
                if depth > MAX_DEPTH:
                    raise r.error(ev, "", f"nested more than {MAX_DEPTH} levels deep")
            elif isinstance(ev, yaml.CollectionEndEvent):
                depth -= 1
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{r.source}:{mark.line + 1}" if mark is not None else r.source
        raise ConfigError(f"{where}: not valid YAML: {e}") from None
    finally:
        events.dispose()


def read_config_text(path: Path) -> str:
    """A config file's text: a regular file of at most MAX_FILE_BYTES, opened
    without blocking (a FIFO or a device named as the config must not hang a
    start or a SIGHUP reload) and read in one bounded read."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError(f"{path}: not a regular file")
        if st.st_size > MAX_FILE_BYTES:
            raise ConfigError(f"{path}: {st.st_size} bytes: a config file is at most "
                              f"{MAX_FILE_BYTES // 1024} KiB")  # fmt: skip
        raw = os.read(fd, MAX_FILE_BYTES + 1)
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror}") from None
    finally:
        os.close(fd)
    if len(raw) > MAX_FILE_BYTES:
        raise ConfigError(f"{path}: a config file is at most {MAX_FILE_BYTES // 1024} KiB")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text (byte {e.start})") from None

