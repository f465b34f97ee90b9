"""Where bench/ingest.py's pull spends its time: the pull's own phase timings (PullResult.timings),
every DuckDB statement through a LakehouseResource whose connections time their statements, and
the exclusive breakdown printed at the end (parents minus their timed children)."""

from __future__ import annotations

import contextlib
import re
import sys
import time
from collections import defaultdict
from collections.abc import Iterator

from bench._sql_timing import TimedConnection
from crypto_assets.resources import LakehouseResource


class Timers:
    """Seconds per key: 'pull:<phase>' from PullResult.timings, labelled SQL statements, DuckDB
    open/close."""

    def __init__(self) -> None:
        self.t: dict[str, float] = defaultdict(float)

    def add(self, key: str, dt: float) -> None:
        self.t[key] += dt

    def add_pull(self, timings: dict[str, float]) -> None:
        for phase, dt in timings.items():
            self.add(f"pull:{phase}", dt)


SINK: Timers | None = None  # where BenchLakehouse connections record; None = not recording


@contextlib.contextmanager
def recording(timers: Timers) -> Iterator[Timers]:
    """BenchLakehouse connections opened meanwhile record into `timers`."""
    global SINK
    SINK = timers
    try:
        yield timers
    finally:
        SINK = None


def _rec(key: str, dt: float) -> None:
    if SINK is not None:
        SINK.add(key, dt)


_SQL_LABELS = [
    (r"^CREATE OR REPLACE TEMP TABLE judged", "sql: judge (typing, validation, in-batch dedupe)"),
    (r"^UPDATE judged", "sql: dedupe against history (anti-join raw_ticks)"),
    (r"^INSERT INTO raw_ticks", "sql: INSERT INTO raw_ticks"),
    (r"^INSERT INTO lake_pending", "sql: mark Parquet partitions dirty"),
    (r"^INSERT INTO quarantine", "sql: INSERT INTO quarantine"),
    (r"^INSERT INTO ingest_offsets", "sql: INSERT INTO ingest_offsets"),
    (r"^INSERT INTO ingest_batches", "sql: INSERT INTO ingest_batches"),
    (r"^COMMIT", "sql: COMMIT"),
    (r"^BEGIN", "sql: BEGIN"),
    (r"^SELECT kafka_partition, next_offset", "setup: read stored offsets"),
    (r"^SELECT kafka_partition, kafka_offset, message_key", "dlq: look for unsent quarantine rows"),
    (r"^COPY", "export: COPY ... TO parquet"),
    (r"lake_pending", "export: lake_pending bookkeeping"),
    (r"read_parquet", "export: count exported rows"),
]
REGISTER = "write: register Arrow views"


def sql_label(sql: str) -> str:
    s = " ".join(sql.split())
    for pat, label in _SQL_LABELS:
        if re.search(pat, s):
            return label
    return "sql: other small queries (batch id, counts, min/max, reasons)"


def _record(key, kind: str, dt: float) -> None:
    _rec(REGISTER if kind == "register" else key, dt)


class BenchLakehouse(LakehouseResource):
    """The project's LakehouseResource; connect() additionally times opening (incl. schema DDL)
    and closing, and hands the pull a statement-timing proxy of the connection."""

    @contextlib.contextmanager
    def connect(self, read_only: bool = False):
        t = time.perf_counter()
        cm = super().connect(read_only=read_only)
        conn = cm.__enter__()
        _rec("setup: open DuckDB + ensure schema", time.perf_counter() - t)
        try:
            yield TimedConnection(conn, sql_label, _record)
        except BaseException:
            if not cm.__exit__(*sys.exc_info()):
                raise
        else:
            t = time.perf_counter()
            cm.__exit__(None, None, None)
            _rec("teardown: close DuckDB (checkpoint)", time.perf_counter() - t)


_PULL_SETUP = {  # pull phases printed as they are
    "pull:consumer_open": "setup: create Consumer",
    "pull:metadata": "setup: metadata (list_topics)",
    "pull:watermarks": "setup: watermarks",
    "pull:consumer_close": "teardown: close Consumer",
}


def breakdown(t: Timers, total: float) -> list[tuple[str, float]]:
    """Exclusive time per category (parents minus their timed children)."""
    g = t.t.get
    consume_total = g("pull:consume", 0.0)
    consume_c = g("pull:consume_fetch", 0.0)
    write_total = g("pull:write", 0.0)
    parse = g("pull:parse", 0.0)
    sql_in_write = sum(v for k, v in t.t.items() if k.startswith("sql:") or k == REGISTER)
    export_total = g("pull:export", 0.0)
    export_sql = sum(v for k, v in t.t.items() if k.startswith("export:"))
    setup = {**{k: v for k, v in t.t.items() if k.startswith(("setup:", "teardown:"))},
             **{label: g(key, 0.0) for key, label in _PULL_SETUP.items() if key in t.t}}
    rows: list[tuple[str, float]] = sorted(setup.items())
    rows.append(("consume: Consumer.consume() (librdkafka fetch + Message objects)", consume_c))
    rows.append(("consume: Python glue (m.value()/offset()/... lists, bookkeeping)", consume_total - consume_c))
    rows.append(("parse: parse_values (NDJSON -> polars, contract schema)", parse))
    rows.append(("write: polars glue (meta frame, join, rejects, to_arrow)", write_total - parse - sql_in_write))
    for k in sorted(t.t):
        if k.startswith("sql:") or k == REGISTER:
            rows.append((k.replace("sql:", "duckdb:"), t.t[k]))
    rows.append(("kafka: commit offsets to consumer group", g("pull:group_commit", 0.0)))
    rows.append(("dlq: publish_dlq (query, nothing to send)", g("pull:dlq", 0.0)
                 - g("dlq: look for unsent quarantine rows", 0.0)))
    rows.append(("dlq: look for unsent quarantine rows (sql)", g("dlq: look for unsent quarantine rows", 0.0)))
    if export_total:
        for k in sorted(t.t):
            if k.startswith("export:"):
                rows.append((k, t.t[k]))
        rows.append(("export: file moves, staging, Python", export_total - export_sql))
    accounted = sum(v for _, v in rows)
    rows.append(("unaccounted (pull_raw_ticks itself, planning, logging)", total - accounted))
    return rows
