"""report.md: the key numbers per coin, the top correlations and the models' champions as
markdown tables, then the figures. The tables also feed the Dagster asset's metadata summary."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

from crypto_assets.report.formatting import fmt_num, fmt_price, fmt_time, span_label
from crypto_assets.report.market_data import MarketData
from crypto_assets.report.model_history import ModelPoint, ModelSeries
from crypto_assets.report.trade_data import TradeData


def coin_table(market: MarketData) -> str:
    rows = ["| coin | last price (USD) | 24h change | 15m volatility | RSI(14) | anomalies 24h |", "|---|---:|---:|---:|---:|---|"]
    for s in market.snapshots:
        change = "–" if s.change_24h_pct is None else f"{s.change_24h_pct:+.2f} %" + (
            "" if span_label(s) == "24h" else f" (over {span_label(s)})")
        vol = "–" if s.volatility_15m is None else f"{s.volatility_15m * 100:.3f} %"
        rules = ", ".join(f"{r} {n}" for r, n in sorted(s.anomalies_by_rule.items()))
        rows.append(f"| {s.symbol.upper()} ({s.coin_id}) | {fmt_price(s.last_price)} | {change} | {vol} | "
                    f"{fmt_num(s.rsi_14, '.1f')} | {s.anomalies_24h}" + (f" ({rules})" if rules else "") + " |")
    return "\n".join(rows)


def trade_totals(trades: TradeData) -> str:
    """The trade numbers in one line: trades, bars and products of the window."""
    if not trades.products:
        return "(no trade bars yet: `trade_bars_1m` is empty)"
    return (f"{trades.trades:,} trades in {trades.bar_count:,} one-minute bars over {len(trades.products)} products, "
            f"{fmt_time(trades.window_start)} to {fmt_time(trades.window_end)}")


def _volume(v: float) -> str:
    return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:,.4g}"


def trade_table(trades: TradeData) -> str:
    """Per product over the window: trades, bars, last close and change, VWAP, volumes, buy share."""
    if not trades.products:
        return trade_totals(trades)
    rows = ["| product | trades | bars | last close | change | VWAP | base volume | quote volume | taker buys |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for p in trades.products:
        buys = "–" if p.buy_share is None else f"{p.buy_share * 100:.1f} %"
        rows.append(f"| {p.key} | {p.trades:,} | {p.bars:,} | {fmt_price(p.close)} | {p.change_pct:+.2f} % | "
                    f"{fmt_price(p.vwap)} | {_volume(p.base_volume)} | {p.quote_volume:,.0f} | {buys} |")
    return "\n".join([trade_totals(trades), "", *rows])


def top_correlations(market: MarketData, limit: int = 5) -> list[tuple[str, str, float | None, float | None, int]]:
    """(coin_a, coin_b, corr 24h, corr 7d, n 24h) by |corr 24h| (7d when 24h is missing)."""
    corr = market.correlations
    pairs: dict[tuple[str, str], dict[str, Any]] = {}
    for a, b, w, v, n in corr.select("coin_a", "coin_b", "window_name", "corr", "n").iter_rows():
        d = pairs.setdefault((a, b), {})
        d[w] = v
        d[f"n_{w}"] = n
    rows = [(a, b, d.get("24h"), d.get("7d"), int(d.get("n_24h") or 0)) for (a, b), d in pairs.items()]
    rows = [r for r in rows if r[2] is not None or r[3] is not None]
    rows.sort(key=lambda r: -abs(r[2] if r[2] is not None else cast(float, r[3])))
    return rows[:limit]


def correlation_table(market: MarketData, limit: int = 5) -> str:
    top = top_correlations(market, limit)
    if not top:
        return "(no correlations yet)"
    rows = ["| pair | 24h corr | 7d corr | paired minutes (24h) |", "|---|---:|---:|---:|"]
    for a, b, c24, c7, n in top:
        rows.append(f"| {market.symbol(a).upper()} / {market.symbol(b).upper()} | {fmt_num(c24, '+.3f')} | {fmt_num(c7, '+.3f')} | {n} |")
    return "\n".join(rows)


def model_table(series: list[ModelSeries], note: str | None = None) -> str:
    if not series:
        return note or "(no MLflow model runs yet)"
    rows = ["| model | metric | champion | champion value vs baseline | latest run | latest value vs baseline | runs |",
            "|---|---|---|---|---|---|---:|"]
    for s in series:
        c, latest = s.champion, s.latest
        champ = f"v{s.champion_version}" if s.champion_version else "none"

        def vs(p: ModelPoint | None, s: ModelSeries = s) -> str:
            if p is None:
                return "–"
            base = "–" if p.baseline is None else f"{p.baseline:.4g}"
            verdict = ""
            if p.baseline is not None:
                beats = p.value > p.baseline if s.higher_is_better else p.value < p.baseline
                verdict = " ✓" if beats else " ✗"
            return f"{p.value:.4g} vs {base}{verdict}"

        latest_label = "–" if latest is None else (f"v{latest.version}" if latest.version else "unregistered") + (
            f" ({latest.gate})" if latest is not None and latest.gate else "")
        rows.append(f"| {s.name} | {s.metric} | {champ} | {vs(c)} | {latest_label} | {vs(latest)} | {len(s.points)} |")
    return "\n".join(rows)


def baseline_table(series: list[ModelSeries]) -> str:
    """Per model, its latest run: the metric (walk-forward out-of-sample), every naive baseline
    candidate, the strongest (the gate's bar), the lift over it with its interval, the gate."""
    rows = ["| model | metric | value | baselines | strongest | lift | CI | gate |",
            "|---|---|---:|---|---|---:|---|---|"]
    for s in series:
        p = s.latest
        if p is None:
            continue
        cands = ", ".join(f"{k} {v:.4g}" for k, v in p.baselines.items()) or "–"
        strongest = "–" if p.baseline is None else f"{p.baseline_name or 'baseline'} {p.baseline:.4g}"
        ci = "–" if p.ci_low is None or p.ci_high is None else (
            f"{p.ci_level:.0%} " if p.ci_level else "") + f"[{p.ci_low:.3g}, {p.ci_high:.3g}]"
        lift = "–" if p.lift is None else f"{p.lift:.3g}"
        rows.append(f"| {s.name} | {s.metric} | {p.value:.4g} | {cands} | {strongest} | {lift} | {ci} | {p.gate or '–'} |")
    return "\n".join(rows) if len(rows) > 2 else "(no MLflow model runs yet)"


@dataclass
class Figures:
    overview: str | None = None
    candles: dict[str, str] = field(default_factory=dict)  # coin_id -> file name
    correlations: str | None = None
    models: str | None = None
    trades: dict[str, str] = field(default_factory=dict)  # "exchange:product" -> file name

    def all(self) -> list[str]:
        return [f for f in (self.overview, *self.candles.values(), *self.trades.values(), self.correlations,
                            self.models) if f]


def render_markdown(market: MarketData, series: list[ModelSeries], figures: Figures, generated_at: datetime,
                    model_note: str | None = None, trades: TradeData | None = None) -> str:
    """report.md: key numbers first, then the figures (relative links, so the page works from
    the timestamped directory and from latest/ alike)."""
    out = [
        "# Crypto market report",
        "",
        f"Generated {fmt_time(generated_at)} · data up to {fmt_time(market.window_end)} · candle window {market.hours:g} h",
        "",
        "## Coins",
        "",
        coin_table(market) if market.snapshots else "(no market data yet)",
        "",
        f"## Trades (1-minute bars from trades, last {trades.hours:g} h)" if trades is not None else "## Trades",
        "",
        trade_table(trades) if trades is not None else "(no trade data)",
        "",
        "## Top correlations (1-minute returns)",
        "",
        correlation_table(market),
        "",
        "## Models (primary metric vs naive baseline)",
        "",
        model_table(series, model_note),
        "",
        "## Model baselines (latest run; lift over the strongest, block-bootstrap CI)",
        "",
        baseline_table(series),
        "",
        "## Figures",
        "",
    ]
    if figures.overview:
        out += [f"![overview]({figures.overview})", ""]
    for coin, f in figures.candles.items():
        out += [f"### {market.symbol(coin).upper()} ({coin})", "", f"![{coin} candles]({f})", ""]
    for key, f in figures.trades.items():
        out += [f"### {key} (trades)", "", f"![{key} trade candles]({f})", ""]
    if figures.correlations:
        out += ["### Correlations", "", f"![correlations]({figures.correlations})", ""]
    if figures.models:
        out += ["### Model performance", "", f"![model performance]({figures.models})", ""]
    return "\n".join(out)

