"""The report's trade candles: simulated trades through the embedded broker, bronze and the
incremental step, then the figures and numbers of `market_report` against `trade_bars_1m`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import numpy as np
import pytest
from PIL import Image

from crypto_assets.defs.report import market_report
from crypto_assets.resources import LakehouseResource
from crypto_assets.resources.mlflow import MlflowResource
from crypto_assets.transforms.chain import run_incremental
from crypto_assets_tests.report_helpers import DPI, assert_png, md_table, report_metadata, shows

TRADE_COINS = ["bitcoin", "cardano"]


@pytest.fixture(scope="module")
def traded(tmp_path_factory, broker):
    """Simulated ticks and trades through the embedded broker, bronze and the incremental step
    (trade_bars_1m), then the report over its last 2 hours."""
    import uuid

    from crypto_assets.ingest.pull import pull_raw_ticks, pull_raw_trades
    from crypto_assets.producers.simulator.config import SimulatorConfig
    from crypto_assets.producers.simulator.run import run_simulator
    from crypto_assets.resources import KafkaResource
    from crypto_assets.transforms.trade_bars import trade_bars_increment

    home = tmp_path_factory.mktemp("report_trades") / "var"
    suffix = uuid.uuid4().hex[:8]
    kafka = KafkaResource(bootstrap_servers=broker.bootstrap_servers, home=str(home), raw_topic=f"crypto_raw_{suffix}",
                          trades_topic=f"crypto_trades_{suffix}", dlq_topic=f"crypto_raw_dlq_{suffix}",
                          trades_dlq_topic=f"crypto_trades_dlq_{suffix}", consumer_group=f"report.{suffix}")
    start = (datetime.now(UTC) - timedelta(hours=3, minutes=30)).replace(second=0, microsecond=0)
    cfg = SimulatorConfig(coins=TRADE_COINS, seed=21, history="3h", interval="60s", start_time=start, mode="both",
                          trade_rate=0.3)
    sent = run_simulator(kafka, cfg, log=lambda _: None)
    lh = LakehouseResource(home=str(home), coins=TRADE_COINS)
    assert pull_raw_ticks(kafka, lh).rows_written == sent["valid_sent"]
    assert pull_raw_trades(kafka, lh).rows_written == sent["trades_sent"]
    with lh.connect() as conn:
        run_incremental(conn, TRADE_COINS)
        trade_bars_increment(conn)  # the trade bars' own increment: a no-op when the step above made them
    mlf = MlflowResource(home=str(home))
    result = dg.materialize(
        [market_report], resources={"lakehouse": lh, "mlflow": mlf},
        run_config={"ops": {"market_report": {"config": {"hours": 2.0, "dpi": DPI}}}},
    )
    assert result.success
    return {"lh": lh, "sent": sent, "md": report_metadata(result)}


def test_trade_candles_figures(traded):
    """One trade figure per product, at its size, drawn in the up, down and VWAP colours."""
    from crypto_assets.report.plots import DOWN, UP
    from crypto_assets.report.trade_plots import TRADE_CANDLES_SIZE, VWAP

    report_dir = Path(traded["md"]["report_dir"].value)
    text = (report_dir / "report.md").read_text()
    for product in ("BTC-USD", "ADA-USD"):
        path = report_dir / f"trades_simulator_{product}.png"
        assert_png(path, TRADE_CANDLES_SIZE, DPI)
        assert f"](trades_simulator_{product}.png)" in text
        with Image.open(path) as im:
            colours = {tuple(c) for c in np.unique(np.asarray(im.convert("RGB")).reshape(-1, 3), axis=0)}
        for hex_colour in (UP, DOWN, VWAP):
            rgb = tuple(int(hex_colour[i:i + 2], 16) for i in (1, 3, 5))
            assert rgb in colours, (product, hex_colour)
    assert "trades_simulator_BTC-USD.png" in traded["md"]["figures"].value


def test_trade_numbers_equal_the_trade_bars(traded):
    """report.md's trade table and totals, and the asset's metadata, against trade_bars_1m."""
    md = traded["md"]
    text = (Path(md["report_dir"].value) / "report.md").read_text()
    with traded["lh"].connect(read_only=True) as conn:
        rows = conn.sql(
            """
            WITH w AS (SELECT * FROM trade_bars_1m WHERE bar_start > (SELECT max(bar_start) FROM trade_bars_1m) - INTERVAL 2 HOUR)
            SELECT exchange || ':' || product, sum(trade_count), count(*), arg_max(close, bar_start)::DOUBLE,
                   100 * (arg_max(close, bar_start) / arg_min(open, bar_start) - 1)::DOUBLE,
                   (sum(quote_volume) / sum(base_volume))::DOUBLE, sum(base_volume)::DOUBLE, sum(quote_volume)::DOUBLE,
                   100 * (sum(buy_volume) / sum(base_volume))::DOUBLE
            FROM w GROUP BY 1 ORDER BY 1
            """
        ).fetchall()
        bodies = conn.sql("SELECT avg((open <> close)::INT), avg((high > greatest(open, close))::INT) "
                          "FROM trade_bars_1m").fetchall()[0]
    assert len(rows) == 2 and bodies[0] > 0.8 and bodies[1] > 0.5  # real candles: bodies and wicks
    got = {r[0]: r for r in md_table(text, "Trades (1-minute bars from trades, last 2 h)")}
    assert set(got) == {r[0] for r in rows}
    for key, trades, bars, close, change, vwap, base, quote, buys in rows:
        _k, t_txt, b_txt, close_txt, change_txt, vwap_txt, base_txt, quote_txt, buys_txt = got[key]
        assert int(t_txt.replace(",", "")) == trades and int(b_txt.replace(",", "")) == bars, key
        assert shows(close_txt, close) and shows(change_txt, change) and shows(vwap_txt, vwap), key
        assert shows(base_txt, base) and shows(quote_txt, quote) and shows(buys_txt, buys), key
    total_trades, total_bars = sum(r[1] for r in rows), sum(r[2] for r in rows)
    assert f"{total_trades:,} trades in {total_bars:,} one-minute bars over 2 products" in text
    assert md["trades_in_window"].value == total_trades and md["trade_bars_in_window"].value == total_bars
    assert md["trade_products"].value == 2
    assert total_trades < traded["sent"]["trades_sent"]  # the window is the last 2 of 3 hours
