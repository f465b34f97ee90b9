"""Gap healing against a local server that pages, limits and fails like Coinbase and Binance:
pagination both ways, exact decimals, taker sides, a gap healed to an unbroken id range, 429s
waited out, a 418 ban and an unknown product leaving the gap open with a clear error."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from crypto_assets.producers.exchanges.binance_rest import BinanceTrades, binance_trade
from crypto_assets.producers.exchanges.coinbase_rest import CoinbaseTrades, coinbase_trade, parse_exchange_time
from crypto_assets.producers.exchanges.healing import (
    BAD_RESPONSE,
    NOT_SERVED,
    RATE_LIMITED,
    TOO_LARGE,
    UNAVAILABLE,
    UNKNOWN_PRODUCT,
    UNSUPPORTED,
    GapHealer,
    GapNotHealed,
    missing_ranges,
)
from crypto_assets.producers.exchanges.rest_http import ExchangeRestClient
from crypto_assets.settings import exchange_settings
from crypto_assets_tests.exchange_rest_server import (
    ExchangeRestServer,
    FakeTime,
    TapeTrade,
    coinbase_record,
    make_tape,
    start_rest_server,
)

CB_FIRST, BN_FIRST = 1_000_001, 5_000_001
PRODUCT = {"coinbase": "BTC-USD", "binance": "BTCUSDT"}


@pytest.fixture
def t() -> FakeTime:
    return FakeTime()


@pytest.fixture
def tapes() -> dict[str, list[TapeTrade]]:
    return {"coinbase": make_tape(2500, first_id=CB_FIRST, seed=1),
            "binance": make_tape(2500, first_id=BN_FIRST, seed=2)}


@pytest.fixture
def server(tapes, t) -> Iterator[ExchangeRestServer]:
    srv = start_rest_server({"BTC-USD": tapes["coinbase"]}, {"BTCUSDT": tapes["binance"]},
                            oldest_kept={("coinbase", "BTC-USD"): CB_FIRST, ("binance", "BTCUSDT"): BN_FIRST},
                            clock=t.clock)
    yield srv
    srv.stop()


def healer(server: ExchangeRestServer, t: FakeTime, **kw) -> GapHealer:
    client_kw = {"sleep": t.sleep, "clock": t.clock, "random": lambda: 1.0, "max_attempts": 3}
    settings = exchange_settings({"COINBASE_REST_URL": server.url, "BINANCE_REST_URL": server.url})
    return GapHealer.from_settings(settings, **client_kw, **kw)


def expected(exchange: str, tape: list[TapeTrade], first: int, last: int) -> list[tuple]:
    """What the contract must carry, computed from the tape, not from the code under test."""
    out = []
    for tr in tape:
        if first <= tr.trade_id <= last:
            when = tr.time if exchange == "coinbase" else tr.time.replace(microsecond=tr.time.microsecond // 1000 * 1000)
            out.append((tr.trade_id, tr.price, tr.size, tr.taker_side, when))
    return out


def seen(trades: list[dict]) -> list[tuple]:
    return [(x["trade_id"], x["price"], x["size"], x["side"], parse_exchange_time(x["trade_time"])) for x in trades]


# -- pure functions ------------------------------------------------------------------------------

def test_missing_ranges() -> None:
    assert missing_ranges([], 5, 9) == [(5, 9)]
    assert missing_ranges([5, 6, 7, 8, 9], 5, 9) == []
    assert missing_ranges([6, 8], 5, 9) == [(5, 5), (7, 7), (9, 9)]


def test_coinbase_record_maps_the_maker_side_to_the_taker_and_keeps_decimals() -> None:
    rec = {"time": "2026-12-02T13:30:05.123456789Z", "trade_id": 7, "price": "90123.45000000",
           "size": "123456789.00000001", "side": "buy"}
    tr = coinbase_trade(rec, "BTC-USD", None)
    assert tr["side"] == "sell"  # the maker bought: the taker sold
    assert tr["price"] == "90123.45000000" and tr["size"] == "123456789.00000001"
    assert tr["trade_time"] == "2026-12-02T13:30:05.123456Z"  # nanoseconds cut, not rounded
    assert (tr["origin"], tr["coin_id"], tr["quote_currency"]) == ("rest", "bitcoin", "USD")
    assert coinbase_trade(rec | {"side": "sell"}, "BTC-USD", None)["side"] == "buy"
    with pytest.raises(ValueError, match="without 'price'"):
        coinbase_trade({k: v for k, v in rec.items() if k != "price"}, "BTC-USD", None)
    with pytest.raises(ValueError, match="not a decimal"):
        coinbase_trade(rec | {"price": "NaN-ish"}, "BTC-USD", None)


def test_binance_record_maps_buyer_is_maker_to_a_sell() -> None:
    rec = {"id": 9, "price": "0.00000001", "qty": "5000.10000000", "quoteQty": "0.00005000", "time": 1796212800123,
           "isBuyerMaker": True, "isBestMatch": True}
    tr = binance_trade(rec, "ETHBTC", None)
    assert tr["side"] == "sell" and tr["price"] == "0.00000001" and tr["size"] == "5000.10000000"
    assert tr["trade_time"] == "2026-12-02T12:00:00.123000Z"
    assert (tr["base_currency"], tr["quote_currency"], tr["coin_id"]) == ("ETH", "BTC", "ethereum")
    assert binance_trade(rec | {"isBuyerMaker": False}, "ETHBTC", None)["side"] == "buy"
    with pytest.raises(ValueError, match="isBuyerMaker"):
        binance_trade(rec | {"isBuyerMaker": "true"}, "ETHBTC", None)


# -- pagination ----------------------------------------------------------------------------------

def test_coinbase_pages_back_with_cb_after(server, tapes, t) -> None:
    client = ExchangeRestClient.coinbase(server.url, sleep=t.sleep, clock=t.clock)
    first, last = CB_FIRST + 199, CB_FIRST + 2399
    got = CoinbaseTrades(client).fetch_range("BTC-USD", first, last)
    assert seen(got.trades) == expected("coinbase", tapes["coinbase"], first, last)
    # three pages, each cursor the previous page's CB-AFTER, the last one only as big as needed
    assert server.requests_to("coinbase") == [
        {"limit": "1000", "after": str(last + 1)},
        {"limit": "1000", "after": str(last + 1 - 1000)},
        {"limit": "201", "after": str(last + 1 - 2000)},
    ]
    assert got.pages == 3 and got.malformed == []
    assert t.sleeps == [pytest.approx(0.12)] * 2  # ~10 requests a second


def test_binance_pages_forward_by_from_id(server, tapes, t) -> None:
    client = ExchangeRestClient.binance(server.url, sleep=t.sleep, clock=t.clock)
    first, last = BN_FIRST + 10, BN_FIRST + 2209
    got = BinanceTrades(client).fetch_range("btcusdt", first, last)
    assert seen(got.trades) == expected("binance", tapes["binance"], first, last)
    assert server.requests_to("binance") == [
        {"symbol": "BTCUSDT", "fromId": str(first), "limit": "1000"},
        {"symbol": "BTCUSDT", "fromId": str(first + 1000), "limit": "1000"},
        {"symbol": "BTCUSDT", "fromId": str(first + 2000), "limit": "200"},
    ]
    assert client.stats.last_used_weight == 75  # 25 per historicalTrades request


@pytest.mark.parametrize("exchange", ["coinbase", "binance"])
def test_a_gap_is_healed_to_an_unbroken_id_range(server, tapes, t, exchange) -> None:
    tape = tapes[exchange]
    streamed = [tr.trade_id for tr in tape if not 1000 <= tr.trade_id - tape[0].trade_id <= 1999]
    jump = next(i for i, (a, b) in enumerate(zip(streamed, streamed[1:], strict=False)) if b != a + 1)
    first_missing, last_missing = streamed[jump] + 1, streamed[jump + 1] - 1
    with healer(server, t) as h:
        healed = h.heal(exchange, PRODUCT[exchange], first_missing, last_missing)
        stats = h.stats
    assert sorted(streamed + [x["trade_id"] for x in healed]) == [tr.trade_id for tr in tape]
    assert seen(healed) == expected(exchange, tape, first_missing, last_missing)
    assert {x["origin"] for x in healed} == {"rest"} and {x["exchange"] for x in healed} == {exchange}
    assert (stats.gaps_healed, stats.gaps_open, stats.trades_fetched, stats.requests) == (1, 0, 1000, 1)


# -- rate limits and failures --------------------------------------------------------------------

@pytest.mark.parametrize("exchange", ["coinbase", "binance"])
def test_a_429_is_waited_out_then_the_gap_heals(server, tapes, t, exchange) -> None:
    server.fail_next(exchange, 429, retry_after=3, skip=1)  # the second page is refused once
    first = tapes[exchange][0].trade_id + 100
    with healer(server, t) as h:
        healed = h.heal(exchange, PRODUCT[exchange], first, first + 1499)
        stats = h.stats
    assert [x["trade_id"] for x in healed] == list(range(first, first + 1500))
    assert 3.0 in t.sleeps
    assert (stats.rate_limit_waits, stats.requests, stats.gaps_healed) == (1, 3, 1)


def test_a_418_ban_leaves_the_gap_open_keeping_what_was_fetched(server, tapes, t) -> None:
    server.fail_next("binance", 418, retry_after=7200, skip=1)
    first = BN_FIRST
    with healer(server, t) as h:
        with pytest.raises(GapNotHealed, match=r"binance BTCUSDT .*\(rate_limited\).*IP banned \(418\)") as err:
            h.heal("binance", "BTCUSDT", first, first + 2499)
        assert err.value.kind == RATE_LIMITED
        assert [x["trade_id"] for x in err.value.trades] == list(range(first, first + 1000))  # page 1 kept
        assert err.value.missing == [(first + 1000, first + 2499)]
        assert max(t.sleeps, default=0) < 7200  # it did not sit out the ban
        # the stream goes on: the next gap heals once the exchange answers again
        assert len(h.heal("binance", "BTCUSDT", first + 1000, first + 1009)) == 10
        stats = h.stats
    assert (stats.gaps_open, stats.gaps_healed, stats.ids_missing, stats.trades_fetched) == (1, 1, 1500, 1010)


def test_5xx_is_retried_then_reported_as_unavailable(server, t) -> None:
    server.fail_next("coinbase", 503, times=2)
    with healer(server, t) as h:
        assert len(h.heal("coinbase", "BTC-USD", CB_FIRST, CB_FIRST + 9)) == 10
        server.fail_next("coinbase", 502, times=3)  # max_attempts=3
        with pytest.raises(GapNotHealed, match=r"\(unavailable\).*HTTP 502 after 3 attempts") as err:
            h.heal("coinbase", "BTC-USD", CB_FIRST, CB_FIRST + 9)
    assert err.value.kind == UNAVAILABLE and err.value.missing == [(CB_FIRST, CB_FIRST + 9)]


@pytest.mark.parametrize(("exchange", "product", "message"), [
    ("coinbase", "DOGE-XYZ", "HTTP 404.*NotFound"),
    ("binance", "DOGEXYZUSDT", "HTTP 400.*Invalid symbol"),
])
def test_an_unknown_product_is_a_clear_error(server, t, exchange, product, message) -> None:
    with healer(server, t) as h, pytest.raises(GapNotHealed, match=message) as err:
        h.heal(exchange, product, 1, 10)
    assert err.value.kind == UNKNOWN_PRODUCT and err.value.trades == []
    assert len(server.requests_to(exchange)) == 1  # a wrong product is not asked again


@pytest.mark.parametrize("exchange", ["coinbase", "binance"])
def test_ids_older_than_the_exchange_keeps_stay_open(server, tapes, t, exchange) -> None:
    product, tape = PRODUCT[exchange], tapes[exchange]
    oldest = tape[0].trade_id + 300
    server.oldest_kept[(exchange, product)] = oldest
    with healer(server, t) as h, pytest.raises(GapNotHealed, match="not_served") as err:
        h.heal(exchange, product, tape[0].trade_id, oldest + 99)
    assert err.value.kind == NOT_SERVED
    assert err.value.missing == [(tape[0].trade_id, oldest - 1)]
    assert [x["trade_id"] for x in err.value.trades] == list(range(oldest, oldest + 100))


def test_an_unreadable_record_leaves_only_its_id_open(server, tapes, t) -> None:
    page = [coinbase_record(tr) for tr in reversed(tapes["coinbase"][:5])]
    page[2]["price"] = None
    server.fail_next("coinbase", 200, body=page)
    with healer(server, t) as h, pytest.raises(GapNotHealed, match="bad_response") as err:
        h.heal("coinbase", "BTC-USD", CB_FIRST, CB_FIRST + 4)
    assert err.value.kind == BAD_RESPONSE
    assert err.value.missing == [(CB_FIRST + 2, CB_FIRST + 2)] and len(err.value.trades) == 4


def test_the_binance_weight_budget_is_kept(tapes, t) -> None:
    # 4,790 of the minute's weight already used (another client on the IP): the healer waits
    # for the next minute instead of collecting a 429 or a ban
    with start_rest_server(binance={"BTCUSDT": tapes["binance"]}, used_weight=4790, clock=t.clock) as srv:
        with healer(srv, t) as h:
            assert len(h.heal("binance", "BTCUSDT", BN_FIRST, BN_FIRST + 2499)) == 2500
            stats = h.stats
        assert stats.rate_limit_waits == 1 and stats.requests == 3
    assert srv.used_weight == 50  # the two requests after the wait, in a fresh minute


def test_limits_and_unknown_exchanges_fail_before_any_request(server, t) -> None:
    with healer(server, t, max_gap=1000) as h:
        with pytest.raises(GapNotHealed, match="more than max_gap=1000") as err:
            h.heal("coinbase", "BTC-USD", CB_FIRST, CB_FIRST + 1000)
        assert err.value.kind == TOO_LARGE
        with pytest.raises(GapNotHealed, match="no REST client for 'kraken'") as err:
            h.heal("kraken", "XBT-USD", 1, 2)
        assert err.value.kind == UNSUPPORTED
        with pytest.raises(ValueError, match="empty gap"):
            h.heal("coinbase", "BTC-USD", 5, 4)
        assert h.stats.gaps_open == 2
    assert server.requests == []


def test_decimals_are_exact_through_the_server(server, tapes, t) -> None:
    with healer(server, t) as h:
        healed = h.heal("binance", "BTCUSDT", BN_FIRST, BN_FIRST + 999)
    total = sum(Decimal(x["price"]) * Decimal(x["size"]) for x in healed)
    assert total == sum(Decimal(tr.price) * Decimal(tr.size) for tr in tapes["binance"][:1000])
    assert all(len(x["price"].split(".")[1]) == 8 for x in healed)
    assert parse_exchange_time(healed[0]["trade_time"]).tzinfo == UTC
    assert datetime.fromisoformat(healed[0]["trade_time"]) >= datetime(2026, 12, 2, 13, 0, tzinfo=UTC)


def test_the_server_answers_429_past_the_minutes_weight_and_the_client_waits_it_out(tapes, t) -> None:
    # a client that ignores the budget (weight_limit_1m=None) meets the exchange's own limit
    with start_rest_server(binance={"BTCUSDT": tapes["binance"]}, used_weight=5990, clock=t.clock) as srv:
        client = ExchangeRestClient(srv.url, name="binance", sleep=t.sleep, clock=t.clock)
        got = BinanceTrades(client).fetch_range("BTCUSDT", BN_FIRST, BN_FIRST + 9)
        assert [x["trade_id"] for x in got.trades] == list(range(BN_FIRST, BN_FIRST + 10))
        assert client.stats.rate_limited == 1 and t.sleeps == [40.0]  # Retry-After: to the next minute
        assert srv.used_weight == 25
