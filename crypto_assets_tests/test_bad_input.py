"""Every kind of bad message is quarantined with its reason; every valid one is kept."""

from __future__ import annotations

import json

import orjson
import pytest

from crypto_assets.ingest.parse import parse_values, triage
from crypto_assets.ingest.pull import pull_raw_ticks
from crypto_assets.kafka.tick_contract import MAX_MESSAGE_BYTES
from crypto_assets_tests.helpers import produce, tick, ticks
from crypto_assets_tests.topic_helpers import read_topic


def _bad_messages() -> dict[str, tuple[bytes, str]]:
    """kind -> (value bytes, expected quarantine reason)."""
    t = tick(10_000, "ethereum")

    def with_(**kw):
        return orjson.dumps({**t, **kw})

    missing = dict(t)
    del missing["price_usd"]
    return {
        "invalid_json": (b'{"coin_id": "bitcoin", "price_usd": ', "invalid_json"),
        "non_utf8": (b'{"coin_id": "bit\xff\xfecoin"}', "not_utf8"),
        "array": (b"[1, 2, 3]", "not_object"),
        "number": (b"42", "not_object"),
        "null": (b"null", "not_object"),
        "missing_field": (orjson.dumps(missing), "missing:price_usd"),
        "string_price": (with_(price_usd="43521.87"), "wrong_type"),
        "bool_price": (with_(price_usd=True), "wrong_type"),
        "string_schema_version": (with_(schema_version="1"), "wrong_type"),
        "zero_price": (with_(price_usd=0), "invalid_price"),
        "negative_price": (with_(price_usd=-5.0), "invalid_price"),
        "nan_price": (json.dumps({**t, "price_usd": float("nan")}).encode(), "invalid_price"),
        "inf_price": (json.dumps({**t, "price_usd": float("inf")}).encode(), "invalid_price"),
        "negative_volume": (with_(volume_24h_usd=-1.0), "invalid_volume"),
        "ancient": (with_(last_updated_at="1970-01-01T00:00:00Z"), "timestamp_too_old"),
        "future": (with_(last_updated_at="2200-01-01T00:00:00Z"), "timestamp_in_future"),
        "garbage_timestamp": (with_(last_updated_at="yesterday-ish"), "invalid_timestamp"),
        "oversized": (with_(source="x" * (MAX_MESSAGE_BYTES + 10)), "oversized"),
        "unknown_coin": (with_(coin_id="dogwifhat-9000"), "unknown_coin"),
        "wrong_schema_version": (with_(schema_version=99), "unsupported_schema_version"),
        "empty": (b"", "empty_message"),
    }


def test_each_bad_kind_is_quarantined_and_valid_kept(kafka, lakehouse):
    good = ticks(200, coins=("bitcoin", "ethereum", "solana", "cardano"))
    bad = _bad_messages()
    duplicate = good[17]
    messages: list = []
    for i, g in enumerate(good):
        messages.append(g)
        if i == 30:
            messages.extend((b"ethereum", v) for v, _ in bad.values())
    messages.append(duplicate)  # same (coin_id, last_updated_at) sent twice
    produce(kafka, messages)

    r = pull_raw_ticks(kafka, lakehouse)
    assert r.messages == len(messages)
    assert r.rows_written == 200
    assert r.quarantined == len(bad) + 1
    with lakehouse.connect() as conn:
        kept = conn.sql("SELECT coin_id, last_updated_at, price_usd FROM raw_ticks").fetchall()
        reasons = conn.sql(
            "SELECT reason, detail, raw_value, raw_size, kafka_offset FROM quarantine WHERE stage = 'raw_ticks'"
        ).fetchall()
    assert len(kept) == 200
    assert len({(c, t) for c, t, _ in kept}) == 200
    got = sorted(r[0] for r in reasons)
    want = sorted([reason for _, reason in bad.values()] + ["duplicate"])
    assert got == want
    for reason, detail, raw, size, offset in reasons:
        assert detail, reason  # every quarantine row says why
        assert offset is not None
        assert size >= len(raw)
    # the raw bytes are preserved (truncated only when oversized)
    stored = {bytes(r[2]) for r in reasons}
    for kind, (value, _) in bad.items():
        if kind != "oversized":
            assert value in stored, kind

    # the same messages went to the DLQ with the reason in a header
    assert r.dlq_published == len(bad) + 1
    dlq = read_topic(kafka.bootstrap(), kafka.dlq_topic, whole=True)  # exactly the topic's offsets, however slow the broker
    assert len(dlq) == len(bad) + 1
    assert sorted(dict(m.headers)["reason"].decode() for m in dlq) == want

    # a re-run does not re-publish or re-quarantine
    r2 = pull_raw_ticks(kafka, lakehouse)
    assert r2.messages == 0 and r2.dlq_published == 0


