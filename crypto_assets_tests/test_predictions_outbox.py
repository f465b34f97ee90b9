"""The predictions outbox without a trained model: an interrupted send is finished exactly once
(crypto_assets.kafka.outbox), and a row re-scored meanwhile is sent with its new values."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest

from crypto_assets.defs import predictions
from crypto_assets.kafka.outbox import publish
from crypto_assets.resources import LakehouseResource
from crypto_assets.warehouse.tables import TABLES
from crypto_assets_tests.topic_helpers import read_topic

COINS = ["bitcoin", "ethereum", "solana", "cardano", "litecoin"]  # as test_models.py


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat().replace("+00:00", "Z")


def test_predictions_outbox_finishes_an_interrupted_send_exactly_once(kafka, tmp_path):
    """Predictions go out through the one outbox (crypto_assets.kafka.outbox): a send that reached
    the topic but was never marked (the mark failed, as a kill before it would leave it) is found
    on the topic by the next publish and not sent again, while a row re-scored meanwhile (new
    predicted_at) is sent with its new values. No model is needed: the rows are written as
    scoring writes them."""
    lh = LakehouseResource(home=str(tmp_path / "outbox"), coins=COINS)
    t0 = datetime(2025, 3, 1, 12, tzinfo=UTC)
    scored = t0 + timedelta(minutes=5, microseconds=123456)
    rows = [(coin, t0 + timedelta(minutes=m), 100.0 + m, 0.25 + 0.1 * m, scored)
            for coin in COINS[:3] for m in (0, 1)]
    with lh.connect() as conn:
        conn.execute(TABLES["predictions"].ddl)
        conn.executemany("INSERT INTO predictions (coin_id, symbol, event_time, price_usd, trend_prob_up, "
                         "trend_model_version, predicted_at) VALUES (?, 'x', ?, ?, ?, '3', ?)", rows)

    def killed_before_the_mark(conn, idents):
        raise RuntimeError("killed before the mark")

    interrupted = dataclasses.replace(predictions.predictions_outbox(kafka), mark_sent=killed_before_the_mark)
    with pytest.raises(RuntimeError, match="killed before the mark"):
        publish(kafka, interrupted, lh.connect, 100)
    first = read_topic(kafka.bootstrap(), kafka.predictions_topic)
    assert sorted((r.text_key(), r.json()["event_time"]) for r in first) == sorted(
        (c, _iso(t)) for c, t, *_ in rows)
    with lh.connect() as conn:
        assert conn.sql("SELECT count(*) FROM predictions WHERE published_at IS NULL").fetchall() == [(len(rows),)]
        assert conn.sql("SELECT count(*) FROM outbox_sends WHERE outbox = 'predictions'").fetchall()[0][0] > 0
        rescored = scored + timedelta(minutes=1)
        conn.execute("UPDATE predictions SET predicted_at = ?, trend_prob_up = 0.875 WHERE coin_id = ? AND event_time = ?",
                     [rescored, rows[0][0], rows[0][1]])

    assert predictions._publish(lh, kafka) == 1  # only the re-scored row; the others were already there
    sent = read_topic(kafka.bootstrap(), kafka.predictions_topic)  # by (partition, offset): the new one may sit anywhere
    assert set(first) <= set(sent) and len(sent) == len(first) + 1
    (again,) = set(sent) - set(first)
    assert (again.text_key(), again.json()["event_time"], again.json()["trend_prob_up"],
            again.header("predicted_at")) == (rows[0][0], _iso(rows[0][1]), 0.875, rescored.isoformat())
    with lh.connect() as conn:
        assert conn.sql("SELECT count(*) FROM predictions WHERE published_at IS NULL").fetchall() == [(0,)]
        assert conn.sql("SELECT count(*) FROM outbox_sends").fetchall() == [(0,)]
    assert predictions._publish(lh, kafka) == 0
    assert read_topic(kafka.bootstrap(), kafka.predictions_topic) == sent
