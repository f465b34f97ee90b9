"""What a Dagster instance recorded, for the benches: per-step and per-asset/check timings of a
run from its event log, and the ticks of a sensor. Instance methods only (no dagster._ imports)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass
class RunStats:
    run_id: str
    job: str
    status: str
    start: float | None
    end: float | None
    steps: dict[str, float] = field(default_factory=dict)  # step_key -> STEP_START..STEP_SUCCESS/FAILURE (s)
    assets: dict[str, float] = field(default_factory=dict)  # asset -> materialization metadata duration_s
    checks: dict[str, float] = field(default_factory=dict)  # asset:check -> check metadata duration_s
    check_steps: set[str] = field(default_factory=set)  # steps that evaluated checks and materialized nothing
    passes: int = 1  # micro-batch passes of a draining incremental run (materialization metadata "passes")

    @property
    def duration(self) -> float:
        return self.end - self.start if self.start is not None and self.end is not None else math.nan

    @property
    def busy_per_pass(self) -> float:  # compute (assets + checks) per pass: a drain lasts its drain time anyway
        return (sum(self.assets.values()) + sum(self.checks.values())) / self.passes if self.assets else math.nan

    @property
    def check_time(self) -> float:
        """Check metadata duration_s where checks carry it, else the time of the check-only steps."""
        if self.checks:
            return sum(self.checks.values())
        return sum(self.steps.get(k, 0.0) for k in self.check_steps) if self.check_steps else math.nan


def _seconds(v) -> float | None:
    v = getattr(v, "value", v)
    return float(v) if isinstance(v, (int, float)) else None


def run_stats(instance, run_id: str) -> RunStats:
    """Per-step and per-asset/check timings of one run from its event log."""
    import dagster as dg

    E = dg.DagsterEventType
    run = instance.get_run_by_id(run_id)
    rs = RunStats(run_id, run.job_name, run.status.value, None, None)
    starts: dict[str, float] = {}
    materialized: set[str] = set()
    checked: set[str] = set()
    types = {E.RUN_START, E.RUN_SUCCESS, E.RUN_FAILURE, E.RUN_CANCELED, E.STEP_START, E.STEP_SUCCESS, E.STEP_FAILURE,
             E.ASSET_MATERIALIZATION, E.ASSET_CHECK_EVALUATION}
    for rec in instance.get_records_for_run(run_id, of_type=types, limit=100_000).records:
        e = rec.event_log_entry
        t = e.dagster_event.event_type
        if t == E.RUN_START:
            rs.start = e.timestamp
        elif t in (E.RUN_SUCCESS, E.RUN_FAILURE, E.RUN_CANCELED):
            rs.end = e.timestamp
        elif t == E.STEP_START:
            starts[e.step_key] = e.timestamp
        elif t in (E.STEP_SUCCESS, E.STEP_FAILURE) and e.step_key in starts:
            rs.steps[e.step_key] = e.timestamp - starts[e.step_key]
        elif t == E.ASSET_MATERIALIZATION:
            materialized.add(e.step_key)
            m = e.asset_materialization
            d = _seconds(m.metadata.get("duration_s")) if m else None
            if d is not None:
                rs.assets[m.asset_key.to_user_string()] = d
            p = _seconds(m.metadata.get("passes")) if m else None
            if p:
                rs.passes = max(rs.passes, int(p))
        elif t == E.ASSET_CHECK_EVALUATION:
            checked.add(e.step_key)
            c = e.asset_check_evaluation
            d = _seconds(c.metadata.get("duration_s")) if c else None
            if d is not None:
                rs.checks[f"{c.asset_check_key.asset_key.to_user_string()}:{c.asset_check_key.name}"] = d
    rs.check_steps = checked - materialized
    return rs


def sensor_ticks(instance, sensor_name: str, limit: int = 1_000_000) -> list:
    """The recorded ticks of the sensor named `sensor_name` (timestamp, end_timestamp, status,
    skip_reason, run_ids), oldest first; [] when it never ticked."""
    ticks = []
    for st in instance.all_instigator_state():
        if st.instigator_name == sensor_name and st.instigator_type.value == "SENSOR":
            ticks = list(instance.get_ticks(st.instigator_origin_id, st.selector_id, limit=limit))
    ticks.sort(key=lambda t: t.timestamp)
    return ticks
