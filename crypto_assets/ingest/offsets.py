"""Where each partition's read starts: the offsets DuckDB stored, reconciled with the broker's
log (a restarted embedded broker, a recreated topic, retention), with the notice that says what
was found. DuckDB, not the consumer group, is the system of record for offsets."""

from __future__ import annotations

import duckdb

from crypto_assets.ingest.results import PartitionPlan


def stored_offsets(conn: duckdb.DuckDBPyConnection, topic: str) -> dict[int, tuple[int, str | None]]:
    """partition -> (next offset, cluster id) as the last committed batch left them."""
    rows = conn.sql(
        "SELECT kafka_partition, next_offset, cluster_id FROM ingest_positions WHERE kafka_topic = ?", params=[topic]
    ).fetchall()
    return {int(p): (int(o), c) for p, o, c in rows}


def plan_partitions(
    watermarks: dict[int, tuple[int, int]],
    stored: dict[int, tuple[int, str | None]],
    cluster_id: str | None,
) -> list[PartitionPlan]:
    """Decide where each partition starts, noticing when the stored offsets no longer describe
    the broker's log. Pure: unit-tested on its own."""
    plans = []
    for p in sorted(watermarks):
        low, high = watermarks[p]
        prev = stored.get(p)
        reason = None
        lost = 0
        if prev is None:
            start = low
            if low > 0:  # a new partition's log starts at 0: the first `low` offsets are gone
                lost = low
                reason = (
                    f"partition {p}: first pull, and the log already starts at offset {low}: offsets "
                    f"0..{low - 1} ({low} messages) were deleted by retention before any pull read them. "
                    f"Starting from the earliest available offset {low}."
                )
        else:
            offset, prev_cluster = prev
            if prev_cluster and cluster_id and prev_cluster != cluster_id:
                reason = (
                    f"partition {p}: the cluster id changed ({prev_cluster} -> {cluster_id}); the broker "
                    f"was restarted or replaced, so stored offset {offset} does not refer to this log. "
                    f"Resuming from the earliest available offset {low}."
                )
                start = low
            elif offset > high:
                reason = (
                    f"partition {p}: stored offset {offset} is beyond the high watermark {high} (topic "
                    f"recreated or log truncated). Resuming from the earliest available offset {low}."
                )
                start = low
            elif offset < low:
                lost = low - offset
                reason = (
                    f"partition {p}: offsets {offset}..{low - 1} ({low - offset} messages) were deleted "
                    f"by retention before they were read. Resuming from the earliest available offset {low}."
                )
                start = low
            else:
                start = offset
        plans.append(PartitionPlan(p, low, high, prev[0] if prev else None, start, reason, start, lost))
    return plans


def lost_offsets_notice(plans: list[PartitionPlan]) -> str | None:
    """One line with the total of offsets retention deleted unread, per partition."""
    lost = {p.partition: p.lost for p in plans if p.lost}
    if not lost:
        return None
    parts = ", ".join(f"partition {p}: {n}" for p, n in sorted(lost.items()))
    return f"{sum(lost.values())} offsets were deleted by retention before they were read ({parts})."
