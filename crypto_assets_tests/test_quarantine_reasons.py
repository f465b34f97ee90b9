"""One test per quarantine reason the README lists without a test of its own: bronze
`invalid_market_cap`, silver `timestamp_in_future`, `timestamp_too_old` and `invalid_volume`. Each feeds the
tick that must get exactly that reason beside valid ticks on the edge of the same rule, and
checks the quarantine row (reason, detail, coin, time, Kafka coordinates), the payload it points
to, and the exact set of rows that passed. Times are relative to now: the silver rules compare
event time with ingestion time, the bronze ones with the clock."""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, timedelta

import orjson
import polars as pl
from confluent_kafka import Consumer, TopicPartition

from crypto_assets import rejections as R
from crypto_assets.ingest.pull import pull_raw_ticks
from crypto_assets.resources import LakehouseResource
from crypto_assets.transforms.clean import clean_increment
from crypto_assets_tests.helpers import produce, tick
from crypto_assets_tests.silver_helpers import insert_raw_batch


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def _t(iso: str) -> datetime:
    return datetime.fromisoformat(iso.replace("Z", "+00:00"))


def _duck_ts(t: datetime) -> str:
    """A TIMESTAMPTZ as DuckDB's printf('%s') renders it in a UTC session."""
    s = t.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
    if t.microsecond:
        s += f".{t.microsecond:06d}".rstrip("0")
    return s + "+00"


def _send(kafka, messages: list[dict]) -> dict[bytes, tuple[int, int]]:
    """Produce the ticks (key = coin_id) and return {value bytes: (partition, offset)} read back
    from the topic: where each message really is."""
    values = [orjson.dumps(m) for m in messages]
    assert produce(kafka, [(m["coin_id"].encode(), v) for m, v in zip(messages, values, strict=True)]) == len(values)
    c = Consumer({"bootstrap.servers": kafka.bootstrap(), "group.id": "where", "enable.auto.commit": False})
    md = c.list_topics(kafka.raw_topic, timeout=5)
    c.assign([TopicPartition(kafka.raw_topic, p, 0) for p in md.topics[kafka.raw_topic].partitions])
    found: dict[bytes, tuple[int, int]] = {}
    idle = 0
    while len(found) < len(values) and idle < 20:
        batch = [m for m in c.consume(100, timeout=0.5) if m.error() is None]
        idle = 0 if batch else idle + 1
        for m in batch:
            value, p, o = m.value(), m.partition(), m.offset()
            assert value is not None and p is not None and o is not None  # a consumed tick has all three
            found[value] = (p, o)
    c.close()
    assert set(found) == set(values)
    return found


def _keys(ticks: list[dict]) -> set[tuple[str, datetime]]:
    return {(t["coin_id"], _t(t["last_updated_at"])) for t in ticks}


# ------------------------------------------------------------------------------------ bronze
def test_bronze_invalid_market_cap(kafka, lakehouse):
    base = _now() - timedelta(hours=1)
    good = [tick(i, ("bitcoin", "ethereum")[i % 2], base=base) for i in range(10)]
    zero_cap = dict(tick(20, "ethereum", base=base), market_cap_usd=0.0)  # >= 0: valid
    null_cap = dict(tick(21, "ethereum", base=base), market_cap_usd=None)  # optional: valid
    bad = dict(tick(22, "ethereum", base=base), market_cap_usd=-1.0)
    where = _send(kafka, good[:5] + [zero_cap, bad, null_cap] + good[5:])

    r = pull_raw_ticks(kafka, lakehouse)
    assert r.reasons == {"invalid_market_cap": 1}
    with lakehouse.connect(read_only=True) as conn:
        q = conn.sql(
            "SELECT stage, reason, detail, coin_id, last_updated_at, kafka_partition, kafka_offset, message_key, "
            "raw_value, raw_size FROM quarantine"
        ).fetchall()
        kept = conn.sql("SELECT coin_id, last_updated_at, market_cap_usd, kafka_partition, kafka_offset FROM raw_ticks").fetchall()
    raw = orjson.dumps(bad)
    assert [(*row[:8], bytes(row[8]), row[9]) for row in q] == [(
        "raw_ticks", "invalid_market_cap", "market_cap_usd must be >= 0 and finite", "ethereum",
        _t(bad["last_updated_at"]), *where[raw], b"ethereum", raw, len(raw),
    )]
    assert {(c, t) for c, t, *_ in kept} == _keys(good + [zero_cap, null_cap])
    assert len(kept) == len(good) + 2
    caps = {(c, t): cap for c, t, cap, _, _ in kept}
    assert caps[("ethereum", _t(zero_cap["last_updated_at"]))] == 0.0
    assert caps[("ethereum", _t(null_cap["last_updated_at"]))] is None
    # every kept row sits at the offset its message was written to
    assert {(p, o) for *_, p, o in kept} == {where[orjson.dumps(t)] for t in good + [zero_cap, null_cap]}


