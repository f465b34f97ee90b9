"""The report's key figures as Dagster metadata: what a reader of the asset page in the UI should
see without opening the report (coins, newest data, anomalies, best/worst coin, model gates)."""

from __future__ import annotations

from crypto_assets.report.market_data import MarketData
from crypto_assets.report.model_history import ModelSeries


def best_and_worst(market: MarketData) -> tuple[tuple[str, float] | None, tuple[str, float] | None]:
    """(coin, % change over the snapshot span) of the best and worst coin; None without changes."""
    moves = [(s.coin_id, s.change_24h_pct) for s in market.snapshots if s.change_24h_pct is not None]
    if not moves:
        return None, None
    ordered = sorted(moves, key=lambda m: (m[1], m[0]))
    return ordered[-1], ordered[0]


def gate_outcomes(series: list[ModelSeries]) -> dict[str, str]:
    """Per model (per horizon for the price model): the gate tag of its latest run's registered
    version (promoted / rejected / pending ...), `unregistered` for a run with no version."""
    out = {}
    for s in series:
        latest = s.latest
        if latest is not None:
            out[s.name] = latest.gate or ("unregistered" if latest.version is None else "untagged")
    return out


def key_figures(market: MarketData, series: list[ModelSeries]) -> dict[str, object]:
    """Plain values (str/int/float/dict) keyed as the asset's metadata names them."""
    best, worst = best_and_worst(market)
    figures: dict[str, object] = {
        "coins": len(market.snapshots),
        "coins_covered": ", ".join(market.coins) or "none",
        "anomalies_in_window": market.anomalies.height,
        "gate_outcomes": gate_outcomes(series),
    }
    if best is not None and worst is not None:
        figures["best_coin"] = f"{best[0]} {best[1]:+.2f}%"
        figures["best_coin_return_pct"] = round(best[1], 4)
        figures["worst_coin"] = f"{worst[0]} {worst[1]:+.2f}%"
        figures["worst_coin_return_pct"] = round(worst[1], 4)
    return figures


def headline(market: MarketData, series: list[ModelSeries]) -> str:
    """One Markdown line of the key figures, the first thing in the asset's summary."""
    f = key_figures(market, series)
    parts = [f"**{f['coins']} coins**", f"**{f['anomalies_in_window']} anomalies** in {market.hours:g} h"]
    if "best_coin" in f:
        parts += [f"best **{f['best_coin']}**", f"worst **{f['worst_coin']}**"]
    gates = f["gate_outcomes"]
    assert isinstance(gates, dict)
    if gates:
        parts.append("gates: " + ", ".join(f"{k} {v}" for k, v in gates.items()))
    return " · ".join(parts)
