"""The engines bench's input: N trades from a seeded numpy generator, written once to Parquet
under var/bench/engines/ (reused when a file with the same parameters exists), and the
helpers that move exact decimals between Arrow and scaled int64 without a Python Decimal.

The tape looks like the exchanges': per product a geometric random walk of prices rounded to
the product's tick, log-normal sizes rounded to its size increment, Poisson arrival times in
microseconds over several days, a fifth of the trades sharing the previous trade's microsecond
(one taker order filling several makers, same side), trade ids +1 per trade from a product's
own base. Rows are ordered by trade time across products, as a pull ingests them.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from bench._common import REPO

CACHE = REPO / "var" / "bench" / "engines"
SCALE = 100_000_000  # 8 decimals
START = datetime(2026, 11, 2, tzinfo=UTC)
GEN_VERSION = 2  # bump when the generator's output changes: old files are not reused


@dataclass(frozen=True)
class Product:
    exchange: str
    product: str
    base: str
    quote: str
    coin_id: str
    price: float  # starting price
    tick: int  # price increment in 1e-8 units
    size_step: int  # size increment in 1e-8 units
    median_size: float  # in base currency
    share: float  # of all trades


PRODUCTS = (
    Product("coinbase", "BTC-USD", "BTC", "USD", "bitcoin", 91_234.56, 1_000_000, 1, 0.012, 0.22),
    Product("coinbase", "ETH-USD", "ETH", "USD", "ethereum", 3_187.42, 1_000_000, 1, 0.35, 0.16),
    Product("coinbase", "SOL-USD", "SOL", "USD", "solana", 142.87, 1_000_000, 1, 4.0, 0.08),
    Product("coinbase", "ADA-USD", "ADA", "USD", "cardano", 0.4512, 10_000, 1, 900.0, 0.05),
    Product("binance", "BTCUSDT", "BTC", "USDT", "bitcoin", 91_230.01, 1_000_000, 1_000, 0.004, 0.25),
    Product("binance", "ETHUSDT", "ETH", "USDT", "ethereum", 3_186.90, 1_000_000, 10_000, 0.12, 0.14),
    Product("binance", "LINKUSDT", "LINK", "USDT", "chainlink", 14.213, 100_000, 1_000_000, 30.0, 0.06),
    Product("binance", "DOTUSDT", "DOT", "USDT", "polkadot", 5.371, 100_000, 1_000_000, 80.0, 0.04),
)


def trades_path(n: int, days: float, seed: int) -> Path:
    return CACHE / f"trades-n{n}-d{days:g}-s{seed}-v{GEN_VERSION}.parquet"


def decimal_array(scaled: np.ndarray, precision: int, scale: int = 8) -> pa.Array:
    """A decimal128 Arrow array from int64 values in 10^-scale units (exact, vectorised)."""
    v = np.ascontiguousarray(scaled, dtype=np.int64)
    words = np.empty(2 * len(v), dtype=np.int64)
    words[0::2] = v
    words[1::2] = v >> 63  # two's complement sign extension to 128 bits
    return pa.Array.from_buffers(pa.decimal128(precision, scale), len(v), [None, pa.py_buffer(words)])


def scaled_int64(col: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """int64 values in 10^-scale units of a decimal128 column whose values fit in 64 bits."""
    chunks = col.chunks if isinstance(col, pa.ChunkedArray) else [col]
    parts = []
    for c in chunks:
        if c.null_count:
            raise ValueError("decimal column with nulls")
        words = np.frombuffer(c.buffers()[1], dtype=np.int64)[2 * c.offset: 2 * (c.offset + len(c))]
        lo, hi = words[0::2], words[1::2]
        if not np.array_equal(hi, lo >> 63):
            raise ValueError("decimal value beyond 64 bits")
        parts.append(lo)
    return np.concatenate(parts) if parts else np.empty(0, np.int64)


def _product_trades(p: Product, k: int, days: float, rng: np.random.Generator, t0_us: int) -> dict:
    span_us = int(days * 86_400 * 1_000_000)
    multi = rng.random(k) < 0.2  # fills of the previous trade's taker order
    multi[0] = False
    gaps = rng.exponential(span_us / max(1, k - int(multi.sum())), k)  # orders (not fills) fill the span
    gaps[multi] = 0.0
    cs = np.cumsum(gaps)
    t_us = t0_us + np.floor(cs * ((span_us - 1) / cs[-1])).astype(np.int64)  # the last trade ends the span
    idx = np.arange(k)
    lead = np.maximum.accumulate(np.where(multi, 0, idx))  # the first fill of each taker order
    buy = (rng.random(k) < 0.5)[lead]  # all fills of one taker order share its side
    sigma = 0.05 / np.sqrt(k)  # ~5 % moves over the span, no drift
    steps = rng.normal(0.0, sigma, k) * (rng.random(k) > 0.35)
    steps[multi] = np.abs(steps[multi]) * np.where(buy[multi], 1.0, -1.0)  # a taker walking the book
    price = np.round(p.price * np.exp(np.cumsum(steps)) * SCALE / p.tick).astype(np.int64) * p.tick
    price = np.maximum(price, p.tick)
    size = np.exp(rng.normal(np.log(p.median_size), 1.2, k)) * SCALE / p.size_step
    size = np.clip(np.round(size).astype(np.int64), 1, 10**17 // p.size_step) * p.size_step
    base_id = int(rng.integers(10**8, 9 * 10**8))
    return {"t_us": t_us, "price": price, "size": size, "buy": buy, "trade_id": base_id + idx}


def generate(n: int, days: float, seed: int) -> pa.Table:
    """The N-trade tape (columns of raw_trades an engine needs, plus the contract's ids)."""
    rng = np.random.default_rng(seed)
    shares = np.array([p.share for p in PRODUCTS])
    counts = np.floor(n * shares / shares.sum()).astype(np.int64)
    counts[0] += n - counts.sum()
    t0_us = int(START.timestamp()) * 1_000_000
    cols: dict[str, list[np.ndarray]] = {k: [] for k in ("t_us", "price", "size", "buy", "trade_id", "pi")}
    for i, (p, k) in enumerate(zip(PRODUCTS, counts, strict=True)):
        d = _product_trades(p, int(k), days, rng, t0_us)
        for key, v in d.items():
            cols[key].append(v)
        cols["pi"].append(np.full(int(k), i, dtype=np.int8))
    c = {k: np.concatenate(v) for k, v in cols.items()}
    order = np.lexsort((c["trade_id"], c["pi"], c["t_us"]))
    c = {k: v[order] for k, v in c.items()}

    def dict_col(values: list[str]) -> pa.Array:
        return pa.DictionaryArray.from_arrays(pa.array(c["pi"], pa.int8()), pa.array(values)).cast(pa.string())

    return pa.table({
        "exchange": dict_col([p.exchange for p in PRODUCTS]),
        "product": dict_col([p.product for p in PRODUCTS]),
        "base_currency": dict_col([p.base for p in PRODUCTS]),
        "quote_currency": dict_col([p.quote for p in PRODUCTS]),
        "coin_id": dict_col([p.coin_id for p in PRODUCTS]),
        "trade_id": pa.array(c["trade_id"], pa.int64()),
        "price": decimal_array(c["price"], 18),
        "size": decimal_array(c["size"], 18),
        "side": pa.DictionaryArray.from_arrays(pa.array(np.where(c["buy"], 0, 1), pa.int8()),
                                               pa.array(["buy", "sell"])).cast(pa.string()),
        "trade_time": pa.array(c["t_us"], pa.timestamp("us", tz="UTC")),
    })


def ensure_trades(n: int, days: float, seed: int) -> tuple[Path, float | None]:
    """The Parquet file of the tape; (path, seconds it took to write, None when reused)."""
    path = trades_path(n, days, seed)
    if path.exists():
        return path, None
    t0 = time.perf_counter()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    pq.write_table(generate(n, days, seed), tmp, row_group_size=1_000_000, compression="zstd")
    os.replace(tmp, path)  # atomic: a killed run never leaves a half file under the final name
    return path, time.perf_counter() - t0