# ------------------------------------------------------------------------------------ silver
def _silver_quarantine(conn) -> list[tuple]:
    return conn.sql(
        "SELECT reason, detail, coin_id, last_updated_at, kafka_partition, kafka_offset, raw_value "
        "FROM quarantine WHERE stage = 'clean_ticks'"
    ).fetchall()


def _raw_row(conn, partition: int, offset: int) -> tuple:
    return conn.sql(
        "SELECT coin_id, last_updated_at, price_usd, volume_24h_usd, ingested_at FROM raw_ticks "
        "WHERE kafka_partition = ? AND kafka_offset = ?", params=[partition, offset],
    ).fetchall()


def _clean_keys(conn) -> set[tuple[str, datetime]]:
    rows = conn.sql("SELECT coin_id, event_time FROM clean_ticks").fetchall()
    assert len(rows) == len(set(rows))
    return set(rows)


def _pull_and_clean(kafka, lakehouse, ticks: list[dict]):
    where = _send(kafka, ticks)
    r = pull_raw_ticks(kafka, lakehouse)
    assert r.rows_written == len(ticks) and r.quarantined == 0  # bronze lets every one of them through
    with lakehouse.connect() as conn:
        res = clean_increment(conn, list(lakehouse.coins))
    return where, res


def test_silver_timestamp_in_future(kafka, lakehouse):
    now = _now()
    good = [tick(i, "bitcoin", base=now - timedelta(minutes=10)) for i in range(5)]
    slightly_ahead = tick(0, "ethereum", base=now + timedelta(minutes=2))  # within the 5-minute skew
    ahead = tick(0, "solana", base=now + timedelta(minutes=30))  # bronze allows a day, silver 5 minutes
    where, res = _pull_and_clean(kafka, lakehouse, good + [slightly_ahead, ahead])
    assert res.reasons == {"timestamp_in_future": 1} and res.rows_out == 6

    with lakehouse.connect(read_only=True) as conn:
        q = _silver_quarantine(conn)
        assert _clean_keys(conn) == _keys(good + [slightly_ahead])
        part, off = where[orjson.dumps(ahead)]
        raw = _raw_row(conn, part, off)
    assert [row[:1] + row[2:] for row in q] == [("timestamp_in_future", "solana", _t(ahead["last_updated_at"]), part, off, None)]
    # the payload it points to: the raw row at those coordinates is the message that was sent
    assert [r[:4] for r in raw] == [("solana", _t(ahead["last_updated_at"]), ahead["price_usd"], ahead["volume_24h_usd"])]
    ingested = raw[0][4]
    assert _t(ahead["last_updated_at"]) > ingested + timedelta(minutes=5)
    assert q[0][1] == (f"last_updated_at {_duck_ts(_t(ahead['last_updated_at']))} is "
                       f"{_interval(_t(ahead['last_updated_at']) - ingested)} ahead of its ingestion at "
                       f"{_duck_ts(ingested)} (allowed skew 00:05:00)")


def _interval(d: timedelta) -> str:
    """A sub-day INTERVAL as DuckDB renders it: HH:MM:SS[.fff] (trailing zeros dropped)."""
    assert d.days == 0
    h, rem = divmod(d.seconds, 3600)
    s = f"{h:02d}:{rem // 60:02d}:{rem % 60:02d}"
    return s + (f".{d.microseconds:06d}".rstrip("0") if d.microseconds else "")


def test_silver_timestamp_too_old(kafka, lakehouse):
    now = _now()
    good = [tick(i, "bitcoin", base=now - timedelta(minutes=10)) for i in range(5)]
    old_but_inside = tick(0, "polkadot", base=now - timedelta(days=364))  # horizon 365 days: valid
    too_old = tick(0, "cardano", base=now - timedelta(days=400))  # after 2009 (bronze), past the horizon
    where, res = _pull_and_clean(kafka, lakehouse, good + [too_old, old_but_inside])
    assert res.reasons == {"timestamp_too_old": 1} and res.rows_out == 6

    with lakehouse.connect(read_only=True) as conn:
        q = _silver_quarantine(conn)
        assert _clean_keys(conn) == _keys(good + [old_but_inside])
        part, off = where[orjson.dumps(too_old)]
        raw = _raw_row(conn, part, off)
    t_old = _t(too_old["last_updated_at"])
    assert [row[:1] + row[2:] for row in q] == [("timestamp_too_old", "cardano", t_old, part, off, None)]
    assert [r[:4] for r in raw] == [("cardano", t_old, too_old["price_usd"], too_old["volume_24h_usd"])]
    assert re.fullmatch(
        rf"last_updated_at {re.escape(_duck_ts(t_old))} is 400 days [0-9:.]+ before its ingestion at "
        rf"{re.escape(_duck_ts(raw[0][4]))} \(horizon 365 days\)", q[0][1]), q[0][1]


