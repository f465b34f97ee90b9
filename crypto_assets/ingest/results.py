"""What a pull reports: the plan per partition, the stats per committed batch and the result of
the whole run (read by the bronze assets's metadata, the drain and the tests)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime

from crypto_assets.warehouse.lake_export import ExportResult


@dataclass
class PartitionPlan:
    partition: int
    low: int
    high: int
    stored: int | None
    start: int
    reset_reason: str | None = None
    next_offset: int = 0  # advanced as batches commit
    lost: int = 0  # offsets deleted by retention before they were read

    @property
    def lag(self) -> int:
        return max(self.high - self.next_offset, 0)


@dataclass
class BatchStats:
    batch_id: int
    messages: int
    rows_written: int
    quarantined: int
    bytes: int
    ranges: dict[int, tuple[int, int]]
    min_event_time: datetime | None
    max_event_time: datetime | None
    reasons: dict[str, int]
    skipped: int = 0  # dropped on purpose, not quarantined (a trade seen before)
    extra: dict[str, int] = field(default_factory=dict)  # the contract's own counters (trade gaps ...)


@dataclass
class PullResult:
    topic: str
    bootstrap: str
    cluster_id: str | None
    batches: list[BatchStats] = field(default_factory=list)
    plans: list[PartitionPlan] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)
    duration_s: float = 0.0
    kafka_commit_ok: bool = True
    dlq_published: int = 0
    export: ExportResult | None = None
    remaining_lag: dict[int, int] = field(default_factory=dict)

    # Wall seconds per phase, summed over the batches (what bench/ingest.py breaks the pull into):
    # consumer_open, metadata, watermarks, consume (of which consume_fetch: inside
    # Consumer.consume), write (of which parse), group_commit, dlq, export, consumer_close.
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def messages(self) -> int:
        return sum(b.messages for b in self.batches)

    @property
    def rows_written(self) -> int:
        return sum(b.rows_written for b in self.batches)

    @property
    def quarantined(self) -> int:
        return sum(b.quarantined for b in self.batches)

    @property
    def bytes(self) -> int:
        return sum(b.bytes for b in self.batches)

    @property
    def skipped(self) -> int:
        return sum(b.skipped for b in self.batches)

    @property
    def extra(self) -> dict[str, int]:
        """The contract's counters (crypto_assets.ingest.contract.RowsOutcome.extra), summed."""
        out: dict[str, int] = {}
        for b in self.batches:
            for k, v in b.extra.items():
                out[k] = out.get(k, 0) + v
        return out

    @property
    def reasons(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for b in self.batches:
            for k, v in b.reasons.items():
                out[k] = out.get(k, 0) + v
        return out

    @property
    def offsets_lost(self) -> dict[int, int]:
        """partition -> offsets deleted by retention before any pull read them."""
        return {p.partition: p.lost for p in self.plans if p.lost}

    @property
    def offset_ranges(self) -> dict[int, tuple[int, int]]:
        """partition -> (first offset read, next offset) over the whole run."""
        out: dict[int, tuple[int, int]] = {}
        for b in self.batches:
            for p, (lo, hi) in b.ranges.items():
                out[p] = (min(lo, out[p][0]), max(hi, out[p][1])) if p in out else (lo, hi)
        return out


def add_time(timings: dict[str, float] | None, phase: str, since: float) -> None:
    """Add the seconds since `since` (time.perf_counter) to `phase` of a pull's timings."""
    if timings is not None:
        timings[phase] = timings.get(phase, 0.0) + time.perf_counter() - since
