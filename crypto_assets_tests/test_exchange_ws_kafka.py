"""The exchange trade sources into Kafka: the stream, both local servers (WebSocket and REST)
and the embedded broker end to end, a restart, and `crypto-assets produce` as a subprocess."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from crypto_assets.kafka.embedded_broker import EmbeddedBroker
from crypto_assets.kafka.topics import TRADES_TOPIC
from crypto_assets.producers.exchanges.coinbase_ws import CoinbaseFeed
from crypto_assets.producers.exchanges.trade_source import run_trade_source
from crypto_assets_tests.exchange_ws_helpers import (
    FAST,
    REPO,
    as_traded,
    expected,
    on_rest,
    real_healer,
    rest_server,
)
from crypto_assets_tests.exchange_ws_server import (
    Beat,
    Drop,
    ExchangeWsServer,
    Raw,
    Send,
)
from crypto_assets_tests.topic_helpers import read_topic


@pytest.fixture
def rest():
    yield from rest_server()


# ----------------------------------------------------------------------------- the CLI
CLI = [sys.executable, "-m", "crypto_assets.ops.cli"]


def _cli_env(home: Path, bootstrap: str, ws_url: str, rest_url: str) -> dict[str, str]:
    return dict(os.environ, CRYPTO_HOME=str(home), KAFKA_BOOTSTRAP_SERVERS=bootstrap, COINBASE_WS_URL=ws_url,
                BINANCE_WS_URL=ws_url, COINBASE_REST_URL=rest_url, BINANCE_REST_URL=rest_url, PYTHONPATH=str(REPO))


def _tape_on_topic(bootstrap: str) -> list[tuple[str, int, str]]:
    return [(r.text_key(), r.json()["trade_id"], r.json()["origin"])
            for r in sorted(read_topic(bootstrap, TRADES_TOPIC, whole=True), key=lambda r: r.json()["trade_id"])]


def test_end_to_end_a_disconnect_and_a_jump_healed_over_rest_give_an_unbroken_tape_on_kafka(kafka, rest):
    btc, eth = on_rest(rest, "coinbase", "BTC-USD", 300, 5000, 6), on_rest(rest, "coinbase", "ETH-USD", 40, 80, 7)
    first = [Send(btc[0], "last_match"), Send(eth[0], "last_match"), *[Send(t) for t in btc[1:50]],
             Send(btc[49]), Raw('{"type": "match", "trade_id": null}'), *[Send(t) for t in eth[1:10]],
             *[Send(t) for t in btc[120:150]],        # an id jump: 5050..5119 missing
             Drop()]                                  # then a disconnect: 5150..5249 and ETH 90..99 go by
    second = [Send(btc[250], "last_match"), Send(eth[20], "last_match"), *[Send(t) for t in btc[251:300]],
              Beat("ETH-USD", 39 + 80)]               # ETH quiet since: the heartbeat says 101..119 happened
    topic = f"crypto_trades_{uuid.uuid4().hex[:8]}"
    healer = real_healer(rest)
    with ExchangeWsServer(coinbase=[first, second]) as srv:
        out = run_trade_source(kafka, CoinbaseFeed(srv.url, ["BTC-USD", "ETH-USD"]), healer=healer.heal,
                               topic=topic, max_trades=340, duration_s=60, backoff=FAST, log=lambda line: None)
    records = read_topic(kafka.bootstrap(), topic, whole=True)
    by_key: dict[str, list[dict]] = {}
    for r in records:  # topic order per partition = the order a consumer reads each product
        by_key.setdefault(r.text_key(), []).append(r.json())
    assert set(by_key) == {"coinbase:BTC-USD", "coinbase:ETH-USD"}
    assert as_traded(by_key["coinbase:BTC-USD"], "BTC-USD") == expected(btc, "coinbase")  # unbroken, no duplicate
    assert as_traded(by_key["coinbase:ETH-USD"], "ETH-USD") == expected(eth, "coinbase")
    assert len(records) == 340 == out["trades_sent"] == out["delivered"]
    assert (out["reconnects"], out["gaps_seen"], out["gaps_healed"], out["missing_open"], out["malformed"]) == (
        1, 4, 4, 0, 1)
    assert out["rest_trades"] == 70 + 100 + 10 + 19 and out["duplicates_dropped"] == 1


def test_cli_binance_until_max_trades_through_a_disconnect_healed_over_rest(home, rest):
    btc = on_rest(rest, "binance", "BTCUSDT", 10, 40, 8)
    first = [Send(btc[0]), Send(btc[1]), Send(btc[2]), Drop()]
    second = [Send(btc[2]), Send(btc[4]), Send(btc[5])]  # 42 again after the reconnect, 43 went by
    with EmbeddedBroker() as b, ExchangeWsServer(binance=[first, second]) as srv:
        assert b.bootstrap_servers is not None
        out = subprocess.run(CLI + ["produce", "--source", "binance", "--symbols", "btcusdt", "--max-trades", "6"],
                             env=_cli_env(home, b.bootstrap_servers, srv.url, rest.url), capture_output=True,
                             text=True, timeout=120)
        assert out.returncode == 0, out.stderr[-3000:]
        assert _tape_on_topic(b.bootstrap_servers) == [
            ("binance:BTCUSDT", i, "rest" if i == 43 else "ws") for i in range(40, 46)]
    assert srv.record.connections == 2 * ["/stream?streams=btcusdt@trade"]
    summary = json.loads(out.stdout[out.stdout.index("{"):])
    assert (summary["trades_sent"], summary["delivered"], summary["reconnects"], summary["duplicates_dropped"]) == (
        6, 6, 1, 1)
    assert summary["rest"]["gaps_healed"] == 1 and summary["rest"]["requests"] == 1
    assert "binance: connection lost (connection dropped without a close frame); reconnect #1" in out.stdout
    assert "binance: gap in BTCUSDT healed: 1 trade(s) 43..43 fetched over REST" in out.stdout
    assert "binance: final stats: 6 trades sent (5 ws, 1 rest), reconnects 1, duplicates dropped 1" in out.stdout


def test_cli_coinbase_stops_cleanly_on_sigterm_with_every_trade_delivered(home, rest):
    btc = on_rest(rest, "coinbase", "BTC-USD", 6, 7, 9)
    script = [Send(btc[0], "last_match"), *[Send(t) for t in btc[1:]], Beat("BTC-USD", 12)]
    lines: list[str] = []
    with EmbeddedBroker() as b, ExchangeWsServer(coinbase=[script]) as srv:
        assert b.bootstrap_servers is not None
        proc = subprocess.Popen(CLI + ["produce", "--source", "coinbase", "--products", "BTC-USD", "--interval-s", "0.2"],
                                env=_cli_env(home, b.bootstrap_servers, srv.url, rest.url), stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        assert proc.stdout is not None
        reader = threading.Thread(target=lambda: lines.extend(proc.stdout or ()), daemon=True)
        reader.start()
        deadline = time.monotonic() + 60
        while not any("stats: 6 trades sent" in line for line in lines):
            assert proc.poll() is None and time.monotonic() < deadline, "".join(lines)[-3000:]
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, "".join(lines)[-3000:]
        reader.join(10)
        assert _tape_on_topic(b.bootstrap_servers) == [("coinbase:BTC-USD", i, "ws") for i in range(7, 13)]
    text = "".join(lines)
    assert "coinbase: subscribed (matches: BTC-USD, heartbeat: BTC-USD)" in text
    assert "coinbase: final stats: 6 trades sent" in text and '"delivered": 6' in text


def test_a_restarted_source_heals_what_went_by_while_it_was_down(kafka, rest):
    btc = on_rest(rest, "coinbase", "BTC-USD", 40, 5000, 10)
    topic = f"crypto_trades_{uuid.uuid4().hex[:8]}"
    healer = real_healer(rest)
    before = [Send(btc[0], "last_match"), *[Send(t) for t in btc[1:10]]]
    after = [Send(btc[30], "last_match"), *[Send(t) for t in btc[31:40]]]  # 5010..5029 traded while down
    logs: list[str] = []
    with ExchangeWsServer(coinbase=[before, after]) as srv:
        for n in (10, 30):  # the first run stops after 10 trades; a new process starts
            run_trade_source(kafka, CoinbaseFeed(srv.url, ["BTC-USD"]), healer=healer.heal, topic=topic,
                             max_trades=n, duration_s=60, backoff=FAST, log=logs.append)
    on_topic = [r.json() for r in read_topic(kafka.bootstrap(), topic, whole=True)]
    assert as_traded(on_topic, "BTC-USD") == expected(btc, "coinbase")  # one unbroken tape over both runs
    assert "coinbase: resuming BTC-USD after trade 5009 (the newest on " + topic + ")" in logs
    assert any("gap in BTC-USD: trade ids 5010..5029 missing" in line for line in logs)

