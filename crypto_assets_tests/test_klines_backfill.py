"""History backfill: the klines fetchers and the daily-partitioned `klines_1m` asset against a
local exchange (crypto_assets_tests/kline_server.py) that pages, throttles once with a 429 and
leaves minutes out, materialized through Dagster's real execution into a real DuckDB file."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import dagster as dg
import duckdb
import polars as pl
import pytest

from crypto_assets.defs.history import klines_1m
from crypto_assets.producers.exchanges.klines import KlineFormatError, binance_day, coinbase_day
from crypto_assets.producers.exchanges.rest_http import ExchangeRestClient
from crypto_assets.resources import LakehouseResource
from crypto_assets.resources.exchanges import ExchangeRestResource
from crypto_assets.transforms.kline_days import replace_day
from crypto_assets.warehouse.kline_tables import BARS_1M_VIEW
from crypto_assets.warehouse.tables import TABLES
from crypto_assets_tests.kline_server import EXACT_PRICE, FakeExchange, price

D1, D2 = date(2026, 11, 28), date(2026, 11, 29)
T1 = int(datetime(2026, 11, 28, tzinfo=UTC).timestamp())


def minute(day_start: int, hh: int, mm: int) -> int:
    return day_start + hh * 3600 + mm * 60


# Day 1: Binance BTCUSDT lost 03:14; Coinbase ETH-USD (thin) had no trade at 10:00-10:02 and 23:59.
MISSING = {"BTCUSDT": {minute(T1, 3, 14)},
           "ETH-USD": {minute(T1, 10, 0), minute(T1, 10, 1), minute(T1, 10, 2), minute(T1, 23, 59)}}


@pytest.fixture
def exchange(httpserver) -> FakeExchange:
    ex = FakeExchange(missing={k: set(v) for k, v in MISSING.items()}, exact_minute=minute(T1, 12, 0),
                      throttle_once={"ETHUSDT"})
    ex.install(httpserver)
    return ex


def resources(httpserver, home, *, products=("BTC-USD", "ETH-USD")) -> dict:
    url = httpserver.url_for("").rstrip("/")
    return {"exchanges": ExchangeRestResource(binance_rest_url=url, coinbase_rest_url=url,
                                              binance_symbols=["btcusdt", "ethusdt"], coinbase_products=list(products)),
            "lakehouse": LakehouseResource(home=str(home))}


def test_binance_day_pages_by_1000_oldest_first_with_exact_decimals(httpserver, exchange):
    frame = binance_day(ExchangeRestClient.binance(httpserver.url_for("")), "btcusdt", D1)
    assert [c["startTime"] for c in exchange.binance_calls] == [str(T1 * 1000), str((T1 + 1001 * 60) * 1000)]  # 03:14 is missing
    assert {c["limit"] for c in exchange.binance_calls} == {"1000"}
    assert {c["endTime"] for c in exchange.binance_calls} == {str((T1 + 86400) * 1000 - 1)}
    assert frame.height == 1439 and frame["bar_start"].is_sorted()
    row = frame.filter(frame["bar_start"] == datetime(2026, 11, 28, 12, 0, tzinfo=UTC)).row(0, named=True)
    c = price("BTCUSDT", minute(T1, 12, 0))
    assert (row["product"], row["coin_id"], row["close"], row["high"]) == ("BTCUSDT", "bitcoin", c, c + 2)
    assert (row["base_volume"], row["buy_volume"], row["sell_volume"]) == (Decimal("1.5"), Decimal("0.6"), Decimal("0.9"))
    assert row["quote_volume"] == c * Decimal("1.5") and row["trade_count"] == 7
    assert row["vwap"] == pytest.approx(float(c))


def test_coinbase_day_is_five_windows_of_at_most_300_newest_first_reordered(httpserver, exchange):
    frame = coinbase_day(ExchangeRestClient.coinbase(httpserver.url_for("")), "BTC-USD", D1)
    starts = [datetime.fromisoformat(a["start"]) for _p, a in exchange.coinbase_calls]
    ends = [datetime.fromisoformat(a["end"]) for _p, a in exchange.coinbase_calls]
    assert len(starts) == 5 and all(e - s < timedelta(minutes=300) for s, e in zip(starts, ends, strict=True))
    assert frame.height == 1440 and frame["bar_start"].is_sorted() and frame["bar_start"].is_unique().all()
    row = frame.filter(frame["bar_start"] == datetime(2026, 11, 28, 12, 0, tzinfo=UTC)).row(0, named=True)
    assert row["close"] == Decimal(EXACT_PRICE)  # a JSON number with 16 significant digits, not float-rounded
    assert float(EXACT_PRICE) != float(Decimal(EXACT_PRICE) + Decimal("0.00000001"))  # (the digits a float keeps)
    assert row["quote_volume"] is None and row["buy_volume"] is None and row["trade_count"] is None


def test_a_malformed_answer_is_a_clear_error(httpserver):
    httpserver.expect_request("/api/v3/klines").respond_with_json([[1, "x"]])
    with pytest.raises(KlineFormatError, match="binance BTCUSDT: a candle is not a list of 12 fields"):
        binance_day(ExchangeRestClient.binance(httpserver.url_for("")), "btcusdt", D1)
    httpserver.expect_request("/products/BTC-USD/candles").respond_with_data(
        '[[1764288000, "low", 1, 1, 1, 1]]', content_type="application/json")
    with pytest.raises(KlineFormatError, match=r"coinbase BTC-USD: \d+ candles with a field that is not a number"):
        coinbase_day(ExchangeRestClient.coinbase(httpserver.url_for("")), "BTC-USD", D1)


def _run(httpserver, home, day: date, **kw) -> dg.ExecuteInProcessResult:
    return dg.materialize([klines_1m], partition_key=day.isoformat(), resources=resources(httpserver, home, **kw))


def test_two_partitions_rerun_gap_report_and_check(httpserver, exchange, tmp_path):
    home = tmp_path / "w"
    r1 = _run(httpserver, home, D1)
    md = r1.get_asset_materialization_events()[0].materialization.metadata
    assert md["rows_per_product"].value == {"binance:BTCUSDT": 1439, "binance:ETHUSDT": 1440,
                                            "coinbase:BTC-USD": 1440, "coinbase:ETH-USD": 1436}
    assert md["missing_minutes_per_product"].value == {"binance:BTCUSDT": 1, "binance:ETHUSDT": 0,
                                                       "coinbase:BTC-USD": 0, "coinbase:ETH-USD": 4}
    # 2 Binance symbols x 2 pages + the 429 answer, 2 Coinbase products x 5 windows
    assert (md["requests"].value, md["rate_limit_waits"].value) == (15, 1)
    assert float(str(md["rate_limit_waited_s"].value)) >= 1.0  # the Retry-After: 1
    check = r1.get_asset_check_evaluations()[0]
    assert (check.check_name, check.passed, check.severity) == ("klines_1m_complete", False, dg.AssetCheckSeverity.WARN)
    assert check.metadata["missing_minutes"].value == 5
    listing = str(check.metadata["incomplete"].value)
    assert "| coinbase | ETH-USD | 4 | 10:00-10:02, 23:59-23:59 |" in listing
    assert "| binance | BTCUSDT | 1 | 03:14-03:14 |" in listing

    r2 = _run(httpserver, home, D2)
    assert r2.get_asset_check_evaluations()[0].passed
    lh = LakehouseResource(home=str(home))
    with lh.connect() as conn:
        before = conn.sql("SELECT bar_start::DATE, count(*), max(loaded_at) FROM klines_1m GROUP BY 1 ORDER BY 1").fetchall()
        assert [(d, n) for d, n, _t in before] == [(D1, 1439 + 1440 + 1440 + 1436), (D2, 4 * 1440)]
        gaps = conn.sql("SELECT day, product, loaded_minutes, missing_minutes, missing_ranges FROM kline_gaps "
                        "WHERE missing_minutes > 0 ORDER BY ALL").fetchall()
        assert gaps == [(D1, "BTCUSDT", 1439, 1, "03:14-03:14"), (D1, "ETH-USD", 1436, 4, "10:00-10:02, 23:59-23:59")]
        assert conn.sql("SELECT count(*) FROM kline_gaps").fetchall() == [(8,)]

    # the exchange now has 03:14 (a late candle): re-running day 1 replaces it, no duplicate
    exchange.missing["BTCUSDT"].clear()
    r3 = _run(httpserver, home, D1)
    assert r3.success
    with lh.connect() as conn:
        after = conn.sql("SELECT bar_start::DATE, count(*), max(loaded_at) FROM klines_1m GROUP BY 1 ORDER BY 1").fetchall()
        assert [(d, n) for d, n, _t in after] == [(D1, 1440 * 3 + 1436), (D2, 4 * 1440)]
        assert after[0][2] > before[0][2] and after[1][2] == before[1][2]  # day 2 untouched
        assert conn.sql("SELECT count(*) FROM (SELECT DISTINCT exchange, product, bar_start FROM klines_1m)").fetchall() \
            == [(1440 * 3 + 1436 + 4 * 1440,)]
        assert conn.sql("SELECT product, missing_minutes FROM kline_gaps WHERE day = $d AND missing_minutes > 0",
                        params={"d": D1}).fetchall() == [("ETH-USD", 4)]
        exact = conn.sql("SELECT close FROM klines_1m WHERE product = 'BTC-USD' AND bar_start = $t",
                         params={"t": datetime(2026, 11, 28, 12, 0, tzinfo=UTC)}).fetchall()
        assert exact == [(Decimal(EXACT_PRICE),)]


def test_a_failed_write_leaves_the_day_as_it_was(httpserver, exchange, tmp_path):
    """The day's delete and insert are one transaction: an insert that fails (here a frame with a
    minute twice, against the primary key) rolls the delete back."""
    home = tmp_path / "w"
    assert _run(httpserver, home, D1).success
    frame = binance_day(ExchangeRestClient.binance(httpserver.url_for("")), "btcusdt", D1)
    products = pl.DataFrame({"exchange": ["binance"], "product": ["BTCUSDT"]})
    with LakehouseResource(home=str(home)).connect() as conn:
        before = conn.sql("SELECT count(*), max(loaded_at) FROM klines_1m WHERE product = 'BTCUSDT'").fetchall()
        with pytest.raises(duckdb.ConstraintException):
            replace_day(conn, pl.concat([frame, frame.head(1)]), products, D1, datetime.now(UTC))
        assert conn.sql("SELECT count(*), max(loaded_at) FROM klines_1m WHERE product = 'BTCUSDT'").fetchall() == before
        assert conn.sql("SELECT missing_minutes FROM kline_gaps WHERE product = 'BTCUSDT'").fetchall() == [(1,)]


def test_an_unknown_product_fails_the_partition_after_loading_the_others(httpserver, exchange, tmp_path):
    home = tmp_path / "w"
    result = dg.materialize([klines_1m], partition_key=D2.isoformat(), raise_on_error=False,
                            resources=resources(httpserver, home, products=("BTC-USD", "NOPE-USD")))
    assert not result.success
    with LakehouseResource(home=str(home)).connect() as conn:
        assert conn.sql("SELECT product, count(*) FROM klines_1m GROUP BY 1 ORDER BY 1").fetchall() == [
            ("BTC-USD", 1440), ("BTCUSDT", 1440), ("ETHUSDT", 1440)]


SCHEMA_BAR_COLUMNS = ("exchange", "product", "coin_id", "bar_start", "open", "high", "low", "close", "base_volume",
                      "quote_volume", "vwap", "trade_count", "buy_volume", "sell_volume", "first_trade_id",
                      "last_trade_id")
# The trade bars' columns as SCHEMA.md fixes them, for a branch where trade_bars_1m is not registered yet.
TRADE_BARS_1M = """CREATE TABLE IF NOT EXISTS trade_bars_1m (exchange VARCHAR, product VARCHAR, coin_id VARCHAR,
    bar_start TIMESTAMPTZ, open DECIMAL(18,8), high DECIMAL(18,8), low DECIMAL(18,8), close DECIMAL(18,8),
    base_volume DECIMAL(38,8), quote_volume DECIMAL(38,8), vwap DOUBLE, trade_count BIGINT,
    buy_volume DECIMAL(38,8), sell_volume DECIMAL(38,8), first_trade_id BIGINT, last_trade_id BIGINT)"""


def test_bars_1m_prefers_trade_bars_and_fills_the_other_minutes_with_klines(httpserver, exchange, tmp_path):
    home = tmp_path / "w"
    assert _run(httpserver, home, D1).success
    with LakehouseResource(home=str(home)).connect() as conn:
        if "trade_bars_1m" in TABLES:  # registered: ensure_schema created both the table and the view on connect
            assert conn.sql("SELECT count(*) FROM duckdb_views() WHERE view_name = 'bars_1m'").fetchall() == [(1,)]
        else:
            conn.execute(TRADE_BARS_1M)
            conn.execute(BARS_1M_VIEW)
        # columns a trade-bar table has beyond SCHEMA.md's (indicators, state, run stamp): zeros
        described = [r[0] for r in conn.sql("DESCRIBE trade_bars_1m").fetchall()]
        extra = "".join(f", 0 AS {c}" for c in described if c not in SCHEMA_BAR_COLUMNS)
        # trades for 03:13 (a kline exists) and 03:14 (the minute Binance has no kline for)
        conn.execute(f"""INSERT INTO trade_bars_1m BY NAME
                        SELECT 'binance' AS exchange, 'BTCUSDT' AS product, 'bitcoin' AS coin_id, t AS bar_start,
                               1 AS open, 1 AS high, 1 AS low, 1 AS close, 2 AS base_volume, 2 AS quote_volume,
                               1.0 AS vwap, 3 AS trade_count, 1 AS buy_volume, 1 AS sell_volume,
                               10 AS first_trade_id, 12 AS last_trade_id{extra}
                        FROM (VALUES (TIMESTAMPTZ '2026-11-28 03:13:00+00'), (TIMESTAMPTZ '2026-11-28 03:14:00+00')) v(t)""")
        rows = conn.sql("SELECT strftime(bar_start, '%H:%M'), source, trade_count FROM bars_1m WHERE product = "
                        "'BTCUSDT' AND bar_start BETWEEN '2026-11-28 03:12:00+00' AND '2026-11-28 03:15:00+00' "
                        "ORDER BY 1").fetchall()
        assert rows == [("03:12", "klines", 7), ("03:13", "trades", 3), ("03:14", "trades", 3), ("03:15", "klines", 7)]
        total = conn.sql("SELECT source, count(*) FROM bars_1m GROUP BY 1 ORDER BY 1").fetchall()
        assert total == [("klines", 1439 + 1440 + 1440 + 1436 - 1), ("trades", 2)]
        dup = conn.sql("SELECT count(*) FROM (SELECT exchange, product, bar_start FROM bars_1m GROUP BY ALL "
                       "HAVING count(*) > 1)").fetchall()
        assert dup == [(0,)]
