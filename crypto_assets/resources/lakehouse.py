"""The lakehouse: one DuckDB file (system of record) plus Parquet mirrors under `lake/`.

`LakehouseResource` is a dagster-duckdb `DuckDBResource` (so it is one wherever Dagster expects
that resource) with what the pipeline needs on top: the file and the lake live under CRYPTO_HOME,
connections wait for another process's write lock instead of failing after a few retries,
read-only connections, and every connection comes with the UTC session time zone and the schema.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

import duckdb
from dagster_duckdb import DuckDBResource
from pydantic import Field

from crypto_assets.kafka.tick_contract import DEFAULT_COIN_IDS
from crypto_assets.warehouse.tables import ensure_schema


class LakehouseResource(DuckDBResource):
    """Paths under CRYPTO_HOME and DuckDB connections to the warehouse."""

    home: str = Field(default="var", description="CRYPTO_HOME: root of everything written at run time")
    coins: list[str] = Field(default_factory=lambda: list(DEFAULT_COIN_IDS))
    # DuckDBResource's required path: here it follows from `home` unless set
    database: str = Field(default="", description="DuckDB file of the warehouse (default: <home>/warehouse.duckdb)")
    duckdb_threads: int = 2
    duckdb_memory_limit: str = "4GB"
    lock_timeout_s: float = Field(default=300.0, description="how long to wait for another process's write lock")

    @property
    def root(self) -> Path:
        return Path(self.home).resolve()

    @property
    def duckdb_path(self) -> Path:
        return Path(self.database).resolve() if self.database else self.root / "warehouse.duckdb"

    @property
    def lake_path(self) -> Path:
        return self.root / "lake"

    def _config(self) -> dict:
        # DuckDBResource's user agent, our limits, then its connection_config (the user's say)
        return {
            "custom_user_agent": "dagster",
            "threads": self.duckdb_threads,
            "memory_limit": self.duckdb_memory_limit,
            **self.connection_config,
        }

    def _connect_waiting(self, read_only: bool) -> duckdb.DuckDBPyConnection:
        """DuckDB allows one read-write process per file. The duckdb_writer pool serialises our
        own steps; this wait covers everything else (a CLI run, `status`, a notebook)."""
        deadline = time.monotonic() + self.lock_timeout_s
        delay = 0.05
        while True:
            try:
                return duckdb.connect(str(self.duckdb_path), read_only=read_only, config=self._config())
            except duckdb.IOException as exc:
                if "lock" not in str(exc).lower() or time.monotonic() > deadline:
                    raise
                time.sleep(delay)
                # short retries: the draining incremental step frees the file for a few hundred ms
                # between passes, and a waiter polling once a second would mostly miss it
                delay = min(delay * 2, 0.1)

    @contextlib.contextmanager
    def get_connection(self, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        """DuckDBResource's connection, as `connect` makes it (lock wait, UTC, schema)."""
        with self.connect(read_only=read_only) as conn:
            yield conn

    @contextlib.contextmanager
    def connect(self, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        """A connection with UTC session time zone; the schema exists before first use."""
        self.root.mkdir(parents=True, exist_ok=True)
        self.duckdb_path.parent.mkdir(parents=True, exist_ok=True)
        if read_only and not self.duckdb_path.exists():
            read_only = False
        conn = self._connect_waiting(read_only)
        try:
            conn.execute("SET TimeZone = 'UTC'")
            if not read_only:
                # Closing the last connection checkpoints the WAL into the file by default, and the
                # first checkpoint in a process reads the metadata of every row group (~1 s on a
                # 20M-row warehouse, growing with it): a few-second step that connects per pass
                # would pay it every time. The WAL is durable; DuckDB checkpoints it on its own
                # once it passes checkpoint_threshold (16 MB), a cost per 16 MB of new data.
                conn.execute("PRAGMA disable_checkpoint_on_shutdown")
                ensure_schema(conn)
            yield conn
        finally:
            conn.close()
