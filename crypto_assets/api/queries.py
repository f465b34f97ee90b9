"""The API's queries over the gold mirror: fixed SQL text with `?` parameters for every request
value, files pruned by their day (and symbol) directories before DuckDB opens any, and keyset
pagination (the cursor is the last row's sort key, so a page costs the same however deep it is)."""

from __future__ import annotations

import base64
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from crypto_assets.api.lake_source import LakeSource, files_between, newest_leaf_files
from crypto_assets.warehouse.lake_layout import leaf_date

FEATURES = "gold/market_features"
CANDLES = {"1m": ("gold/ohlcv_1m", "minute"), "1h": ("gold/ohlcv_1h", "hour")}
PER_DAY = {"1m": 1440, "1h": 24}  # most candles of one coin in a day directory
ANOMALIES = "gold/anomalies"
PREDICTIONS = "gold/predictions"

_FEATURE_COLUMNS = ("coin_id, symbol, event_time, price_usd, volume_24h_usd, return_pct, log_return, sma_1m, sma_5m, "
                    "sma_15m, ema_20, volatility_15m, zscore_15m, volume_change_pct, ticks_15m")
_CANDLE_1M_EXTRA = ", return_pct, rsi_14, bb_middle, bb_upper, bb_lower"
_CANDLE_1H_EXTRA = "".join(f", NULL::DOUBLE AS {c}" for c in _CANDLE_1M_EXTRA[2:].split(", "))  # same keys
_ANOMALY_COLUMNS = ("anomaly_id, coin_id, symbol, event_time, rule, severity, value, threshold, price_usd, "
                    "volume_24h_usd, detected_at, source")
_PREDICTION_COLUMNS = ("coin_id, symbol, event_time, price_usd, trend_prob_up, trend_model_version, anomaly_prob, "
                       "anomaly_model_version, forecast_return_1h, forecast_return_4h, forecast_return_24h, "
                       "price_model_versions, predicted_at")


class BadCursor(ValueError):
    """A cursor this API did not hand out (or one of another endpoint)."""


def encode_cursor(kind: str, t: datetime, key: str = "") -> str:
    return base64.urlsafe_b64encode(orjson.dumps([kind, t.astimezone(UTC).isoformat(), key])).decode().rstrip("=")


def decode_cursor(kind: str, cursor: str) -> tuple[datetime, str]:
    try:
        k, t, key = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        if k != kind:
            raise BadCursor(f"this cursor belongs to another listing ({k}), not {kind}")
        return datetime.fromisoformat(t), str(key)
    except BadCursor:
        raise
    except Exception as e:  # noqa: BLE001 - any malformed input is the caller's error
        raise BadCursor("cursor is not one this API handed out; pass next_cursor unchanged") from e


def _clean(row: dict[str, Any]) -> dict[str, Any]:
    """NaN/inf are not JSON: they go out as null."""
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in row.items()}


@dataclass
class Page:
    items: list[dict[str, Any]]
    next_cursor: str | None


def latest_features(lake: LakeSource, coin: str | None = None) -> list[dict[str, Any]]:
    """Each coin's newest feature row: only the newest day directory of each symbol is read."""
    where = "WHERE coin_id = ?" if coin else ""
    rows = lake.query(
        FEATURES, newest_leaf_files,
        lambda src: f"SELECT {_FEATURE_COLUMNS} FROM {src} {where} "
                    "QUALIFY row_number() OVER (PARTITION BY coin_id ORDER BY event_time DESC) = 1 ORDER BY coin_id",
        [coin] if coin else [])
    return [_clean(r) for r in rows]


