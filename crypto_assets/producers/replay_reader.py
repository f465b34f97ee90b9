"""Reading a replay file (CSV or Parquet) into one normalised frame of ticks-to-be
(`load_replay_frame`); `replay.py` paces and sends it.

Columns (names are case-insensitive; the first alias found wins):

required
  timestamp   ISO-8601 text ("2025-12-20T15:30:00Z", "2025-12-20 15:30:00", offsets allowed,
              naive = UTC), epoch seconds / milliseconds / microseconds (numbers or digit text;
              the unit is taken from the magnitude), or a Parquet datetime/date.
              Aliases: time, datetime, date, last_updated_at.
  coin_id     the tick's coin id, or instead
  symbol      mapped through the default coins (BTC -> bitcoin; pair spellings such as
              BTCUSDT, BTC-USD, btc/usd are accepted); an unknown symbol becomes its lower-case
              self as coin_id.
  close       the price in USD. Aliases: price, price_usd.
optional
  volume_24h_usd (aliases volume_24h, total_volume)  24-hour traded volume in USD, used as-is;
  volume (aliases quote_volume, volume_usd)          per-bar USD volume: volume_24h_usd becomes
              its rolling 24-hour sum per coin (scaled up while less than 24 hours are covered);
  market_cap_usd (alias market_cap)                  passed through (null when absent);
  change_24h_pct, change_7d_pct                      passed through when present, otherwise
              computed from the file's own prices (null until the file has 24 h / 7 d of history
              for that coin).

Rows whose timestamp cannot be parsed, or whose price is missing, not a number or not > 0, or
whose coin is empty get an `invalid_reason` (one of `INVALID_REASONS`).
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import polars as pl

from crypto_assets.kafka.tick_contract import DEFAULT_COINS, coins_for

TIMESTAMP_COLUMNS = ("timestamp", "time", "datetime", "date", "last_updated_at")
PRICE_COLUMNS = ("close", "price", "price_usd")
VOLUME_24H_COLUMNS = ("volume_24h_usd", "volume_24h", "total_volume")
VOLUME_BAR_COLUMNS = ("volume", "quote_volume", "volume_usd")
MARKET_CAP_COLUMNS = ("market_cap_usd", "market_cap")

INVALID_REASONS = ("bad_timestamp", "missing_coin", "missing_price", "bad_price")

SYMBOL_TO_ID: dict[str, str] = {c.symbol.lower(): c.coin_id for c in DEFAULT_COINS}
KNOWN_SYMBOLS: dict[str, str] = {c.coin_id: c.symbol for c in DEFAULT_COINS}
_QUOTES = ("usdt", "usdc", "busd", "usd")
_TS = pl.Datetime("us", "UTC")


def _pick(columns: dict[str, str], names: tuple[str, ...]) -> str | None:
    for name in names:
        if name in columns:
            return columns[name]
    return None


def _symbol_to_coin(symbol: str | None) -> str | None:
    if symbol is None:
        return None
    s = symbol.strip().lower()
    if not s:
        return None
    if s in SYMBOL_TO_ID:
        return SYMBOL_TO_ID[s]
    base = s.replace("-", "").replace("/", "").replace("_", "")
    for quote in _QUOTES:
        if base.endswith(quote) and base[: -len(quote)] in SYMBOL_TO_ID:
            return SYMBOL_TO_ID[base[: -len(quote)]]
    return s


def _from_epoch(x: float) -> datetime | None:
    ax = abs(x)
    seconds = x if ax < 1e11 else x / 1e3 if ax < 1e14 else x / 1e6 if ax < 1e17 else x / 1e9
    try:
        return datetime.fromtimestamp(seconds, tz=UTC)
    except (OverflowError, OSError, ValueError):
        return None


def _parse_timestamp(value: Any) -> datetime | None:
    if value is None:
        return None
    s = str(value).strip()
    if not s:
        return None
    try:
        x = float(s)
    except ValueError:
        pass
    else:
        return _from_epoch(x) if math.isfinite(x) else None
    try:
        ts = datetime.fromisoformat(s[:-1] + "+00:00" if s[-1] in "Zz" else s)
    except ValueError:
        return None
    if ts.tzinfo is None:
        return ts.replace(tzinfo=UTC)
    return ts.astimezone(UTC)


def _timestamps(series: pl.Series) -> pl.Series:
    """Any supported timestamp column -> Datetime(us, UTC), null where it cannot be parsed."""
    dtype = series.dtype
    if isinstance(dtype, pl.Datetime):
        if dtype.time_zone is None:
            return series.dt.replace_time_zone("UTC").cast(_TS)
        return series.dt.convert_time_zone("UTC").cast(_TS)
    if dtype == pl.Date:
        return series.cast(pl.Datetime("us")).dt.replace_time_zone("UTC")
    values = series.cast(pl.String) if dtype != pl.String else series
    uniques = values.unique().drop_nulls().to_list()
    parsed = {u: _parse_timestamp(u) for u in uniques}
    lookup = pl.DataFrame(
        {"k": pl.Series(list(parsed), dtype=pl.String), "v": pl.Series(list(parsed.values()), dtype=_TS)}
    )
    joined = pl.DataFrame({"k": values}).join(lookup, on="k", how="left", maintain_order="left")
    return joined["v"]


def _floats(frame: pl.DataFrame, column: str | None) -> pl.Expr:
    """A numeric column as Float64; text that is not a number becomes null."""
    if column is None:
        return pl.lit(None, dtype=pl.Float64)
    if frame.schema[column].is_numeric():
        return pl.col(column).cast(pl.Float64)
    return pl.col(column).cast(pl.String).str.strip_chars().cast(pl.Float64, strict=False)


def load_replay_frame(path: str | Path) -> pl.DataFrame:
    """Read and normalise a replay file.

    Returns one row per input row: `row` (0-based position in the file), `timestamp`
    (Datetime UTC), `coin_id`, `symbol`, `price_usd`, `market_cap_usd`, `volume_24h_usd`,
    `change_24h_pct`, `change_7d_pct` and `invalid_reason` (null for rows that will be sent,
    else one of INVALID_REASONS). Valid rows come first, ordered by (timestamp, row); invalid
    rows follow in file order. Raises ValueError when a required column is missing.
    """
    path = Path(path)
    name = path.name.lower()
    if name.endswith((".parquet", ".pq")):
        raw = pl.read_parquet(path)
    elif name.endswith((".csv", ".csv.gz", ".txt", ".tsv")):
        raw = pl.read_csv(path, infer_schema=False, separator="\t" if name.endswith(".tsv") else ",")
    else:
        raise ValueError(f"{path}: unsupported replay file type (use .csv or .parquet)")

    cols = {c.strip().lower(): c for c in raw.columns}
    ts_col = _pick(cols, TIMESTAMP_COLUMNS)
    price_col = _pick(cols, PRICE_COLUMNS)
    coin_col = cols.get("coin_id")
    sym_col = cols.get("symbol")
    missing = []
    if ts_col is None:
        missing.append("timestamp")
    if coin_col is None and sym_col is None:
        missing.append("coin_id or symbol")
    if price_col is None:
        missing.append("close (or price)")
    if missing:
        raise ValueError(f"{path}: missing required column(s): {', '.join(missing)}; has {raw.columns}")
    assert ts_col is not None and price_col is not None

    frame = raw.with_row_index("row").with_columns(
        _timestamps(raw[ts_col]).alias("_ts"),
        _floats(raw, price_col).alias("_price"),
        _floats(raw, _pick(cols, MARKET_CAP_COLUMNS)).alias("_mcap"),
        _floats(raw, _pick(cols, VOLUME_24H_COLUMNS)).alias("_vol24"),
        _floats(raw, _pick(cols, VOLUME_BAR_COLUMNS)).alias("_volbar"),
        _floats(raw, cols.get("change_24h_pct")).alias("_ch24"),
        _floats(raw, cols.get("change_7d_pct")).alias("_ch7"),
    )
    # coin ids: explicit column, else mapped symbols; symbols from the coin profile if absent
    if coin_col is not None:
        coin = pl.col(coin_col).cast(pl.String).str.strip_chars().str.to_lowercase()
        if sym_col is not None:
            coin = pl.when(coin.is_null() | (coin == "")).then(
                pl.col(sym_col).cast(pl.String).map_elements(_symbol_to_coin, return_dtype=pl.String)
            ).otherwise(coin)
    else:
        coin = pl.col(cast(str, sym_col)).cast(pl.String).map_elements(_symbol_to_coin, return_dtype=pl.String)
    frame = frame.with_columns(coin.alias("_coin"))
    frame = frame.with_columns(
        pl.when(pl.col("_coin") == "").then(None).otherwise(pl.col("_coin")).alias("_coin")
    )
    ids = frame["_coin"].unique().drop_nulls().to_list()
    profile_symbols = {c.coin_id: c.symbol for c in coins_for(ids)}
    profile = pl.col("_coin").replace_strict(profile_symbols, default=None, return_dtype=pl.String)
    if sym_col is not None:
        given = pl.col(sym_col).cast(pl.String).str.strip_chars().str.to_lowercase()
        known = pl.col("_coin").is_in(list(KNOWN_SYMBOLS))
        symbol = (
            pl.when(known | given.is_null() | (given == "")).then(profile).otherwise(given)
        )
    else:
        symbol = profile

    price = pl.col("_price")
    reason = (
        pl.when(pl.col("_ts").is_null())
        .then(pl.lit("bad_timestamp"))
        .when(pl.col("_coin").is_null())
        .then(pl.lit("missing_coin"))
        .when(price.is_null())
        .then(pl.lit("missing_price"))
        .when(price.is_nan() | price.is_infinite() | (price <= 0))
        .then(pl.lit("bad_price"))
        .otherwise(pl.lit(None, dtype=pl.String))
    )
    frame = frame.with_columns(symbol.alias("_sym"), reason.alias("invalid_reason"))

    valid = frame.filter(pl.col("invalid_reason").is_null()).sort(["_ts", "row"])
    invalid = frame.filter(pl.col("invalid_reason").is_not_null()).sort("row")
    valid = _derive(valid)
    invalid = invalid.with_columns(
        pl.col("_vol24").alias("_volume"),
        pl.col("_ch24").alias("_c24"),
        pl.col("_ch7").alias("_c7"),
    )
    out_cols = [
        pl.col("row"),
        pl.col("_ts").alias("timestamp"),
        pl.col("_coin").alias("coin_id"),
        pl.col("_sym").alias("symbol"),
        pl.col("_price").alias("price_usd"),
        pl.col("_mcap").alias("market_cap_usd"),
        pl.col("_volume").alias("volume_24h_usd"),
        pl.col("_c24").alias("change_24h_pct"),
        pl.col("_c7").alias("change_7d_pct"),
        pl.col("invalid_reason"),
    ]
    return pl.concat([valid.select(out_cols), invalid.select(out_cols)], how="vertical")


def _derive(valid: pl.DataFrame) -> pl.DataFrame:
    """24h volume from per-bar volume, and price changes from the file's own path."""
    if valid.is_empty():
        return valid.with_columns(
            pl.col("_vol24").alias("_volume"), pl.col("_ch24").alias("_c24"), pl.col("_ch7").alias("_c7")
        )
    spacing = (
        valid.select(pl.col("_ts").diff().over("_coin").alias("d"))
        .filter(pl.col("d") > timedelta(0))["d"]
        .median()
    )
    bar = spacing if isinstance(spacing, timedelta) else timedelta(minutes=1)
    day = timedelta(days=1)
    covered = pl.col("_ts") - pl.col("_ts").min().over("_coin") + bar
    covered_s = covered.dt.total_microseconds() / 1e6
    rolling = pl.col("_volbar").rolling_sum_by("_ts", window_size="24h").over("_coin")
    scale = pl.lit(day.total_seconds()) / pl.min_horizontal(covered_s, pl.lit(day.total_seconds()))
    valid = valid.with_columns(
        pl.coalesce(pl.col("_vol24"), rolling * scale).alias("_volume"),
    )
    tolerance = max(2 * bar, timedelta(minutes=1))
    lookup = valid.select(
        pl.col("_coin"), pl.col("_ts").alias("_ref_ts"), pl.col("_price").alias("_ref_price")
    ).sort("_ref_ts")
    for horizon, given, name in ((day, "_ch24", "_c24"), (7 * day, "_ch7", "_c7")):
        probe = valid.select("row", "_coin", (pl.col("_ts") - horizon).alias("_ref_ts")).sort("_ref_ts")
        matched = probe.join_asof(
            lookup, on="_ref_ts", by="_coin", strategy="backward", tolerance=tolerance, check_sortedness=False
        ).select("row", "_ref_price")
        valid = valid.join(matched, on="row", how="left", maintain_order="left").with_columns(
            pl.coalesce(
                pl.col(given),
                ((pl.col("_price") / pl.col("_ref_price") - 1.0) * 100.0).round(4),
            ).alias(name)
        ).drop("_ref_price")
    return valid