def test_duplicate_across_batches_is_quarantined(kafka, lakehouse):
    t = ticks(20)
    produce(kafka, t)
    pull_raw_ticks(kafka, lakehouse)
    produce(kafka, t[:5])  # redelivered by a producer that restarted
    r = pull_raw_ticks(kafka, lakehouse)
    assert r.messages == 5 and r.rows_written == 0 and r.reasons == {"duplicate": 5}


def _raw_ticks(lakehouse) -> list[tuple]:
    with lakehouse.connect(read_only=True) as conn:
        return conn.sql(
            "SELECT coin_id, last_updated_at, kafka_partition, kafka_offset FROM raw_ticks ORDER BY ALL"
        ).fetchall()


def test_only_an_in_batch_duplicate_takes_the_careful_path(kafka, lakehouse):
    """A batch that is valid except for one repeated tick: the optimistic insert is undone and
    the batch is judged row by row, so the repeat is quarantined and nothing is written twice."""
    t = ticks(40)
    same_instant = dict(t[7], last_updated_at=t[7]["last_updated_at"].replace("Z", "+00:00"))
    assert same_instant["last_updated_at"] != t[7]["last_updated_at"]  # same time, other spelling
    produce(kafka, t + [same_instant])
    r = pull_raw_ticks(kafka, lakehouse)
    assert (r.messages, r.rows_written, r.reasons) == (41, 40, {"duplicate": 1})
    rows = _raw_ticks(lakehouse)
    assert len(rows) == 40 and len({(c, ts) for c, ts, _, _ in rows}) == 40
    with lakehouse.connect(read_only=True) as conn:
        assert conn.sql("SELECT count(*) FROM ingest_batches").fetchall() == [(1,)]


def test_late_ticks_inside_the_stored_time_range_are_not_duplicates(kafka, lakehouse):
    """The duplicate check looks at stored rows in the batch's time range: other ticks of that
    range (late, interleaved) are kept."""
    produce(kafka, [tick(i, "bitcoin") for i in range(0, 60, 2)])
    assert pull_raw_ticks(kafka, lakehouse).rows_written == 30
    produce(kafka, [tick(i, "bitcoin") for i in range(1, 60, 2)] + [tick(i, "ethereum") for i in range(60)])
    r = pull_raw_ticks(kafka, lakehouse)
    assert (r.rows_written, r.quarantined) == (90, 0)
    assert len(_raw_ticks(lakehouse)) == 120


def test_out_of_order_ticks_are_kept(kafka, lakehouse):
    t = ticks(30, coins=("bitcoin",))
    produce(kafka, list(reversed(t)))
    r = pull_raw_ticks(kafka, lakehouse)
    assert r.rows_written == 30 and r.quarantined == 0


@pytest.mark.parametrize("kind", list(_bad_messages()))
def test_parser_never_drops_a_message(kind):
    value, _ = _bad_messages()[kind]
    good = [orjson.dumps(tick(i)) for i in range(50)]
    values = good[:25] + [value] + good[25:]
    res = parse_values(values)
    ids = sorted(res.parsed["idx"].to_list() + res.rejects["idx"].to_list())
    assert ids == list(range(51))  # each message in exactly one output
    assert res.parsed.height >= 50


def _reason(raw: bytes) -> str:
    """The reason triage rejects raw with (it rejects it)."""
    rejected = triage(raw)
    assert rejected is not None, raw
    return rejected[0]


def test_triage_reasons():
    assert triage(b"\xff") == ("not_utf8", "invalid UTF-8 at byte 0")
    assert _reason(b"{") == "invalid_json"
    assert _reason(b"[]") == "not_object"
    assert _reason(b'{"price_usd": "1"}') == "wrong_type"
    assert _reason(b'{"price_usd": NaN}') == "invalid_price"
    assert _reason(b'{"volume_24h_usd": Infinity}') == "non_finite_number"
    assert triage(orjson.dumps(tick(1))) is None
