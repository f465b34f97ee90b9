"""Equality of the engines' results: every engine writes bars_<width>/*.parquet, DuckDB joins
them on (exchange, product, bar_start) and counts, per column, the rows that differ. OHLC,
volumes, counts and trade ids must be equal exactly (decimals compared as decimals); VWAP, RSI
and Bollinger within a relative 1e-9 (both NULL counts as equal)."""

from __future__ import annotations

from pathlib import Path

import duckdb

from bench._engines_features import EXACT, WIDTHS, columns

REL_TOL = 1e-9


def _source(out_dir: Path, width: str) -> str:
    return f"read_parquet('{out_dir / f'bars_{width}'}/*.parquet')"


def rows(out_dir: Path, width: str) -> int:
    con = duckdb.connect()
    try:
        return int(con.sql(f"SELECT count(*) FROM {_source(out_dir, width)}").fetchall()[0][0])
    finally:
        con.close()


def differences(a_dir: Path, b_dir: Path, width: str, con: duckdb.DuckDBPyConnection | None = None) -> dict[str, int]:
    """Column -> rows that differ between the two engines' bars (only non-zero counts);
    `only_a` / `only_b`: bars one engine has and the other not."""
    own = con is None
    con = con or duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    cols = [c for c in columns(width) if c not in ("exchange", "product", "bar_start")]
    sel = ", ".join(f"{c}" for c in cols)
    tests = []
    for c in cols:
        if c in EXACT:
            tests.append(f"count(*) FILTER (a.{c} IS DISTINCT FROM b.{c} AND a.k AND b.k) AS {c}")
        else:
            tests.append(
                f"count(*) FILTER (a.k AND b.k AND NOT ((a.{c} IS NULL AND b.{c} IS NULL) OR "
                f"abs(a.{c} - b.{c}) <= {REL_TOL} * greatest(abs(a.{c}), abs(b.{c}), 1e-3))) AS {c}")
    q = f"""
        WITH a AS (SELECT exchange, product, bar_start::TIMESTAMPTZ AS bar_start, {sel}, true AS k FROM {_source(a_dir, width)}),
             b AS (SELECT exchange, product, bar_start::TIMESTAMPTZ AS bar_start, {sel}, true AS k FROM {_source(b_dir, width)})
        SELECT count(*) FILTER (b.k IS NULL) AS only_a, count(*) FILTER (a.k IS NULL) AS only_b, {', '.join(tests)}
        FROM a FULL OUTER JOIN b USING (exchange, product, bar_start)
    """
    try:
        res = con.sql(q)
        vals = res.fetchall()[0]
        return {name: int(v) for name, v in zip(res.columns, vals, strict=True) if v}
    finally:
        if own:
            con.close()


def compare_all(reference: Path, others: dict[str, Path]) -> list[str]:
    """Error lines for every engine whose bars differ from the reference engine's."""
    errors = []
    con = duckdb.connect()
    try:
        for name, d in others.items():
            for width in WIDTHS:
                diff = differences(reference, d, width, con)
                if diff:
                    errors.append(f"{name} vs {reference.name} bars_{width}: " + ", ".join(f"{k} {v}" for k, v in diff.items()))
    finally:
        con.close()
    return errors



