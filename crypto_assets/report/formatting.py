"""Text formatting shared by the report's figures and its markdown: prices, times, optional numbers
and the span a 24-hour change was measured over, so a title and a table cell always agree."""

from __future__ import annotations

import math
from datetime import UTC, datetime

from crypto_assets.report.market_data import CoinSnapshot


def fmt_time(t: datetime | None) -> str:
    if t is None:
        return "–"
    return t.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def fmt_num(v: float | None, fmt: str) -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, fmt)


def fmt_price(p: float | None) -> str:
    if p is None:
        return "–"
    if abs(p) >= 1000:
        return f"{p:,.0f}"
    if abs(p) >= 1:
        return f"{p:,.2f}"
    return f"{p:.4g}"


def span_label(s: CoinSnapshot) -> str:
    """The span a 24-hour change covers: "24h", or fewer hours when the history is younger than a day."""
    if s.change_span_hours is None or s.change_span_hours >= 23.9:
        return "24h"
    return f"{s.change_span_hours:.1f}h"
