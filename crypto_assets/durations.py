"""Duration strings ('7d', '12h', '30m', '60s', '250ms', '1h30m', '90') -> timedelta.

A leaf module with no package imports: the CLI (`--history`, `--interval`), the demo and the
simulator's configuration all parse durations the same way, and none of them should have to
import a producer to do it.
"""

from __future__ import annotations

import re
from datetime import timedelta

_DAY_S = 86_400.0

_DURATION_RE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h|d|w)?", re.IGNORECASE)
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": _DAY_S, "w": 7 * _DAY_S}


def parse_duration(text: str | float | int | timedelta) -> timedelta:
    """'7d', '12h', '30m', '60s', '250ms', '1h30m', '90' (seconds) -> timedelta."""
    if isinstance(text, timedelta):
        return text
    if isinstance(text, (int, float)):
        return timedelta(seconds=float(text))
    s = str(text).strip().replace(" ", "")
    pos, total = 0, 0.0
    while pos < len(s):
        m = _DURATION_RE.match(s, pos)
        if m is None or m.end() == pos:
            raise ValueError(f"cannot parse duration {text!r}: use e.g. 7d, 12h, 30m, 60s or 90")
        unit = (m.group(2) or "s").lower()
        if m.group(2) is None and (pos != 0 or m.end() != len(s)):
            raise ValueError(f"cannot parse duration {text!r}: a unit is missing")
        total += float(m.group(1)) * _UNIT_S[unit]
        pos = m.end()
    if not s:
        raise ValueError("empty duration")
    return timedelta(seconds=total)
