"""What the code knows about one warehouse table, stated once: its columns (type, constraints and
what each one means), its Parquet mirror, its time and sequence columns.

The DDL, the declared schema the drift check compares with, and the Dagster column schema of
the catalog are all derived from the same `Table`; the registry of every table is
crypto_assets.warehouse.tables.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import dagster as dg

# DuckDB spells some types differently in DESCRIBE than in DDL.
_DESCRIBE_ALIASES = {"TIMESTAMPTZ": "TIMESTAMP WITH TIME ZONE"}
_TYPE = re.compile(r"[A-Z]+(?:\([^)]*\))?")


@dataclass(frozen=True)
class Table:
    """One warehouse table. `columns` are (name, DuckDB type with column constraints, meaning)."""

    name: str
    columns: tuple[tuple[str, str, str], ...]
    constraints: tuple[str, ...] = ()  # table constraints, e.g. "PRIMARY KEY (a, b)"
    dataset: str | None = None  # its Parquet mirror, relative to the lake root
    single_file: bool = False  # the mirror is one file rewritten whole (else hour files via lake_pending)
    by_date: bool = False  # hour-file mirror partitioned by date only, `symbol` a column in the files
    time_column: str | None = None  # the event time its rows are placed (and mirrored) by
    seq_column: str | None = None  # the run sequence stamped on every row it writes (None: not stamped)
    export_order: str | None = None  # ORDER BY of its Parquet files
    on_connect: bool = True  # ensure_schema creates it; False: the code that uses it does (with any migration)

    @property
    def ddl(self) -> str:
        lines = [f"    {name} {spec}" for name, spec, _ in self.columns] + [f"    {c}" for c in self.constraints]
        return f"CREATE TABLE IF NOT EXISTS {self.name} (\n" + ",\n".join(lines) + "\n)"

    @property
    def column_names(self) -> list[str]:
        return [name for name, _, _ in self.columns]

    def description(self, column: str) -> str:
        return next(text for name, _, text in self.columns if name == column)

    def declared_columns(self) -> list[tuple[str, str]]:
        """(name, type) as DESCRIBE reports them, for the schema drift check."""
        out = []
        for name, spec, _ in self.columns:
            t = _TYPE.match(spec).group(0)
            out.append((name, _DESCRIBE_ALIASES.get(t, t)))
        return out

    def column_schema(self) -> dg.TableSchema:
        """The columns as a Dagster TableSchema (type, NOT NULL, meaning): definition metadata,
        so the catalog shows every column's description without any run storing it."""
        import dagster as dg

        return dg.TableSchema(columns=[
            dg.TableColumn(name=name, type=_TYPE.match(spec).group(0), description=text,
                           constraints=dg.TableColumnConstraints(nullable=not self._not_null(name, spec)))
            for name, spec, text in self.columns
        ])

    def _not_null(self, name: str, spec: str) -> bool:
        """Declared NOT NULL, or part of the primary key (which implies it)."""
        key = next((c for c in self.constraints if c.startswith("PRIMARY KEY")), "")
        return "NOT NULL" in spec or "PRIMARY KEY" in spec or name in re.findall(r"\w+", key.removeprefix("PRIMARY KEY"))
