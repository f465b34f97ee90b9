"""What one pull may do (PullConfig) and where bronze's Parquet mirror lives: the settings every
stage of the pull reads, kept apart so those stages do not import the orchestration."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import cast

from crypto_assets.kafka.tick_contract import MAX_MESSAGE_BYTES
from crypto_assets.warehouse.tables import TABLES

BRONZE = TABLES["raw_ticks"]
BRONZE_DATASET: str = cast(str, BRONZE.dataset)  # raw_ticks declares its mirror, time column and order
BRONZE_TIME_COLUMN: str = cast(str, BRONZE.time_column)
BRONZE_EXPORT_ORDER: str = cast(str, BRONZE.export_order)


@dataclass
class PullConfig:
    max_messages: int = 1_000_000  # per run; the rest waits for the next run
    # Per DuckDB transaction: bounds memory (~1 KB per message). Above one DuckDB row group
    # (122,880 rows) a full batch is written straight into the database file rather than
    # through the WAL and a second write at the checkpoint.
    batch_size: int = 150_000
    consume_chunk: int = 10_000
    poll_timeout_s: float = 0.5
    idle_timeout_s: float = 15.0  # no progress this long below the snapshot → error
    max_message_bytes: int = MAX_MESSAGE_BYTES
    max_stored_bytes: int = 64 * 1024  # raw bytes kept per quarantine row
    max_future_skew: timedelta = timedelta(days=1)
    export_parquet: bool = True
    publish_dlq: bool = True
