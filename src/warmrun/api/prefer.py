"""The `Prefer` request header (RFC 7240): `respond-async` and `wait=N`."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Preferences:
    respond_async: bool = False
    wait: float | None = None

    def applied(self) -> str | None:
        """The `Preference-Applied` value for what was honoured."""
        parts = []
        if self.respond_async:
            parts.append("respond-async")
        if self.wait is not None:
            parts.append(f"wait={self.wait:g}")
        return ", ".join(parts) or None


def parse_prefer(values: Iterable[str]) -> Preferences:
    """Read every Prefer header; unknown or malformed preferences are ignored."""
    respond_async = False
    wait: float | None = None
    for value in values:
        for preference in value.split(","):
            token = preference.split(";", 1)[0].strip()
            name, _, argument = token.partition("=")
            name = name.strip().lower()
            argument = argument.strip().strip('"')
            if name == "respond-async":
                respond_async = True
            elif name == "wait":
                try:
                    seconds = float(argument)
                except ValueError:
                    continue
                if seconds >= 0 and seconds == seconds and seconds != float("inf"):
                    wait = seconds
    return Preferences(respond_async=respond_async, wait=wait)
