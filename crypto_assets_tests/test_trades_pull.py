"""The exactly-once trade pull (crypto_trades -> raw_trades) against the embedded broker and a
real DuckDB file: every trade once, duplicates dropped within and across batches, out-of-order
ids, gaps found and healed, one reason per bad message, the DLQ topic, the Parquet mirror."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import orjson
import pytest

from crypto_assets import rejections as R
from crypto_assets.ingest.config import PullConfig
from crypto_assets.ingest.pull import pull_raw_ticks, pull_raw_trades
from crypto_assets.ingest.trade_validate import DECIMAL_PATTERN
from crypto_assets.kafka.errors import BrokerUnavailable
from crypto_assets.resources import KafkaResource
from crypto_assets_tests.lake_helpers import assert_mirror_equals_table
from crypto_assets_tests.topic_helpers import read_topic
from crypto_assets_tests.trade_helpers import PRODUCTS, produce_trades, tape, trade

DATASET = "bronze/raw_trades"


def _rows(lakehouse, sql: str, params=None) -> list[tuple]:
    with lakehouse.connect() as conn:
        return conn.sql(sql, params=params).fetchall() if params else conn.sql(sql).fetchall()


def _keys(lakehouse) -> Counter:
    return Counter(_rows(lakehouse, "SELECT exchange, product, trade_id FROM raw_trades"))


def _gaps(lakehouse) -> list[tuple]:
    return _rows(lakehouse, "SELECT product, first_missing, last_missing, missing, healed_at IS NOT NULL "
                            "FROM trade_gaps ORDER BY ALL")


def _runs(lakehouse, product: str) -> list[tuple]:
    return _rows(lakehouse, "SELECT first_id, last_id FROM trade_id_ranges WHERE product = ? ORDER BY 1", [product])


def test_every_trade_once_with_its_exact_values_and_mirrored(kafka, lakehouse):
    sent = tape(range(1, 201))
    assert produce_trades(kafka, sent) == 600
    r1 = pull_raw_trades(kafka, lakehouse, PullConfig(batch_size=150))
    assert (r1.messages, r1.rows_written, r1.quarantined, r1.skipped) == (600, 600, 0, 0)
    assert len(r1.batches) == 4 and sum(r1.remaining_lag.values()) == 0
    assert r1.extra["gaps_found"] == 0
    assert pull_raw_trades(kafka, lakehouse).batches == []  # nothing new: nothing read
    # each message of the topic is one row, holding the message's values exactly
    topic = {(r.partition, r.offset): r.json() for r in read_topic(kafka.bootstrap(), kafka.trades_topic)}
    rows = _rows(lakehouse, "SELECT kafka_partition, kafka_offset, exchange, product, base_currency, quote_currency, "
                            "coin_id, trade_id, price, size, side, trade_time, received_at, origin FROM raw_trades")
    assert len(rows) == len(topic) == 600
    for p, o, *values in rows:
        m = topic[(p, o)]
        assert values == [m["exchange"], m["product"], m["base_currency"], m["quote_currency"], m["coin_id"],
                          m["trade_id"], Decimal(m["price"]), Decimal(m["size"]), m["side"],
                          datetime.fromisoformat(m["trade_time"]), datetime.fromisoformat(m["received_at"]), m["origin"]]
    assert _keys(lakehouse) == Counter((ex, prod, i) for i in range(1, 201) for ex, prod in PRODUCTS)
    assert {(p, o) for p, o, *_ in rows} == set(topic)
    # one run of ids per product, no gap
    for _ex, prod in PRODUCTS:
        assert _runs(lakehouse, prod) == [(1, 200)]
    assert _gaps(lakehouse) == []
    # every message's key is exchange:product, so a product's trades share a partition
    assert len({(m["product"], p) for (p, _o), m in topic.items()}) == len(PRODUCTS)
    with lakehouse.connect() as conn:
        assert_mirror_equals_table(conn, lakehouse.lake_path, DATASET, "raw_trades")
    files = sorted((lakehouse.lake_path / DATASET).rglob("*.parquet"))
    assert files and all(f.parent.name.startswith("date=") for f in files)  # by date, product a column


def test_duplicates_within_a_batch_and_across_batches_are_dropped_and_counted(kafka, lakehouse):
    produce_trades(kafka, [trade(i) for i in range(1, 51)])
    assert pull_raw_trades(kafka, lakehouse).rows_written == 50
    # a REST heal overlapping what is stored (40..50), new trades 51..60, and 55 twice more in the batch
    again = [trade(i, origin="rest") for i in range(40, 61)] + [trade(55), trade(55, origin="rest")]
    produce_trades(kafka, again)
    r = pull_raw_trades(kafka, lakehouse)
    assert (r.messages, r.rows_written, r.skipped, r.quarantined) == (23, 10, 13, 0)
    assert r.extra["duplicates"] == 13
    assert _keys(lakehouse) == Counter(("coinbase", "BTC-USD", i) for i in range(1, 61))
    # the first copy stored wins: 40..50 came over the stream, 51..60 from the heal
    origins = dict(_rows(lakehouse, "SELECT trade_id, origin FROM raw_trades"))
    assert {i for i, o in origins.items() if o == "rest"} == set(range(51, 61))
    assert _rows(lakehouse, "SELECT messages, rows_written, quarantined FROM ingest_batches ORDER BY batch_id") == [
        (50, 50, 0), (23, 10, 0)]
    assert _runs(lakehouse, "BTC-USD") == [(1, 60)]
    assert _rows(lakehouse, "SELECT count(*) FROM quarantine")[0][0] == 0  # a duplicate is not an error
    # the same trade in two batches of ONE pull
    produce_trades(kafka, [trade(61), trade(62), trade(61), trade(63)])
    r = pull_raw_trades(kafka, lakehouse, PullConfig(batch_size=2))
    assert [(b.messages, b.rows_written, b.skipped) for b in r.batches] == [(2, 2, 0), (2, 1, 1)]
    assert _keys(lakehouse) == Counter(("coinbase", "BTC-USD", i) for i in range(1, 64))


def test_gaps_are_found_and_healed_and_out_of_order_ids_are_not_gaps(kafka, lakehouse):
    # out of order inside a batch: 1..10 arrive shuffled, no gap; then a jump 10 -> 15
    produce_trades(kafka, [trade(i) for i in (3, 1, 2, 5, 4, 7, 6, 10, 8, 9, 15, 16, 17, 20)])
    r = pull_raw_trades(kafka, lakehouse)
    assert (r.extra["gaps_found"], r.extra["trades_missing_found"]) == (2, 6)
    assert _gaps(lakehouse) == [("BTC-USD", 11, 14, 4, False), ("BTC-USD", 18, 19, 2, False)]
    assert _runs(lakehouse, "BTC-USD") == [(1, 10), (15, 17), (20, 20)]
    # a late message fills part of the first gap, a heal all of the second; a new jump opens one more
    produce_trades(kafka, [trade(12), trade(19, origin="rest"), trade(18, origin="rest"), trade(21), trade(30)])
    r = pull_raw_trades(kafka, lakehouse)
    assert (r.extra["gaps_found"], r.extra["gaps_healed"], r.extra["trades_healed"]) == (1, 1, 3)
    assert _gaps(lakehouse) == [("BTC-USD", 11, 14, 3, False), ("BTC-USD", 18, 19, 0, True),
                                ("BTC-USD", 22, 29, 8, False)]
    # the rest of the first gap, split around 12, and a straggler below the first id ever seen
    produce_trades(kafka, [trade(11, origin="rest"), trade(13, origin="rest"), trade(14, origin="rest")])
    produce_trades(kafka, [trade(i, "coinbase", "ETH-USD") for i in (100, 101, 102, 96)])
    r = pull_raw_trades(kafka, lakehouse)
    assert (r.extra["gaps_found"], r.extra["gaps_healed"]) == (1, 1)
    assert _gaps(lakehouse) == [("BTC-USD", 11, 14, 0, True), ("BTC-USD", 18, 19, 0, True),
                                ("BTC-USD", 22, 29, 8, False), ("ETH-USD", 97, 99, 3, False)]
    assert _runs(lakehouse, "BTC-USD") == [(1, 21), (30, 30)]
    healed = _rows(lakehouse, "SELECT detected_batch, healed_at > detected_at FROM trade_gaps WHERE missing = 0")
    assert healed == [(1, True), (1, True)]
    # the stored ids are exactly the runs
    ids = sorted(i for (_e, p, i) in _keys(lakehouse) if p == "BTC-USD")
    assert ids == list(range(1, 22)) + [30]


NOW = datetime.now(UTC)


def _bad(**changes) -> bytes:
    return orjson.dumps(trade(9000 + len(changes)) | changes)


# Each bad message, and the one reason it must get.
BAD: list[tuple[bytes, str]] = [
    (b"{not json", R.INVALID_JSON),
    (b"[1, 2, 3]", R.NOT_OBJECT),
    (b"", R.EMPTY_MESSAGE),
    (b"\xff\xfe", R.NOT_UTF8),
    (orjson.dumps(trade(9001) | {"price": 90000.5}), R.WRONG_TYPE),  # a float price: never exact
    (orjson.dumps(trade(9002) | {"size": 1}), R.WRONG_TYPE),
    (orjson.dumps(trade(9003) | {"trade_id": "9003"}), R.WRONG_TYPE),
    (orjson.dumps({k: v for k, v in trade(9004).items() if k != "price"}), R.missing("price")),
    (orjson.dumps(trade(9005) | {"side": None}), R.missing("side")),
    (orjson.dumps({k: v for k, v in trade(9006).items() if k != "trade_id"}), R.missing("trade_id")),
    (orjson.dumps(trade(9007) | {"schema_version": 2}), R.UNSUPPORTED_SCHEMA_VERSION),
    (orjson.dumps(trade(9008) | {"price": "abc"}), R.INVALID_PRICE),
    (orjson.dumps(trade(9009) | {"price": "-1.5"}), R.INVALID_PRICE),
    (orjson.dumps(trade(9010) | {"price": "0"}), R.INVALID_PRICE),
    (orjson.dumps(trade(9011) | {"price": "1e5"}), R.INVALID_PRICE),
    (orjson.dumps(trade(9012) | {"price": "0.123456789"}), R.INVALID_PRICE),  # would round in DECIMAL(18,8)
    (orjson.dumps(trade(9013) | {"size": "0.00000000"}), R.INVALID_SIZE),
    (orjson.dumps(trade(9014) | {"side": "BUY"}), R.INVALID_SIDE),
    (orjson.dumps(trade(9015) | {"origin": "fax"}), R.INVALID_ORIGIN),
    (orjson.dumps(trade(9016) | {"trade_id": -1}), R.INVALID_TRADE_ID),
    (orjson.dumps(trade(9017) | {"product": "ETH-USD"}), R.PRODUCT_MISMATCH),
    (orjson.dumps(trade(9018) | {"coin_id": "ethereum"}), R.COIN_MISMATCH),
    (orjson.dumps(trade(9019) | {"trade_time": "yesterday"}), R.INVALID_TIMESTAMP),
    (orjson.dumps(trade(9020) | {"received_at": "soon"}), R.INVALID_TIMESTAMP),
    (orjson.dumps(trade(9021) | {"trade_time": (NOW + timedelta(days=3)).isoformat()}), R.TIMESTAMP_IN_FUTURE),
    (orjson.dumps(trade(9022) | {"trade_time": "2001-01-01T00:00:00Z"}), R.TIMESTAMP_TOO_OLD),
]


def test_each_bad_trade_is_quarantined_with_its_reason_and_sent_to_the_dlq(kafka, lakehouse):
    good = [trade(i) for i in range(1, 41)]
    messages: list = list(good)
    for k, (value, _reason) in enumerate(BAD):
        messages.insert(1 + k, (b"coinbase:BTC-USD", value))  # bad ones among the good
    assert produce_trades(kafka, messages) == len(messages)
    r = pull_raw_trades(kafka, lakehouse)
    assert (r.messages, r.rows_written, r.quarantined) == (len(messages), 40, len(BAD))
    assert r.reasons == dict(Counter(reason for _v, reason in BAD))
    assert _keys(lakehouse) == Counter(("coinbase", "BTC-USD", i) for i in range(1, 41))  # nothing valid lost
    topic = {r.value or b"": (r.partition, r.offset) for r in read_topic(kafka.bootstrap(), kafka.trades_topic)}
    q = _rows(lakehouse, "SELECT raw_value, reason, detail, kafka_topic, kafka_partition, kafka_offset, message_key "
                         "FROM quarantine WHERE stage = 'raw_trades'")
    assert {bytes(raw): reason for raw, reason, *_ in q} == dict(BAD)
    for raw, _reason, detail, t, p, o, key in q:
        assert (t, (p, o), key) == (kafka.trades_topic, topic[bytes(raw)], b"coinbase:BTC-USD") and detail
    details = {reason: detail for _raw, reason, detail, *_ in q}
    assert "abc" in next(d for raw, reason, d, *_ in q if b'"abc"' in bytes(raw))
    assert details[R.INVALID_SIDE] == "side BUY is not one of buy, sell"
    assert details[R.COIN_MISMATCH] == "coin_id ethereum, but base BTC maps to bitcoin"
    assert details[R.PRODUCT_MISMATCH] == "product ETH-USD does not name base BTC and quote USD"
    # the DLQ of trades: each bad message once, its bytes, key and reason, marked sent
    dlq = read_topic(kafka.bootstrap(), kafka.trades_dlq_topic)
    assert sorted((r.value or b"", r.header("reason")) for r in dlq) == sorted(BAD)
    assert {r.header("source.topic") for r in dlq} == {kafka.trades_topic}
    assert {(r.int_header("source.partition"), r.int_header("source.offset")) for r in dlq} == {topic[v] for v, _ in BAD}
    assert _rows(lakehouse, "SELECT count(*) FROM quarantine WHERE dlq_published_at IS NULL")[0][0] == 0
    assert read_topic(kafka.bootstrap(), kafka.dlq_topic) == []  # the ticks' DLQ got none of them
    assert pull_raw_trades(kafka, lakehouse).dlq_published == 0  # once


@pytest.mark.parametrize("value, ok", [("1", True), ("90123.45", True), ("0.00010000", True), ("1.1234567800", True),
                                       ("9999999999.99999999", True), ("0.123456789", False), ("1e5", False),
                                       ("12345678901", False), (".5", False), ("1.", False), ("-1", False),
                                       (" 1", False), ("NaN", False)])
def test_decimal_pattern_accepts_exactly_what_decimal_18_8_holds(value, ok):
    import duckdb

    with duckdb.connect() as conn:
        assert conn.sql("SELECT regexp_full_match(?, ?)", params=[value, DECIMAL_PATTERN]).fetchall()[0][0] is ok


def test_ticks_and_trades_do_not_mix(kafka, lakehouse):
    """Both pulls share the warehouse's bookkeeping (batches, positions, quarantine) but each
    reads only its topic, stores only its table and quarantines under its own stage."""
    from crypto_assets_tests.helpers import produce, ticks

    produce(kafka, ticks(30) + [(b"bitcoin", b"{bad")])
    produce_trades(kafka, [trade(i) for i in range(1, 21)] + [(b"coinbase:BTC-USD", b"{bad")])
    t = pull_raw_trades(kafka, lakehouse)
    k = pull_raw_ticks(kafka, lakehouse)
    assert (t.rows_written, t.quarantined, k.rows_written, k.quarantined) == (20, 1, 30, 1)
    assert _rows(lakehouse, "SELECT stage, kafka_topic FROM quarantine ORDER BY 1") == [
        ("raw_ticks", kafka.raw_topic), ("raw_trades", kafka.trades_topic)]
    assert {r[0] for r in _rows(lakehouse, "SELECT DISTINCT kafka_topic FROM ingest_positions")} == {
        kafka.raw_topic, kafka.trades_topic}
    assert len(read_topic(kafka.bootstrap(), kafka.dlq_topic)) == len(read_topic(kafka.bootstrap(), kafka.trades_dlq_topic)) == 1


def test_broker_down_fails_saying_so_and_advances_nothing(kafka, lakehouse, home):
    produce_trades(kafka, [trade(i) for i in range(1, 11)])
    pull_raw_trades(kafka, lakehouse)
    before = _rows(lakehouse, "SELECT * FROM ingest_positions ORDER BY ALL")
    down = KafkaResource(bootstrap_servers="127.0.0.1:1", home=str(home), timeout_s=2, trades_topic=kafka.trades_topic)
    with pytest.raises(BrokerUnavailable, match=r"127\.0\.0\.1:1 is unreachable.*no offsets were advanced"):
        pull_raw_trades(down, lakehouse)
    assert _rows(lakehouse, "SELECT * FROM ingest_positions ORDER BY ALL") == before
    assert _rows(lakehouse, "SELECT count(*) FROM raw_trades")[0][0] == 10
