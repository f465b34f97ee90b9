"""Gold layer from exchange trades: the trade candles (1 s, 1 min with RSI/Bollinger, 1 h), their
sanity check, and the step's part that builds them (called by the incremental step after
raw_trades, crypto_assets.defs.incremental)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import dagster as dg
from pydantic import Field

from crypto_assets.defs.check_verdicts import Seqs, Verdict, offender_table, seq_scope
from crypto_assets.defs.code_versions import source_version
from crypto_assets.defs.metadata import markdown_table, table_definition_metadata
from crypto_assets.transforms.bar_indicators import indicators_frame
from crypto_assets.transforms.clean import CleanConfig
from crypto_assets.transforms.trade_anomalies import TradeAnomalyConfig
from crypto_assets.transforms.trade_bar_rollups import bars_1h_increment, bars_1m_increment
from crypto_assets.transforms.trade_bars import TradeBarsConfig, trade_bars_increment

WIDTHS = ("trade_bars_1s", "trade_bars_1m", "trade_bars_1h")
_LOGIC = (trade_bars_increment, bars_1m_increment, bars_1h_increment, indicators_frame)
_TEXT = {
    "trade_bars_1s": "1-second candles per exchange and product from raw_trades: open/close by (trade_time, trade_id), "
                     "high/low, exact base and quote volume, VWAP, trade count, taker buy/sell volume. Late trades "
                     "(older than the product's newest minus the lateness) are quarantined and change no bar.",
    "trade_bars_1m": "1-minute trade candles rolled up from the 1-second bars, with RSI(14) (Wilder) and Bollinger "
                     "(20, 2σ) on closes as ohlcv_1m defines them. Use these where an exchange feed exists; ohlcv_1m "
                     "(CoinGecko ticks) for coins without one.",
    "trade_bars_1h": "1-hour trade candles rolled up from the 1-minute bars.",
}
SPECS = [
    dg.AssetSpec(w, deps=["raw_trades" if w == "trade_bars_1s" else WIDTHS[i - 1]], group_name="gold",
                 kinds={"duckdb", "parquet"}, owners=["team:data-eng"], tags={"layer": "gold"},
                 code_version=source_version(*_LOGIC), skippable=True, description=_TEXT[w],
                 metadata=table_definition_metadata(w))
    for i, w in enumerate(WIDTHS)
]
CHECKS = [dg.AssetCheckSpec("trade_bars_sane", asset=w, blocking=True,
                            description="high ≥ max(open, close), low ≤ min(open, close), base = buy + sell, vwap in "
                                        "[low, high], trade_count > 0 (the bars each pass wrote)")
          for w in WIDTHS]
CHECK_BY_ASSET = {c.asset_key.to_user_string(): c for c in CHECKS}


class TradeBarsRunConfig(dg.Config):
    """Run config of the trade candles and the trade anomaly rules (defaults in the transforms)."""

    lateness_minutes: float = Field(default=CleanConfig.lateness.total_seconds() / 60,
                                    description="a trade older than its product's newest trade (earlier batches) minus "
                                    "this is quarantined as late")
    window_minutes: int = Field(default=TradeAnomalyConfig.window_minutes, description="trailing window of the rules")
    min_bars: int = Field(default=TradeAnomalyConfig.min_bars, description="bars a window needs before a bar is judged")
    zscore_threshold: float = Field(default=TradeAnomalyConfig.zscore_threshold, description="|z| of the log return")
    zscore_critical: float = Field(default=TradeAnomalyConfig.zscore_critical, description="critical above this |z|")
    volume_spike_pct: float = Field(default=TradeAnomalyConfig.volume_spike_pct,
                                    description="base volume vs the trailing bars' mean, in % above it")
    volume_critical_pct: float = Field(default=TradeAnomalyConfig.volume_critical_pct, description="critical above this %")

    def bars(self) -> TradeBarsConfig:
        return TradeBarsConfig(lateness=timedelta(minutes=self.lateness_minutes))

    def anomalies(self) -> TradeAnomalyConfig:
        return TradeAnomalyConfig(self.window_minutes, self.min_bars, self.zscore_threshold, self.zscore_critical,
                                  self.volume_spike_pct, self.volume_critical_pct)


_BAD = {
    "high_below_open_or_close": "high < greatest(open, close)",
    "low_above_open_or_close": "low > least(open, close)",
    "volume_not_buy_plus_sell": "base_volume <> buy_volume + sell_volume",
    # (a double quotient of exact decimals: within a rounding of low and high)
    "vwap_outside_low_high": "NOT (vwap >= low::DOUBLE * (1 - 1e-12) AND vwap <= high::DOUBLE * (1 + 1e-12))",
    "no_trades": "trade_count <= 0",
}


def trade_bars_sane(conn, table: str, seq: Seqs = None) -> Verdict:
    """The bars of `table` stamped with `seq` obey the candle invariants."""
    scope = seq_scope("bar_seq", seq)
    counts = conn.sql(f"SELECT {', '.join(f'count(*) FILTER ({e})' for e in _BAD.values())}, count(*) "
                      f"FROM {table} WHERE {scope}").fetchall()[0]
    md: dict[str, Any] = {k: int(v) for k, v in zip(_BAD, counts, strict=False)}
    md["bars_checked"] = int(counts[-1])
    bad = {k: v for k, v in md.items() if k in _BAD and v}
    if bad:
        md["offending_rows"] = dg.MetadataValue.md(offender_table(
            conn, f"SELECT exchange, product, bar_start, open, high, low, close, vwap, trade_count FROM {table} "
                  f"WHERE {scope} AND ({' OR '.join(f'({e})' for e in _BAD.values())}) ORDER BY bar_start",
            ["exchange", "product", "bar_start", "open", "high", "low", "close", "vwap", "trade_count"]))
    return Verdict(not bad, md, f"violations: {bad}" if bad else "every bar sane")


def products_written(conn, table: str, new_rows: str) -> dict[str, Any]:
    """The products a run's bars cover, with their count and time range."""
    rows = conn.sql(f"SELECT exchange, product, count(*), min(bar_start), max(bar_start) FROM {table} "
                    f"WHERE {new_rows} GROUP BY ALL ORDER BY ALL").fetchall()
    return {"products": len(rows),
            "bars_per_product": dg.MetadataValue.md(markdown_table(rows, ["exchange", "product", "bars", "first", "last"]))}
