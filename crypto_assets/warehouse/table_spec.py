"""What the code knows about one warehouse table, stated once: its column list as DDL, with a
comment on every column saying what it means, its Parquet mirror, its time and sequence columns.

The CREATE TABLE statement, the declared schema the drift check compares with, and the Dagster
column schema of the catalog are all derived from the same `Table`; the registry of every table
is crypto_assets.warehouse.tables.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

if TYPE_CHECKING:
    import dagster as dg

# DuckDB spells some types differently in DESCRIBE than in DDL.
_DESCRIBE_ALIASES = {"TIMESTAMPTZ": "TIMESTAMP WITH TIME ZONE"}
# `name TYPE [constraints][,]  -- description`
_COLUMN = re.compile(r"^\s*(\w+)\s+([A-Z]+(?:\([^)]*\))?)([^,-]*?)\s*,?\s*(?:--\s*(.*))?$")
_TABLE_CONSTRAINTS = ("PRIMARY", "UNIQUE", "CHECK")


@dataclass(frozen=True)
class Table:
    """One warehouse table. `body` is the column list of its CREATE TABLE statement, one column a
    line, each with a `-- description` comment; table constraints (PRIMARY KEY ...) may follow."""

    name: str
    body: str
    dataset: str | None = None  # its Parquet mirror, relative to the lake root
    single_file: bool = False  # the mirror is one file rewritten whole (else hour files via lake_pending)
    by_date: bool = False  # hour-file mirror partitioned by date only, `symbol` a column in the files
    time_column: str | None = None  # the event time its rows are placed (and mirrored) by
    seq_column: str | None = None  # the run sequence stamped on every row it writes (None: not stamped)
    export_order: str | None = None  # ORDER BY of its Parquet files
    on_connect: bool = True  # ensure_schema creates it; False: the code that uses it does

    def __post_init__(self) -> None:
        undescribed = [name for name, _t, _nn, text in self._columns if not text]
        if undescribed:
            raise ValueError(f"{self.name}: columns without a description: {undescribed}")

    @functools.cached_property
    def _columns(self) -> list[tuple[str, str, bool, str | None]]:
        """(name, type, NOT NULL, description) per column line of the body."""
        key = re.search(r"PRIMARY KEY\s*\(([^)]*)\)", self.body)
        key_columns = {c.strip() for c in key.group(1).split(",")} if key else set()
        out = []
        for line in self.body.splitlines():
            m = _COLUMN.match(line)
            if m and m.group(1).upper() not in _TABLE_CONSTRAINTS:
                name, spec = m.group(1), m.group(3)
                not_null = "NOT NULL" in spec or "PRIMARY KEY" in spec or name in key_columns
                out.append((name, m.group(2), not_null, (m.group(4) or "").strip() or None))
        return out

    @property
    def ddl(self) -> str:
        return f"CREATE TABLE IF NOT EXISTS {self.name} ({self.body})"

    @property
    def column_names(self) -> list[str]:
        return [name for name, *_ in self._columns]

    def description(self, column: str) -> str:
        # every column has one (__post_init__)
        return next(cast(str, text) for name, _t, _nn, text in self._columns if name == column)

    def add_column_ddl(self, existing: set[str]) -> list[str]:
        """ALTER statements for declared columns a table created by an older release lacks and
        that can be added in place: nullable, or NOT NULL with a DEFAULT (existing rows take it).
        A NOT NULL column without a default (or a key column) cannot be; the schema drift check
        (defs/schema_checks.py) reports it instead."""
        out = []
        for line in self.body.splitlines():
            m = _COLUMN.match(line)
            if not m or m.group(1).upper() in _TABLE_CONSTRAINTS or m.group(1) in existing:
                continue
            spec = m.group(3).strip()
            if "PRIMARY KEY" in spec or ("NOT NULL" in spec and "DEFAULT" not in spec):
                continue
            out.append(f"ALTER TABLE {self.name} ADD COLUMN {m.group(1)} {m.group(2)} {spec}".rstrip())
        return out

    def declared_columns(self) -> list[tuple[str, str]]:
        """(name, type) as DESCRIBE reports them, for the schema drift check."""
        return [(name, _DESCRIBE_ALIASES.get(t, t)) for name, t, _nn, _text in self._columns]

    def column_schema(self) -> dg.TableSchema:
        """The columns as a Dagster TableSchema (type, NOT NULL, meaning): definition metadata,
        so the catalog shows every column's description without any run storing it."""
        import dagster as dg

        return dg.TableSchema(columns=[
            dg.TableColumn(name=name, type=t, description=text,
                           constraints=dg.TableColumnConstraints(nullable=not not_null))
            for name, t, not_null, text in self._columns
        ])
