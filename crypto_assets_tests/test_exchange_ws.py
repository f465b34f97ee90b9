"""The exchange WebSocket sources against a local server that speaks both protocols
(crypto_assets_tests/exchange_ws_server.py): subscription, acks, heartbeats, pings,
disconnects, duplicates, out-of-order and malformed frames, id jumps healed in order."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from crypto_assets.kafka.trade_contract import TRADE_FIELDS
from crypto_assets.producers.exchanges import binance_ws, coinbase_ws
from crypto_assets.producers.exchanges.binance_ws import BinanceFeed
from crypto_assets.producers.exchanges.coinbase_ws import CoinbaseFeed
from crypto_assets.producers.exchanges.trade_stream import (
    Backoff,
    Heartbeat,
    MalformedFrame,
    SubscriptionRejected,
    TradeStream,
)
from crypto_assets.producers.exchanges.trade_tape import TradeTape
from crypto_assets_tests.exchange_ws_helpers import (
    FAST,
    NOW,
    as_traded,
    expected,
    on_rest,
    real_healer,
    rest_server,
)
from crypto_assets_tests.exchange_ws_server import (
    Beat,
    Close,
    Drop,
    ExchangeWsServer,
    Pause,
    Ping,
    Raw,
    Send,
    Trade,
    binance_frame,
    coinbase_frame,
)


@pytest.fixture
def rest():
    yield from rest_server()


def one_trade(events: list) -> dict:
    [trade] = events
    assert isinstance(trade, dict), trade
    return trade


def ids(trades: list[dict], product: str) -> list[int]:
    return [t["trade_id"] for t in trades if t["product"] == product]


# ----------------------------------------------------------------------------- pure parsing
def test_coinbase_match_maps_to_the_contract_with_the_taker_side():
    t = Trade("BTC-USD", 912345678, "90123.45", "0.00120000", "buy", datetime(2026, 12, 2, 13, 30, 5, 123456, UTC))
    trade = one_trade(coinbase_ws.parse_frame(coinbase_frame(Send(t), 7), NOW))
    assert set(trade) == set(TRADE_FIELDS)
    assert trade | {"received_at": None} == {
        "schema_version": 1, "exchange": "coinbase", "product": "BTC-USD", "base_currency": "BTC",
        "quote_currency": "USD", "coin_id": "bitcoin", "trade_id": 912345678, "price": "90123.45",
        "size": "0.00120000", "side": "buy", "trade_time": "2026-12-02T13:30:05.123456Z",
        "received_at": None, "origin": "ws"}
    assert trade["received_at"] == "2026-12-02T13:45:00Z"
    # the wire carries the MAKER's side: a taker buy is a maker sell
    assert '"side":"sell"' in coinbase_frame(Send(t), 7)
    [hb] = coinbase_ws.parse_frame(coinbase_frame(Beat("ETH-USD", 42), 8), NOW)
    assert hb == Heartbeat("ETH-USD", 42)


def test_binance_trade_maps_to_the_contract():
    t = Trade("ETHUSDT", 5001, "3012.10", "1.25000000", "sell", datetime(2026, 12, 2, 13, 30, 5, 120000, UTC))
    trade = one_trade(binance_ws.parse_frame(binance_frame(t), NOW))
    assert (trade["exchange"], trade["product"], trade["base_currency"], trade["quote_currency"]) == (
        "binance", "ETHUSDT", "ETH", "USDT")
    assert trade["coin_id"] == "ethereum" and trade["trade_id"] == 5001
    assert Decimal(trade["price"]) == Decimal("3012.10") and trade["size"] == "1.25000000"
    assert trade["side"] == "sell"  # m = buyer is maker -> the seller took liquidity
    assert '"m":true' in binance_frame(t)
    assert trade["trade_time"] == "2026-12-02T13:30:05.120000Z"
    assert binance_ws.stream_path(["BTCUSDT", "ethusdt"]) == "/stream?streams=btcusdt@trade/ethusdt@trade"


@pytest.mark.parametrize("frame, why", [
    ("{nope", "not JSON"),
    ("[1, 2]", "JSON object"),
    ('{"type": "match", "trade_id": 1, "side": "up", "size": "1", "price": "1", "product_id": "BTC-USD",'
     ' "time": "2026-12-02T13:00:00Z"}', "side"),
    ('{"type": "match", "trade_id": "x1", "side": "buy", "size": "1", "price": "1", "product_id": "BTC-USD",'
     ' "time": "2026-12-02T13:00:00Z"}', "trade_id"),
    ('{"type": "match", "trade_id": 1, "side": "buy", "size": "1", "price": 1.5, "product_id": "BTC-USD",'
     ' "time": "2026-12-02T13:00:00Z"}', "decimal string"),
    ('{"type": "match", "trade_id": 1, "side": "buy", "size": "1", "price": "1", "product_id": "BTC-USD",'
     ' "time": "yesterday"}', "ISO 8601"),
    ('{"type": "heartbeat", "product_id": "BTC-USD"}', "last_trade_id"),
])
def test_coinbase_malformed_frames_say_why(frame, why):
    with pytest.raises(MalformedFrame, match=why):
        coinbase_ws.parse_frame(frame, NOW)


@pytest.mark.parametrize("frame, why", [
    ("not json", "not JSON"),
    ('{"stream": "btcusdt@trade"}', "data"),
    ('{"stream": "x", "data": {"e": "trade", "s": "BTCUSDT", "t": "7", "p": "1", "q": "1", "T": 1, "m": true}}',
     "data.t"),
    ('{"stream": "x", "data": {"e": "trade", "s": "BTCUSDT", "t": 7, "p": "1", "q": "1", "T": 1, "m": 0}}',
     "data.m"),
    ('{"stream": "x", "data": {"e": "trade", "s": "BTCXYZ", "t": 7, "p": "1", "q": "1", "T": 1, "m": true}}',
     "quote currency"),
])
def test_binance_malformed_frames_say_why(frame, why):
    with pytest.raises(MalformedFrame, match=why):
        binance_ws.parse_frame(frame, NOW)


def test_backoff_grows_exponentially_with_jitter_up_to_its_cap():
    b = Backoff(base_s=0.5, cap_s=30.0)
    assert [b.delay(n, 1.0) for n in range(8)] == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    assert b.delay(3, 0.0) == 2.0  # jitter takes at most half off
    assert b.delay(10_000, 0.99) <= 30.0


def test_tape_tracks_holes_duplicates_and_late_trades():
    tp = TradeTape(max_holes=2)
    assert tp.gap_before("X", 10) is None  # the first trade seen starts the tape
    tp.mark_sent("X", 10)
    assert tp.gap_before("X", 11) is None and tp.is_sent("X", 10) and not tp.is_sent("X", 11)
    assert tp.gap_before("X", 15) == (11, 14)
    tp.record_gap("X", (11, 14))
    tp.mark_sent("X", 15)
    assert tp.open_holes() == {"X": [(11, 14)]} and tp.missing() == 4
    assert tp.mark_sent("X", 12) is True  # a late trade fills its hole
    assert tp.open_holes() == {"X": [(11, 11), (13, 14)]} and tp.is_sent("X", 12) and not tp.is_sent("X", 13)
    tp.record_gap("X", (16, 16))
    assert tp.open_holes() == {"X": [(13, 14), (16, 16)]} and tp.holes_forgotten == 1  # bounded


# ----------------------------------------------------------------------------- Coinbase stream
def test_coinbase_stream_drops_duplicates_skips_malformed_and_heals_jumps_in_order(rest):
    btc, eth = on_rest(rest, "coinbase", "BTC-USD", 20, 100, 1), on_rest(rest, "coinbase", "ETH-USD", 5, 7000, 2)
    first = [Send(btc[0], "last_match"), Send(eth[0], "last_match"), Send(btc[1]), Send(btc[2]),
             Send(btc[2]),                    # duplicated
             Raw("{nope"),                    # malformed
             Send(btc[4]), Send(btc[3]),      # out of order: 104 before 103
             Beat("BTC-USD", 104), Send(eth[1]), Send(btc[5]),
             Drop()]                          # disconnect mid-stream
    second = [Send(btc[5], "last_match"),     # replayed after the reconnect
              Send(btc[9]),                   # first trade after the reconnect: 106..108 missed
              Send(eth[2]), Send(btc[10]),
              Beat("BTC-USD", 112),           # quiet stream: the heartbeat says 111, 112 happened
              Send(btc[13])]
    healer = real_healer(rest)
    out: list[dict] = []
    logs: list[str] = []
    with ExchangeWsServer(coinbase=[first, second]) as srv:
        stream = TradeStream(CoinbaseFeed(srv.url, ["BTC-USD", "ETH-USD"]), out.append, healer=healer.heal,
                             max_trades=17, duration_s=30, backoff=FAST, log=logs.append)
        stats = stream.run()
    assert srv.record.subscribes == 2 * [{"type": "subscribe", "product_ids": ["BTC-USD", "ETH-USD"],
                                          "channels": ["matches", "heartbeat"]}]
    assert ids(out, "BTC-USD") == list(range(100, 114))  # unbroken, each once, in id order
    assert as_traded(out, "BTC-USD") == expected(btc[:14], "coinbase")  # healed trades equal the tape
    assert as_traded(out, "ETH-USD") == expected(eth[:3], "coinbase")
    assert [t["origin"] for t in out if t["trade_id"] in (103, 106, 107, 108, 111, 112)] == 6 * ["rest"]
    gaps = [line.split(": ", 1)[1].split(" (")[0] for line in logs if "missing (" in line]
    assert gaps == ["gap in BTC-USD: trade ids 103..103 missing", "gap in BTC-USD: trade ids 106..108 missing",
                    "gap in BTC-USD: trade ids 111..112 missing"]
    assert healer.stats.gaps_healed == 3 and healer.stats.trades_fetched == 6
    assert (stats.trades_sent, stats.ws_trades, stats.rest_trades) == (17, 11, 6)
    assert (stats.connections, stats.reconnects, stats.duplicates_dropped, stats.malformed) == (2, 1, 3, 1)
    assert (stats.gaps_seen, stats.gaps_healed, stats.missing_open) == (3, 3, 0)
    assert any("reconnect #1" in line and "without a close frame" in line for line in logs)
    assert any("malformed frame skipped" in line and "{nope" in line for line in logs)
    assert logs[-1].startswith("coinbase: final stats: 17 trades sent (11 ws, 6 rest), reconnects 1, "
                               "duplicates dropped 3, gaps seen 3 healed 3 (missing 0)")


def test_coinbase_unknown_product_is_a_clear_error_not_a_reconnect_loop():
    logs: list[str] = []
    with ExchangeWsServer(products=["BTC-USD"]) as srv:
        stream = TradeStream(CoinbaseFeed(srv.url, ["BTC-USD", "DOGE-EUR"]), lambda t: None,
                             duration_s=20, backoff=FAST, log=logs.append)
        with pytest.raises(SubscriptionRejected, match="DOGE-EUR is not a valid product"):
            stream.run()
    assert srv.record.connections == ["/"] and stream.stats.reconnects == 0
    assert any(line.startswith("ERROR coinbase: the exchange says: Failed to subscribe") for line in logs)


def test_a_subscription_never_acknowledged_is_a_reconnect():
    logs: list[str] = []
    with ExchangeWsServer(ack=False) as srv:
        stats = TradeStream(CoinbaseFeed(srv.url, ["BTC-USD"]), lambda t: None, duration_s=2.0, ack_timeout_s=0.5,
                            backoff=FAST, log=logs.append).run()
    assert stats.reconnects >= 1 and len(srv.record.subscribes) >= 2  # subscribed again on a new connection
    assert any("connection lost (AckTimeout: no subscription ack within 0.5s)" in line for line in logs), logs


def test_failed_heal_leaves_the_gap_open_and_a_late_trade_fills_it(rest):
    btc = on_rest(rest, "coinbase", "BTC-USD", 10, 1, 3)
    rest.fail_next("coinbase", 503)  # REST is down (one attempt allowed) while the stream goes on
    script = [Send(btc[0]), Send(btc[3]), Send(btc[1]), Send(btc[4])]  # 2..3 missing, then 2 comes late
    out: list[dict] = []
    logs: list[str] = []
    with ExchangeWsServer(coinbase=[script]) as srv:
        stats = TradeStream(CoinbaseFeed(srv.url, ["BTC-USD"]), out.append, healer=real_healer(rest).heal,
                            max_trades=4, duration_s=30, backoff=FAST, log=logs.append).run()
    assert ids(out, "BTC-USD") == [1, 4, 2, 5]
    assert (stats.gaps_seen, stats.gaps_healed, stats.heal_failures, stats.late_filled) == (1, 0, 1, 1)
    assert stats.missing_open == 1  # trade 3 is still missing, and says so
    assert any("gap in BTC-USD 2..3 still open: heal failed (unavailable)" in line for line in logs), logs
    assert "(missing 1)" in logs[-1]


# ----------------------------------------------------------------------------- Binance stream
def test_binance_answers_pings_while_healing_and_reconnects_after_the_daily_close(rest):
    btc, eth = on_rest(rest, "binance", "BTCUSDT", 12, 500, 4), on_rest(rest, "binance", "ETHUSDT", 3, 900, 5)
    rest.fail_next("binance", 429, retry_after=1.5)  # the heal waits 1.5 s as Binance asks
    first = [Send(btc[0]), Send(eth[0]), Ping(), Send(btc[1]), Send(btc[2]), Close(1000, "24h connection limit")]
    second = [Send(btc[6]),  # 503..505 went by while reconnecting
              Pause(0.4), Ping(timeout_s=0.5),  # while the heal waits: the connection must still answer
              Send(eth[1]), Send(btc[7])]
    healer = real_healer(rest, max_attempts=2)
    out: list[dict] = []
    logs: list[str] = []
    with ExchangeWsServer(binance=[first, second]) as srv:
        stats = TradeStream(BinanceFeed(srv.url, ["btcusdt", "ETHUSDT"]), out.append, healer=healer.heal,
                            max_trades=10, duration_s=30, backoff=FAST, log=logs.append).run()
    assert srv.record.connections == 2 * ["/stream?streams=btcusdt@trade/ethusdt@trade"]
    assert (srv.record.pongs, srv.record.unanswered_pings) == (2, 0)
    assert ids(out, "BTCUSDT") == list(range(500, 508)) and ids(out, "ETHUSDT") == [900, 901]
    assert as_traded(out, "BTCUSDT") == expected(btc[:8], "binance")
    assert [p["fromId"] for p in rest.requests_to("binance")] == ["503", "503"]  # the 429, then the heal
    assert healer.stats.rate_limit_waits == 1
    assert (stats.reconnects, stats.gaps_healed, stats.rest_trades) == (1, 1, 3)
    assert any("closed by the server, code 1000 '24h connection limit'" in line for line in logs)


def test_reconnects_back_off_while_the_server_is_down():
    logs: list[str] = []
    with ExchangeWsServer() as srv:
        url = srv.url
    stop = threading.Event()
    stream = TradeStream(BinanceFeed(url, ["btcusdt"]), lambda t: None, stop_event=stop, duration_s=1.5,
                         backoff=Backoff(base_s=0.1, cap_s=0.4), log=logs.append, random=lambda: 1.0,
                         stats_every_s=0.5)
    started = time.monotonic()
    stats = stream.run()
    assert time.monotonic() - started < 5
    delays = [float(line.split(" in ")[1].split("s ")[0]) for line in logs if "reconnect #" in line]
    assert stats.connections == 0 and stats.reconnects == len(delays) >= 3
    assert delays[:4] == [0.1, 0.2, 0.4, 0.4][: len(delays[:4])]  # doubling, capped
    assert "ConnectionRefusedError" in next(line for line in logs if "reconnect #1" in line)
    assert sum(line.startswith("binance: stats: 0 trades sent") for line in logs) >= 2  # the outage still reports