def test_silver_invalid_volume(tmp_path):
    """Bronze already rejects a negative or non-finite volume, so silver's invalid_volume is the
    second line for rows that reach raw_ticks another way (an older version, a hand edit): they
    are written straight into raw_ticks here."""
    from crypto_assets.resources import LakehouseResource

    lh = LakehouseResource(home=str(tmp_path / "var"))
    start = _now() - timedelta(hours=1)
    rows = [
        ("bitcoin", 0, 90_000.0, 1e8),
        ("bitcoin", 10, 90_010.0, 1e8),
        ("ethereum", 0, 3_100.0, 2e8),
        ("ethereum", 10, 3_101.0, -1.0),  # negative: invalid_volume
        ("solana", 0, 140.0, float("nan")),  # NaN: invalid_volume
        ("solana", 10, 140.5, 5e7),
        ("cardano", 0, 0.45, 0.0),  # no trades: 0 is valid
        ("cardano", 10, 0.46, None),  # unknown volume: valid
    ]
    ticks = pl.DataFrame(
        {"coin_id": [r[0] for r in rows], "symbol": [r[0][:3] for r in rows],
         "last_updated_at": [start + timedelta(seconds=r[1]) for r in rows],
         "price_usd": [r[2] for r in rows], "volume_24h_usd": [r[3] for r in rows]},
        schema_overrides={"volume_24h_usd": pl.Float64},
    )
    with lh.connect() as conn:
        insert_raw_batch(conn, ticks)
        offsets = {(c, t): o for c, t, o in conn.sql("SELECT coin_id, last_updated_at, kafka_offset FROM raw_ticks").fetchall()}
        res = clean_increment(conn, list(lh.coins))
        q = _silver_quarantine(conn)
        clean = conn.sql("SELECT coin_id, event_time, volume_24h_usd FROM clean_ticks").fetchall()
    assert res.reasons == {"invalid_volume": 2} and res.rows_out == 6
    bad = {("ethereum", start + timedelta(seconds=10)): "volume_24h_usd -1 must be finite and >= 0",
           ("solana", start): "volume_24h_usd nan must be finite and >= 0"}
    assert sorted(q) == sorted(("invalid_volume", detail, c, t, 0, offsets[(c, t)], None) for (c, t), detail in bad.items())
    kept = {(c, t) for c, t, _ in clean}
    assert kept == {(c, start + timedelta(seconds=s)) for c, s, _, _ in rows} - set(bad)
    vols = {(c, t): v for c, t, v in clean}
    assert vols[("cardano", start)] == 0.0 and vols[("cardano", start + timedelta(seconds=10))] is None
    assert not any(v is not None and (math.isnan(v) or v < 0) for v in vols.values())


# ------------------------------------------------------------------------ one name per rule
def test_a_rule_both_stages_apply_has_one_name(kafka, lakehouse, tmp_path):
    """The same bad tick gets the same reason from bronze (the pull) and from silver (clean_ticks,
    on raw_ticks rows that reached it some other way): one name per rule (crypto_assets.rejections)."""
    now = _now()
    base = now - timedelta(hours=1)
    good = [tick(i, ("bitcoin", "ethereum")[i % 2], base=base) for i in range(6)]
    bad = {  # reason -> a tick that breaks that rule in both stages
        R.INVALID_PRICE: dict(tick(10, "bitcoin", base=base), price_usd=-1.0),
        R.INVALID_VOLUME: dict(tick(11, "ethereum", base=base), volume_24h_usd=-1.0),
        R.UNKNOWN_COIN: dict(tick(12, "bitcoin", base=base), coin_id="notacoin"),
        R.TIMESTAMP_IN_FUTURE: tick(13, "ethereum", base=now + timedelta(days=2)),  # bronze: > 1 day; silver: > 5 min
        R.TIMESTAMP_TOO_OLD: tick(14, "bitcoin", base=datetime(2005, 1, 1, tzinfo=UTC)),  # < 2009; > 365 d
        R.DUPLICATE: good[3],  # a second copy
    }
    ticks = good + list(bad.values())
    want = {(t["coin_id"], _t(t["last_updated_at"])): reason for reason, t in bad.items()}

    _send(kafka, ticks)
    pull_raw_ticks(kafka, lakehouse)
    with lakehouse.connect(read_only=True) as conn:
        bronze = conn.sql("SELECT coin_id, last_updated_at, reason FROM quarantine WHERE stage = 'raw_ticks'").fetchall()

    silver_home = LakehouseResource(home=str(tmp_path / "silver"))
    frame = pl.DataFrame([{"coin_id": t["coin_id"], "symbol": t["symbol"], "last_updated_at": _t(t["last_updated_at"]),
                           "price_usd": t["price_usd"], "volume_24h_usd": t["volume_24h_usd"]} for t in ticks])
    with silver_home.connect() as conn:
        insert_raw_batch(conn, frame, ingested_at=now)
        clean_increment(conn, list(silver_home.coins))
        silver = conn.sql("SELECT coin_id, last_updated_at, reason FROM quarantine WHERE stage = 'clean_ticks'").fetchall()

    assert {(c, t): r for c, t, r in bronze} == want and len(bronze) == len(want)
    assert {(c, t): r for c, t, r in silver} == want and len(silver) == len(want)
    assert set(want.values()) <= set(R.MEANINGS)
