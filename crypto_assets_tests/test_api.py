"""The read API (crypto_assets/api) through fastapi's test client, over a lake the real transforms
and exports built, with the warehouse file moved away first: the API reads only the mirror."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import polars as pl
import pytest
from fastapi.testclient import TestClient

from crypto_assets.api.app import create_app
from crypto_assets.api.models import Candle, CandlePage
from crypto_assets.defs import predictions as predictions_asset
from crypto_assets.producers.simulator.config import SimulatorConfig
from crypto_assets.producers.simulator.messages import generate_ticks
from crypto_assets.resources import LakehouseResource
from crypto_assets.transforms.chain import run_incremental
from crypto_assets.warehouse.lake_compaction import compact_lake
from crypto_assets.warehouse.tables import TABLES
from crypto_assets.warehouse.watermarks import get_state
from crypto_assets_tests.lake_helpers import export_registered
from crypto_assets_tests.silver_helpers import export_gold_mirrors, insert_raw_batch

COINS = ["bitcoin", "ethereum", "solana"]
START = datetime(2026, 10, 1, tzinfo=UTC)
DAYS = 1.5


def _predictions(lh: LakehouseResource) -> None:
    """Predictions of bitcoin's last 30 feature rows written by the asset's own write and export."""
    with lh.connect() as conn:
        conn.execute(TABLES["predictions"].ddl)
        hwm, seq = get_state(conn, "predictions")
        rows = conn.sql("SELECT coin_id, symbol, event_time, price_usd FROM market_features "
                        "WHERE coin_id = 'bitcoin' ORDER BY event_time DESC LIMIT 30").pl()
    out = rows.with_columns(
        trend_prob_up=pl.lit(0.6), trend_model_version=pl.lit("3"), anomaly_prob=pl.lit(0.1),
        anomaly_model_version=pl.lit("2"), forecast_return_1h=pl.lit(0.001), forecast_return_4h=pl.lit(None, pl.Float64),
        forecast_return_24h=pl.lit(float("nan")), price_model_versions=pl.lit("1h:v4"),
        predicted_at=pl.lit(datetime.now(UTC)), published_at=pl.lit(None, dtype=pl.Datetime("us", "UTC")))
    assert predictions_asset._write(lh, predictions_asset.Batch(hwm, seq, 1, rows), out)
    assert predictions_asset._export(lh) >= 1


@pytest.fixture(scope="module")
def lake(tmp_path_factory):
    """(lake root, what the warehouse held), the warehouse file renamed away afterwards."""
    lh = LakehouseResource(home=str(tmp_path_factory.mktemp("api")), coins=COINS)
    ticks = generate_ticks(SimulatorConfig(coins=tuple(COINS), seed=5), int(DAYS * 1440), START, "60s")
    df = pl.DataFrame(ticks, infer_schema_length=None).select(
        "coin_id", "symbol", pl.col("last_updated_at").str.to_datetime(time_zone="UTC"), "price_usd", "volume_24h_usd")
    with lh.connect() as conn:
        insert_raw_batch(conn, df)
        run_incremental(conn, COINS)
        export_gold_mirrors(conn, lh.lake_path)
        for name in ("ohlcv_1h", "anomalies"):
            export_registered(conn, lh.lake_path, name)
        want = {
            "ohlcv_1m": conn.sql("SELECT * FROM ohlcv_1m ORDER BY coin_id, minute").pl(),
            "ohlcv_1h": conn.sql("SELECT * FROM ohlcv_1h ORDER BY coin_id, hour").pl(),
            "anomalies": conn.sql("SELECT * FROM anomalies ORDER BY event_time DESC, anomaly_id DESC").pl(),
            "latest": conn.sql("SELECT * FROM market_features QUALIFY row_number() OVER "
                               "(PARTITION BY coin_id ORDER BY event_time DESC) = 1 ORDER BY coin_id").pl(),
        }
    _predictions(lh)
    lh.duckdb_path.rename(lh.duckdb_path.with_suffix(".moved"))
    return lh.lake_path, want


@pytest.fixture(scope="module")
def client(lake):
    with TestClient(create_app(lake[0], coin_ids=[*COINS, "cardano"])) as c:
        yield c


def _all_pages(client, path: str, **params) -> tuple[list[dict], int]:
    items, pages, cursor = [], 0, None
    while True:
        r = client.get(path, params={**params, **({"cursor": cursor} if cursor else {})})
        assert r.status_code == 200, r.text
        body = r.json()
        items += body["items"]
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            return items, pages


def _t(s: str) -> datetime:
    return datetime.fromisoformat(s)


def test_coins_say_which_have_data(client):
    got = {c["coin_id"]: (c["symbol"], c["has_data"]) for c in client.get("/coins").json()}
    assert got == {"bitcoin": ("btc", True), "ethereum": ("eth", True), "solana": ("sol", True), "cardano": ("ada", False)}


def test_candles_page_through_a_range_to_the_warehouse_rows(client, lake):
    want = lake[1]["ohlcv_1m"].filter(pl.col("coin_id") == "ethereum")
    start, end = START + timedelta(hours=20), START + timedelta(hours=30)  # crosses a day directory
    want = want.filter((pl.col("minute") >= start) & (pl.col("minute") < end))
    items, pages = _all_pages(client, "/candles", coin="ethereum", interval="1m", start=start.isoformat(),
                              end=end.replace(tzinfo=None).isoformat(), limit=250)  # no offset: UTC
    assert pages == -(-want.height // 250) and len(items) == want.height == 600
    assert [_t(i["time"]) for i in items] == want["minute"].to_list()
    assert [i["close"] for i in items] == want["close"].to_list()
    assert [i["rsi_14"] for i in items[-5:]] == pytest.approx(want["rsi_14"].to_list()[-5:])
    whole, pages = _all_pages(client, "/candles", coin="ethereum", limit=1000)  # pages spanning day directories
    assert pages == 3 and [_t(i["time"]) for i in whole] == lake[1]["ohlcv_1m"].filter(
        pl.col("coin_id") == "ethereum")["minute"].to_list()
    hours = client.get("/candles", params={"coin": "ethereum", "interval": "1h"}).json()
    want_h = lake[1]["ohlcv_1h"].filter(pl.col("coin_id") == "ethereum")
    assert [(_t(i["time"]), i["high"]) for i in hours["items"]] == list(zip(want_h["hour"], want_h["high"], strict=True))
    assert hours["symbol"] == "eth" and hours["items"][0]["rsi_14"] is None
    for body in (hours, client.get("/candles", params={"coin": "ethereum", "limit": 50}).json()):
        page = CandlePage.model_validate(body)  # the documented shape, though the rows skip validation
        assert set(body["items"][0]) == set(Candle.model_fields) and len(page.items) == len(body["items"])


@pytest.mark.parametrize("params, status, says", [
    ({"coin": "dogecoin"}, 404, "unknown coin 'dogecoin'"),
    ({"coin": "bitcoin", "interval": "5m"}, 422, "1m"),
    ({"coin": "bitcoin", "start": "2026-10-02T00:00:00Z", "end": "2026-10-01T00:00:00Z"}, 422, "must be before end"),
    ({"coin": "bitcoin", "limit": 5001}, 422, "less than or equal to 5000"),
    ({"coin": "bitcoin", "limit": 0}, 422, "greater than or equal to 1"),
    ({"coin": "bitcoin", "start": "yesterday"}, 422, "datetime"),
    ({"coin": "bitcoin", "cursor": "not-a-cursor"}, 400, "cursor"),
    ({}, 422, "coin"),
])
def test_bad_input_is_a_clear_4xx(client, params, status, says):
    r = client.get("/candles", params=params)
    assert r.status_code == status, r.text
    assert says in r.text


def test_a_cursor_of_another_listing_is_refused(client):
    page = client.get("/candles", params={"coin": "bitcoin", "limit": 2}).json()
    r = client.get("/candles", params={"coin": "solana", "cursor": page["next_cursor"]})
    assert r.status_code == 400 and "another listing" in r.json()["detail"]
    assert client.get("/anomalies", params={"cursor": page["next_cursor"]}).status_code == 400


def test_a_hostile_value_is_a_parameter_not_sql(client):
    r = client.get("/anomalies", params={"rule": "x' OR '1'='1", "limit": 5})
    assert r.status_code == 200 and r.json()["items"] == []


def test_latest_prices_and_features_are_the_newest_rows(client, lake):
    want = lake[1]["latest"]
    prices = client.get("/prices/latest").json()
    assert [(p["coin_id"], _t(p["event_time"]), p["price_usd"]) for p in prices] == list(
        zip(want["coin_id"], want["event_time"], want["price_usd"], strict=True))
    feats = client.get("/features/latest", params={"coin": "solana"}).json()
    sol = want.filter(pl.col("coin_id") == "solana").row(0, named=True)
    assert len(feats) == 1 and feats[0]["sma_15m"] == pytest.approx(sol["sma_15m"])
    assert feats[0]["zscore_15m"] == pytest.approx(sol["zscore_15m"])
    assert client.get("/prices/latest", params={"coin": "cardano"}).json() == []
    assert client.get("/features/latest", params={"coin": "nope"}).status_code == 404


def test_anomalies_newest_first_with_filters(client, lake):
    want = lake[1]["anomalies"]
    assert want.height > 3, "the simulated series should trip the rules a few times"
    items, pages = _all_pages(client, "/anomalies", limit=2)
    assert [i["anomaly_id"] for i in items] == want["anomaly_id"].to_list() and pages == -(-want.height // 2)
    crit = client.get("/anomalies", params={"severity": "critical", "coin": "bitcoin"}).json()["items"]
    assert [i["anomaly_id"] for i in crit] == want.filter(
        (pl.col("severity") == "critical") & (pl.col("coin_id") == "bitcoin"))["anomaly_id"].to_list()
    assert client.get("/anomalies", params={"severity": "bad"}).status_code == 422


def test_predictions_carry_their_model_versions(client):
    items, pages = _all_pages(client, "/predictions", coin="bitcoin", limit=7)
    assert len(items) == 30 and pages == 5
    times = [_t(i["event_time"]) for i in items]
    assert times == sorted(times, reverse=True)
    assert {(i["trend_model_version"], i["anomaly_model_version"], i["price_model_versions"]) for i in items} == {
        ("3", "2", "1h:v4")}
    assert items[0]["forecast_return_24h"] is None and items[0]["forecast_return_4h"] is None  # NaN goes out as null
    assert client.get("/predictions", params={"coin": "ethereum"}).json()["items"] == []


def test_health_reports_freshness_per_coin(lake):
    old = TestClient(create_app(lake[0], coin_ids=[*COINS, "cardano"])).get("/health").json()
    assert old["status"] == "stale" and old["stale_after_seconds"] == 900
    by = {c["coin_id"]: c for c in old["coins"]}
    assert by["cardano"] == {"coin_id": "cardano", "symbol": "ada", "newest_event_time": None, "age_seconds": None,
                             "fresh": False}
    assert _t(by["bitcoin"]["newest_event_time"]) == lake[1]["latest"]["event_time"][0]
    assert by["bitcoin"]["age_seconds"] > 86400 and not by["bitcoin"]["fresh"]
    lenient = TestClient(create_app(lake[0], coin_ids=COINS, stale_after_s=1e9)).get("/health").json()
    assert lenient["status"] == "ok" and all(c["fresh"] for c in lenient["coins"])


def test_openapi_documents_the_models(client):
    doc = client.get("/openapi.json").json()
    assert {"/coins", "/prices/latest", "/features/latest", "/candles", "/anomalies", "/predictions", "/health"} <= set(
        doc["paths"])
    assert "Wilder RSI" in doc["components"]["schemas"]["Candle"]["properties"]["rsi_14"]["description"]
    limit = next(p for p in doc["paths"]["/candles"]["get"]["parameters"] if p["name"] == "limit")
    assert limit["schema"]["maximum"] == 5000
    assert client.get("/docs").status_code == 200


def test_listing_is_cached_briefly_and_survives_a_compaction(tmp_path, lake):
    """Within the TTL the lake is not listed again; a compaction that replaced the listed hour
    files by day files is noticed (the read fails, the dataset is listed again); a new file
    shows up once the TTL has passed."""
    import shutil

    root = tmp_path / "lake"
    shutil.copytree(lake[0], root)
    app = create_app(root, coin_ids=COINS, listing_ttl_s=2.0)
    lake_source = app.state.lake
    c = TestClient(app)
    params = {"coin": "bitcoin", "interval": "1h"}
    first = c.get("/candles", params=params).json()["items"]
    n = lake_source.listings
    for _ in range(5):
        assert c.get("/candles", params=params).json()["items"] == first
    assert lake_source.listings == n
    hour_files = sorted((root / "gold/ohlcv_1h").glob("date=*/part-*.parquet"))
    assert hour_files
    compact_lake(root, now=START + timedelta(days=10), datasets=["gold/ohlcv_1h"])
    assert not any(p.exists() for p in hour_files)
    assert c.get("/candles", params=params).json()["items"] == first  # listed again after the IO error
    assert lake_source.listings == n + 1
    # a new day of candles (a copy of the last one, shifted) appears after the TTL
    last_day = sorted((root / "gold/ohlcv_1h").glob("date=*"))[-1]
    new_day = root / "gold/ohlcv_1h" / f"date={(START + timedelta(days=5)).date().isoformat()}"
    new_day.mkdir()
    import duckdb

    duckdb.sql(f"COPY (SELECT * REPLACE (hour + INTERVAL 4 DAY AS hour) FROM '{last_day}/day.parquet') "
               f"TO '{new_day}/day.parquet' (FORMAT parquet)")
    listed_at = time.monotonic()
    while len(c.get("/candles", params=params).json()["items"]) == len(first):
        assert time.monotonic() - listed_at < 2.0 + 3.0, "the new day never showed up"
        time.sleep(0.1)


def test_serve_binds_loopback_by_default_and_answers(lake):
    """`crypto-assets serve` as a real process: uvicorn on 127.0.0.1 only, answering over HTTP."""
    import os
    import socket
    import subprocess
    import sys

    import httpx2
    import psutil

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "COINS": ",".join(COINS)}
    proc = subprocess.Popen([sys.executable, "-m", "crypto_assets.ops.cli", "serve", "--home", str(lake[0].parent),
                             "--port", str(port), "--log-level", "warning"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline, body = time.monotonic() + 60, None
        while time.monotonic() < deadline and body is None:
            try:
                body = httpx2.get(f"http://127.0.0.1:{port}/health", timeout=2).json()
            except httpx2.TransportError:
                assert proc.poll() is None, proc.communicate()[0]
                time.sleep(0.2)
        assert body is not None and {c["coin_id"] for c in body["coins"]} == set(COINS)
        listening = {c.laddr.ip for c in psutil.Process(proc.pid).net_connections() if c.status == psutil.CONN_LISTEN}
        assert listening == {"127.0.0.1"}
    finally:
        proc.terminate()
        proc.wait(10)
