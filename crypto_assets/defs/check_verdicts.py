"""What every asset-check rule returns (`Verdict`) and the SQL helpers the rules share.

The rules live beside their layer's assets (defs/bronze.py, defs/silver.py, defs/gold.py,
defs/schema_checks.py): plain functions of a DuckDB connection, tested directly, evaluated by
the incremental step on the rows a pass wrote (crypto_assets/defs/incremental.py): their specs
are check_specs of the incremental multi-asset, evaluated inside its step (one step per run
instead of one per check).

Every rule takes an optional scope: the sequence numbers its asset stamped on rows
(`clean_seq`, `feature_seq`, `candle_seq`) that the assets downstream have not consumed yet (so
a blocking check that failed keeps failing until the rows are repaired, and nothing consumes
them meanwhile), or the raw batch ids a pass committed. A scoped rule
reads only those rows plus the look-back it needs, so a check costs in proportion to the new
data, not to the history (a month at 100 msg/s is ~260M ticks). Properties of the whole table
hold by construction and are checked where they can break: uniqueness, for instance, can only
be broken by rows the pass inserted, so the new keys are looked up in the table within their
own time range. Unscoped (scope None) a rule audits the whole table, as the tests do.
Not-null is not a check: the DDL declares NOT NULL and DuckDB enforces it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import dagster as dg
import duckdb

from crypto_assets.defs.metadata import markdown_table

WARN = dg.AssetCheckSeverity.WARN
ERROR = dg.AssetCheckSeverity.ERROR
OFFENDERS = 10  # offending rows named in a failed check's metadata


@dataclass
class Verdict:
    passed: bool
    metadata: dict = field(default_factory=dict)
    description: str = ""


def count_of(conn: duckdb.DuckDBPyConnection, sql: str, params=None) -> int:
    rows = conn.sql(sql, params=params).fetchall() if params else conn.sql(sql).fetchall()
    return int(rows[0][0] or 0)


Seqs = int | tuple[int, int] | None  # one sequence number, (after, up to and including), or all rows


def seq_scope(column: str, seq: Seqs) -> str:
    if seq is None:
        return "TRUE"
    if isinstance(seq, tuple):
        return f"({column} > {int(seq[0])} AND {column} <= {int(seq[1])})"
    return f"{column} = {int(seq)}"


def offender_table(conn, sql: str, columns: list[str]) -> str:
    """A markdown table of the first offending rows, so a failed check says where to look."""
    return markdown_table(conn.sql(f"{sql} LIMIT {OFFENDERS}").fetchall(), columns)
