"""The lakehouse: one DuckDB file (system of record) plus Parquet mirrors under `lake/`."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import duckdb
from pydantic import Field

from crypto_assets.contract import DEFAULT_COIN_IDS
from crypto_assets.warehouse_schema import ensure_schema


class LakehouseResource(dg.ConfigurableResource):
    """Paths under CRYPTO_HOME and DuckDB connections to the warehouse."""

    home: str = Field(default="var", description="CRYPTO_HOME: root of everything written at run time")
    coins: list[str] = Field(default_factory=lambda: list(DEFAULT_COIN_IDS))
    duckdb_threads: int = 2
    duckdb_memory_limit: str = "4GB"

    @property
    def root(self) -> Path:
        return Path(self.home).resolve()

    @property
    def duckdb_path(self) -> Path:
        return self.root / "warehouse.duckdb"

    @property
    def lake_path(self) -> Path:
        return self.root / "lake"

    @contextlib.contextmanager
    def connect(self, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        """A connection with UTC session time zone; the schema exists before first use."""
        self.root.mkdir(parents=True, exist_ok=True)
        if read_only and not self.duckdb_path.exists():
            read_only = False
        conn = duckdb.connect(
            str(self.duckdb_path),
            read_only=read_only,
            config={"threads": self.duckdb_threads, "memory_limit": self.duckdb_memory_limit},
        )
        try:
            conn.execute("SET TimeZone = 'UTC'")
            if not read_only:
                ensure_schema(conn)
            yield conn
        finally:
            conn.close()