def candles(lake: LakeSource, coin: str, interval: str, start: datetime | None, end: datetime | None,
            limit: int, cursor: str | None) -> Page:
    """A coin's candles in [start, end) ascending, `limit` per page after the cursor's time."""
    dataset, col = CANDLES[interval]
    conds: list[str] = ["coin_id = ?"]
    params: list[Any] = [coin]
    if start is not None:
        conds.append(f"{col} >= ?")
        params.append(start)
    if end is not None:
        conds.append(f"{col} < ?")
        params.append(end)
    after = decode_cursor(f"candles:{coin}:{interval}", cursor)[0] if cursor else None
    if after is not None:
        conds.append(f"{col} > ?")
        params.append(after)
    first = max(t for t in (start, after) if t is not None).date() if (start or after) else None
    extra = _CANDLE_1M_EXTRA if interval == "1m" else _CANDLE_1H_EXTRA
    def sql(src: str) -> str:
        return (f"SELECT {col} AS time, open, high, low, close, volume, tick_count{extra} FROM {src} "
                f"WHERE {' AND '.join(conds)} ORDER BY {col} LIMIT ?")

    # Day directories in ascending order, a few at a time: a day holds at most PER_DAY candles of
    # a coin and every row of a day precedes the next day's, so a page reads the days it needs
    # (a 30-day range's first page of 5000 minutes reads 4 days, not 30).
    days = sorted({leaf_date(p.parent) for p in files_between(lake.files(dataset), first, end.date() if end else None)})
    rows: list[dict[str, Any]] = []
    i = 0
    while i < len(days) and len(rows) <= limit:
        need = limit + 1 - len(rows)
        n = -(-need // PER_DAY[interval])
        lo, hi = days[i], days[min(i + n, len(days)) - 1]
        rows += lake.query(dataset, lambda files, lo=lo, hi=hi: files_between(files, lo, hi), sql, [*params, need])
        i += n
    more = len(rows) > limit
    rows = [_clean(r) for r in rows[:limit]]
    nxt = encode_cursor(f"candles:{coin}:{interval}", rows[-1]["time"]) if more else None
    return Page(rows, nxt)


def _newest_first(lake: LakeSource, dataset: str, kind: str, columns: str, key: str, filters: dict[str, str | None],
                  start: datetime | None, end: datetime | None, limit: int, cursor: str | None) -> Page:
    """Rows in [start, end) newest first by (event_time, key), after the cursor's (time, key)."""
    conds: list[str] = []
    params: list[Any] = []
    for column, value in filters.items():  # column names are ours, values are parameters
        if value is not None:
            conds.append(f"{column} = ?")
            params.append(value)
    if start is not None:
        conds.append("event_time >= ?")
        params.append(start)
    if end is not None:
        conds.append("event_time < ?")
        params.append(end)
    before: datetime | None = None
    if cursor:
        before, before_key = decode_cursor(kind, cursor)
        conds.append(f"(event_time < ? OR (event_time = ? AND {key} < ?))")
        params += [before, before, before_key]
    last = min(t for t in (end, before) if t is not None).date() if (end or before) else None
    where = f"WHERE {' AND '.join(conds)}" if conds else ""
    rows = lake.query(
        dataset, lambda files: files_between(files, start.date() if start else None, last),
        lambda src: f"SELECT {columns} FROM {src} {where} ORDER BY event_time DESC, {key} DESC LIMIT ?",
        [*params, limit + 1])
    more = len(rows) > limit
    rows = [_clean(r) for r in rows[:limit]]
    nxt = encode_cursor(kind, rows[-1]["event_time"], rows[-1][key]) if more else None
    return Page(rows, nxt)


def anomalies(lake: LakeSource, coin: str | None, severity: str | None, rule: str | None,
              start: datetime | None, end: datetime | None, limit: int, cursor: str | None) -> Page:
    return _newest_first(lake, ANOMALIES, "anomalies", _ANOMALY_COLUMNS, "anomaly_id",
                         {"coin_id": coin, "severity": severity, "rule": rule}, start, end, limit, cursor)


def predictions(lake: LakeSource, coin: str | None, start: datetime | None, end: datetime | None,
                limit: int, cursor: str | None) -> Page:
    return _newest_first(lake, PREDICTIONS, "predictions", _PREDICTION_COLUMNS, "coin_id",
                         {"coin_id": coin}, start, end, limit, cursor)


def coins_with_data(lake: LakeSource) -> set[str]:
    """Symbols that have a features directory (from the listing alone)."""
    return {p.parent.name.removeprefix("symbol=") for p in lake.files(FEATURES)}
