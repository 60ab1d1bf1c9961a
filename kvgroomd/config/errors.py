"""ConfigError, and how a config error quotes what it was given: bounded,
so a hostile file cannot make an error (or the log line of a failed reload)
grow with it."""

from __future__ import annotations


class ConfigError(ValueError):
    """A config problem, with the file, line and key it concerns.

    The message is bounded (`MAX_MESSAGE`): a hostile file cannot make an
    error line, or the log line a failed reload writes, grow with it."""

    def __init__(self, message: str) -> None:
        if len(message) > MAX_MESSAGE:
            message = message[: MAX_MESSAGE - 15] + " ... (truncated)"
        super().__init__(message)


MAX_MESSAGE = 600  # characters of a ConfigError
MAX_SHOWN = 60  # characters of a value quoted in an error


def shown(value: object, limit: int = MAX_SHOWN) -> str:
    """`repr(value)`, cut to `limit` characters: errors quote what was given,
    but never all of a 60 KiB string."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 12]}... ({len(text)} chars)"

