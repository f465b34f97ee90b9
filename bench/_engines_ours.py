"""The project's engine: the trades in a DuckDB warehouse's `raw_trades` (as the pull leaves
them), `crypto_assets.transforms.trade_bars.trade_bars_full` building trade_bars_1s/1m/1h with
the 1-minute RSI and Bollinger, and the bars copied out as Parquet for the comparison.

Three phases, timed apart: `load` (the Parquet trades into raw_trades, with the bronze
columns a pull would fill: where the project keeps its trades, as Parquet is where Spark and
pandas read theirs), `compute` (trade_bars_full), `write` (COPY of the compared columns).
"""

from __future__ import annotations

import time
from pathlib import Path

import duckdb

from bench._engines_features import WIDTHS, columns


def load(con: duckdb.DuckDBPyConnection, path: Path) -> int:
    """raw_trades from the Parquet tape: one pull batch, offsets as a pull numbers them."""
    from crypto_assets.warehouse.tables import ensure_schema

    ensure_schema(con)
    con.execute(f"""
        INSERT INTO raw_trades
        SELECT exchange, product, base_currency, quote_currency, coin_id, trade_id, price, size, side, trade_time,
               trade_time + INTERVAL 40 MILLISECOND AS received_at, 'ws', 1, 'crypto_trades', 0,
               file_row_number, trade_time + INTERVAL 60 MILLISECOND, 1, now()
        FROM read_parquet('{path}', file_row_number = true)""")
    return int(con.sql("SELECT count(*) FROM raw_trades").fetchall()[0][0])


def compute(con: duckdb.DuckDBPyConnection) -> dict[str, int]:
    from crypto_assets.transforms.trade_bars import trade_bars_full

    return dict(trade_bars_full(con).bars)


def write(con: duckdb.DuckDBPyConnection, out_dir: Path) -> None:
    for width in WIDTHS:
        d = out_dir / f"bars_{width}"
        d.mkdir(parents=True, exist_ok=True)
        con.execute(f"COPY (SELECT {', '.join(columns(width))} FROM trade_bars_{width}) TO '{d / 'part-0.parquet'}' "
                    "(FORMAT parquet)")


def run(db: Path, path: Path, out_dir: Path) -> dict[str, float]:
    """Phase -> seconds, on a fresh warehouse file `db`."""
    timings: dict[str, float] = {}
    con = duckdb.connect(str(db))
    con.execute("SET enable_progress_bar = false")
    try:
        t0 = time.perf_counter()
        load(con, path)
        con.execute("CHECKPOINT")
        t1 = time.perf_counter()
        compute(con)
        t2 = time.perf_counter()
        write(con, out_dir)
        t3 = time.perf_counter()
    finally:
        con.close()
    timings.update(load=t1 - t0, compute=t2 - t1, write=t3 - t2)
    return timings
