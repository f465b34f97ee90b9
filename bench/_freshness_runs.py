"""What bench/freshness.py reads after the stack is stopped: each incremental run's timeline from
the Dagster instance (sensor tick, enqueue, launch, worker up, RUN_START, steps, end), the
backlog sensor's ticks, and which run ingested each sample (raw_ticks JOIN ingest_batches)."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import UTC
from pathlib import Path

import duckdb

from bench._live import Sample
from bench._runs import sensor_ticks
from crypto_assets.warehouse.sql import scalar

LOOP_JOB = "bench_loop_job"  # --mode loop --loop-assets


@dataclass
class RunInfo:
    run_id: str
    status: str
    sensor_tick: float | None  # start of the sensor evaluation that requested the run
    enqueued: float  # RUN_ENQUEUED (fallback: create_timestamp, 1 s resolution)
    starting: float | None  # RUN_STARTING: dequeued, launcher called
    proc: float | None  # ENGINE_EVENT "Started process for run": spawned worker is up (dagster imported)
    start: float | None  # RUN_START: code location loaded in the worker, job built
    end: float | None
    steps: dict  # step_key -> (start, end)
    lag_tag: str

    @property
    def requested(self) -> float:
        return self.sensor_tick if self.sensor_tick is not None else self.enqueued


def read_instance(dagster_home: Path):
    """(incremental runs by request time, the backlog sensor's ticks, other runs counted by job:status)."""
    import dagster as dg

    inst = dg.DagsterInstance.from_config(str(dagster_home))
    E = dg.DagsterEventType
    types = {E.RUN_ENQUEUED, E.RUN_STARTING, E.RUN_START, E.RUN_SUCCESS, E.RUN_FAILURE, E.RUN_CANCELED,
             E.STEP_START, E.STEP_SUCCESS, E.STEP_FAILURE, E.ENGINE_EVENT}
    ticks = sensor_ticks(inst, "kafka_backlog_sensor", limit=100000)
    tick_of_run = {rid: t.timestamp for t in ticks for rid in t.run_ids}
    runs: list[RunInfo] = []
    other_jobs = Counter()
    for rec in inst.get_run_records():
        run = rec.dagster_run
        if run.job_name not in ("incremental_job", LOOP_JOB):
            other_jobs[f"{run.job_name}:{run.status.value}"] += 1
            continue
        ev: dict = {}
        proc = None
        steps: dict[str | None, list[float | None]] = defaultdict(lambda: [None, None])
        for r in inst.get_records_for_run(run.run_id, of_type=types).records:
            e = r.event_log_entry
            if e.dagster_event is None:
                raise RuntimeError(f"run {run.run_id}: a record of the Dagster event types read holds no Dagster event")
            t = e.dagster_event.event_type
            if t == E.STEP_START:
                steps[e.step_key][0] = e.timestamp
            elif t in (E.STEP_SUCCESS, E.STEP_FAILURE):
                steps[e.step_key][1] = e.timestamp
            elif t == E.ENGINE_EVENT:
                if proc is None and (e.dagster_event.message or "").startswith("Started process for run"):
                    proc = e.timestamp
            else:
                ev.setdefault(t, e.timestamp)
        ct = rec.create_timestamp
        if ct.tzinfo is None:
            ct = ct.replace(tzinfo=UTC)
        end = ev.get(E.RUN_SUCCESS) or ev.get(E.RUN_FAILURE) or ev.get(E.RUN_CANCELED) or rec.end_time
        start = ev.get(E.RUN_START) or rec.start_time
        # --mode loop (execute_in_process): no sensor tick, queue or launch; those phases are 0
        enqueued = ev.get(E.RUN_ENQUEUED) or (start if start is not None else ct.timestamp())
        starting = ev.get(E.RUN_STARTING) or enqueued
        runs.append(RunInfo(run.run_id, run.status.value, tick_of_run.get(run.run_id),
                            enqueued, starting, proc or starting, start, end,
                            {k: tuple(v) for k, v in steps.items()}, run.tags.get("lag", "")))
    runs.sort(key=lambda r: r.requested)
    inst.dispose()
    return runs, ticks, other_jobs


def attribute(db_path: Path, samples: list[Sample]) -> dict[str, int]:
    """Set each sample's ingesting run_id; return where the unseen ones are stuck."""
    if not samples or not db_path.exists():
        return {}
    lo = min(s.ms for s in samples) / 1000.0 - 0.001
    con = duckdb.connect(str(db_path), read_only=True)
    try:
        raw = {(c, int(m)): rid for c, m, rid in con.execute(
            "SELECT r.coin_id, epoch_ms(r.last_updated_at), b.run_id FROM raw_ticks r "
            "JOIN ingest_batches b ON b.batch_id = r.batch_id WHERE r.last_updated_at >= to_timestamp(?)", [lo]
        ).fetchall()}
        clean = {(c, int(m)) for c, m in con.execute(
            "SELECT coin_id, epoch_ms(event_time) FROM clean_ticks WHERE event_time >= to_timestamp(?)", [lo]).fetchall()}
        feat = {(c, int(m)) for c, m in con.execute(
            "SELECT coin_id, epoch_ms(event_time) FROM market_features WHERE event_time >= to_timestamp(?)", [lo]).fetchall()}
        quarantined = scalar(con, "SELECT count(*) FROM quarantine")
    finally:
        con.close()
    stuck = Counter()
    for s in samples:
        k = (s.coin_id, s.ms)
        s.run_id = raw.get(k)
        if s.visible is None:
            stuck["not in raw_ticks" if k not in raw else "not in clean_ticks" if k not in clean
                  else "not in market_features" if k not in feat else "in market_features after polling stopped"] += 1
    stuck["quarantine rows (all)"] = quarantined
    return dict(stuck)
