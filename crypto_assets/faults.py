"""Crash injection for the exactly-once tests.

`CRYPTO_ASSETS_FAULT=<point>` makes the process SIGKILL itself when it reaches that point, the
way an OOM kill or a power cut would: no cleanup, no exception handlers. Unset in normal use.
Points: before_write, after_duckdb_commit, during_parquet_export, dlq_half_sent, before_dlq_mark (the pull);
alerts_half_sent, before_alert_mark (the alert outbox, crypto_assets.transforms.anomalies);
clean_before_commit (clean_ticks, with rows, quarantine and jump-guard state written);
export_day_file_replaced, leftovers_partly_deleted (the export into a compacted day);
compact_staged, compact_day_file_in_place, compact_hour_files_partly_deleted, compact_day_done
(lake compaction, crypto_assets.warehouse.lake_compaction).
"""

from __future__ import annotations

import os
import signal

from crypto_assets import settings

ENV_VAR = settings.FAULT_ENV_VAR


def fault_point(name: str) -> None:
    if settings.fault_point() == name:
        os.kill(os.getpid(), signal.SIGKILL)


def fault_armed(name: str) -> bool:
    """Whether `name` is the point this process is to be killed at (for a point that needs setup
    first, such as a flush, which normal runs must not pay for)."""
    return settings.fault_point() == name
