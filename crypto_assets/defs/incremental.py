"""The incremental path as ONE Dagster step that drains the Kafka backlog in micro-batches.

raw_ticks → clean_ticks → market_features → anomalies, and ohlcv_1m → correlations, ohlcv_1h,
hourly_stats; raw_trades from `crypto_trades`; with their checks evaluated in the same step on
the rows each pass wrote.

Why one step: a few-second run used to be 12 steps with ~83 events (~480 KiB of Dagster storage)
and paid the run launch and the sensor's 5-second loop on every increment. Why drain: the
sensor-launched run keeps pulling new messages for `drain_seconds` (one pass, then the next as
soon as the backlog is non-empty), so the daemon launches a run a minute instead of every five
seconds, a tick is processed within about a second of arriving instead of waiting for the next
sensor tick and a run launch, and Dagster storage grows by one run's events per minute. The run
reports one materialization per asset and one result per check, summed over its passes. Each
pass is its own set of DuckDB transactions, so a kill at any moment loses at most the pass in
flight, which the next run redoes exactly (offsets and rows commit together). A blocking check
that fails stops the pass before the assets downstream of it, ends the drain and fails the step.

Selected alone (a UI materialization of `clean_ticks`, say), the step runs only those members,
once. Parquet mirrors are rewritten at most every `export_interval_seconds` and at the end.
"""

import logging
import time
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import Field

from crypto_assets.defs import bronze, gold, gold_trades, silver
from crypto_assets.defs.check_verdicts import ERROR, Verdict
from crypto_assets.defs.drain import BacklogProbe
from crypto_assets.defs.metadata import markdown_table, table_metadata
from crypto_assets.ingest.config import PullConfig
from crypto_assets.ingest.pull import pull_raw_ticks, pull_raw_trades
from crypto_assets.ingest.results import PullResult
from crypto_assets.resources import KafkaResource, LakehouseResource
from crypto_assets.settings import DUCKDB_POOL
from crypto_assets.transforms.anomalies import anomalies_increment, correlations_refresh, publish_alerts
from crypto_assets.transforms.candles import candles_1m_increment, hourly_increment
from crypto_assets.transforms.clean import clean_increment
from crypto_assets.transforms.features import features_increment
from crypto_assets.transforms.trade_anomalies import trade_anomalies_increment
from crypto_assets.transforms.trade_bars import trade_bars_increment
from crypto_assets.warehouse.atomic_files import atomic_write
from crypto_assets.warehouse.lake_export import export_dirty
from crypto_assets.warehouse.table_spec import Table
from crypto_assets.warehouse.tables import TABLES
from crypto_assets.warehouse.watermarks import get_state

SPECS = [bronze.RAW_TICKS, bronze.RAW_TRADES, *gold_trades.SPECS, silver.CLEAN_TICKS, *gold.GOLD_SPECS]  # topological
CHECK_SPECS = [*bronze.CHECKS, *silver.CHECKS, *gold.CHECKS, *gold_trades.CHECKS]
SEVERITY = {**bronze.SEVERITY, **silver.SEVERITY}  # a check not named here fails as an error
KEYS = [s.key.to_user_string() for s in SPECS]
# Per-batch lines go to the step's compute log; notices (resets) are re-logged as run events.
PULL_LOG = logging.getLogger("crypto_assets.ingest")


class IncrementalConfig(dg.Config):
    drain_seconds: float = Field(default=0.0, ge=0, description="keep pulling new messages for this long (the "
                                 "backlog sensor sets it); 0: one pass")
    pass_interval_seconds: float = Field(default=1.0, ge=0, description="while draining, start a pass at most this often")
    pause_seconds: float = Field(default=0.3, ge=0, description="while draining, leave warehouse.duckdb closed at least "
                                 "this long after each pass, so other readers and writers get the file lock")
    export_interval_seconds: float = Field(default=30.0, ge=0, description="rewrite Parquet mirrors at most this often "
                                           "while draining (always at the end)")
    max_messages: int = Field(default=PullConfig.max_messages, description="most messages one pass reads")
    batch_size: int = Field(default=PullConfig.batch_size, description="messages per DuckDB transaction: bounds memory "
                            "(~1 KB each); above a DuckDB row group (122,880) a full batch skips the WAL")
    export_parquet: bool = Field(default=True, description="mirror touched hours to Parquet")
    clean: silver.CleanTicksConfig = Field(default_factory=silver.CleanTicksConfig)
    trades: gold_trades.TradeBarsRunConfig = Field(default_factory=gold_trades.TradeBarsRunConfig)
    freshness_max_age_minutes: float = Field(default=15.0, description="clean_ticks_freshness: newest tick age")
    quarantine_threshold: float = Field(default=0.05, description="raw_ticks_quarantine_rate: share quarantined")
    quarantine_last_batches: int = Field(default=20, description="raw_ticks_quarantine_rate: over this many batches")


class _Run:
    """Totals over a run's passes: numbers per asset, seq ranges, check verdicts, timings."""

    def __init__(self) -> None:
        self.sums: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
        self.last: dict[str, dict[str, Any]] = defaultdict(dict)
        self.seqs: dict[str, list[int]] = defaultdict(list)
        self.changed: set[str] = set()
        self.seconds: dict[str, float] = defaultdict(float)
        self.verdicts: dict[dg.AssetCheckKey, Verdict] = {}
        self.check_seconds: dict[dg.AssetCheckKey, float] = defaultdict(float)
        self.passes = 0
        self.started = datetime.now(UTC)

    def add(self, asset: str, seconds: float, numbers: dict[str, float] | None = None, seq: int | None = None,
            changed: bool = False, **last: Any) -> None:
        self.seconds[asset] += seconds
        for k, v in (numbers or {}).items():
            self.sums[asset][k] += v
        if seq is not None and changed:
            self.seqs[asset].append(seq)
        if changed:
            self.changed.add(asset)
        self.last[asset].update(last)

    def judge(self, spec: dg.AssetCheckSpec, rule, *args) -> bool:
        """Evaluate a rule, keep the first failure (or the latest pass), return whether it passed."""
        t0 = time.perf_counter()
        v = rule(*args)
        self.check_seconds[spec.key] += time.perf_counter() - t0
        prev = self.verdicts.get(spec.key)
        if prev is None or prev.passed:
            self.verdicts[spec.key] = v
        return v.passed


def _timed(fn, *args):
    t0 = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - t0


def _unconsumed(conn, seq: int, consumers: list[str]) -> tuple[int, int] | None:
    """(after, up to) of the sequence numbers an asset stamped that some consumer has not processed
    yet: what its blocking checks must judge before anything downstream reads it."""
    consumed = min(get_state(conn, c)[0] for c in consumers)
    return (consumed, seq) if consumed < seq else None


def _pull(ctx: dg.AssetExecutionContext, cfg: IncrementalConfig, kafka: KafkaResource, lakehouse: LakehouseResource,
          run: _Run, asset: str) -> PullResult:
    """One bronze pull (raw_ticks or raw_trades), added to the run's totals."""
    puller = pull_raw_ticks if asset == "raw_ticks" else pull_raw_trades
    pull_cfg = PullConfig(max_messages=cfg.max_messages, batch_size=cfg.batch_size, export_parquet=False)
    pull, secs = _timed(lambda: puller(kafka, lakehouse, pull_cfg, run_id=ctx.run.run_id, logger=PULL_LOG))
    for notice in pull.notices:
        ctx.log.warning(notice)
    if not pull.kafka_commit_ok:
        ctx.log.warning(f"{asset}: offsets were committed to DuckDB but not to the Kafka consumer group (lag monitor only)")
    run.add(asset, secs, bronze.pull_numbers(pull), changed=bool(pull.batches), **bronze.pull_last(pull))
    if pull.notices:
        run.last[asset]["notices"] = dg.MetadataValue.md("\n".join(f"- {n}" for n in pull.notices))
    batches = bronze.batch_range(pull)
    if batches:
        run.seqs[asset] += list(batches)
    return pull


def _pass(ctx: dg.AssetExecutionContext, cfg: IncrementalConfig, kafka: KafkaResource, lakehouse: LakehouseResource,
          run: _Run, selected: set[str], checks_on: set[dg.AssetCheckKey],
          pulled: set[str]) -> tuple[bool, list[PullResult]]:
    """One micro-batch through every selected member; of the bronze ones only those in `pulled`
    (the draining run's probe saw new messages on their topic). Returns (blocked, the pulls)."""
    pull = _pull(ctx, cfg, kafka, lakehouse, run, "raw_ticks") if "raw_ticks" in selected & pulled else None
    trades = _pull(ctx, cfg, kafka, lakehouse, run, "raw_trades") if "raw_trades" in selected & pulled else None
    pulls = [p for p in (pull, trades) if p is not None]
    with lakehouse.connect() as conn:
        if "raw_ticks" in selected and pull is not None and pull.batches:
            if bronze.QUARANTINE_RATE.key in checks_on:
                run.judge(bronze.QUARANTINE_RATE, bronze.quarantine_rate, conn, cfg.quarantine_threshold,
                          cfg.quarantine_last_batches, kafka.raw_topic)
            if bronze.OFFSET_CONTIGUITY.key in checks_on:
                run.judge(bronze.OFFSET_CONTIGUITY, bronze.offset_contiguity, conn, bronze.batch_range(pull))
        if "clean_ticks" in selected:
            res, secs = _timed(clean_increment, conn, list(lakehouse.coins), cfg.clean.to_clean_config())
            changed = res.raw_batches is not None
            run.add("clean_ticks", secs, {"rows_in": res.rows_in, "rows_written": res.rows_out,
                                          "quarantined": res.quarantined,
                                          **{f"quarantine_reasons/{k}": v for k, v in res.reasons.items()}},
                    seq=res.seq, changed=changed)
            if changed and silver.RECONCILIATION.key in checks_on:
                run.judge(silver.RECONCILIATION, silver.reconciliation, conn, res.raw_batches)
            pending = _unconsumed(conn, res.seq, ["market_features", "ohlcv_1m", "ohlcv_1h", "hourly_stats"])
            if pending is not None:
                ok = True
                if silver.CLEAN_UNIQUE.key in checks_on:
                    ok &= run.judge(silver.CLEAN_UNIQUE, silver.unique_ticks, conn, pending)
                if silver.CLEAN_POSITIVE.key in checks_on:
                    ok &= run.judge(silver.CLEAN_POSITIVE, silver.positive_prices, conn, pending)
                if not ok:
                    ctx.log.error("a blocking clean_ticks check failed: nothing downstream runs in this pass")
                    return True, pulls
        blocked = False
        if "market_features" in selected:
            res, secs = _timed(features_increment, conn)
            changed = res.recomputed_from is not None
            run.add("market_features", secs, {"rows_recomputed": res.rows_written}, seq=res.seq, changed=changed,
                    coins_touched=res.coins)
            pending = _unconsumed(conn, res.seq, ["anomalies"])
            if pending is not None and gold.FEATURES_FINITE.key in checks_on:
                blocked |= not run.judge(gold.FEATURES_FINITE, gold.features_finite, conn, pending)
        if "anomalies" in selected and not blocked:
            res, secs = _timed(anomalies_increment, conn)
            published, psecs = _timed(publish_alerts, conn, kafka)
            run.add("anomalies", secs + psecs, {"new_anomalies": res["new"], "alerts_published": published},
                    changed=not res["skipped"], alerts_topic=kafka.alerts_topic)
        if "ohlcv_1m" in selected:
            res, secs = _timed(candles_1m_increment, conn)
            changed = res.rows_written > 0
            run.add("ohlcv_1m", secs, {"candles_recomputed": res.rows_written}, seq=res.seq, changed=changed)
            pending = _unconsumed(conn, res.seq, ["correlations"])
            if pending is not None and gold.RSI_RANGE.key in checks_on:
                blocked |= not run.judge(gold.RSI_RANGE, gold.rsi_in_range, conn, pending)
        for asset in ("ohlcv_1h", "hourly_stats"):
            if asset in selected:
                res, secs = _timed(hourly_increment, conn, asset)
                run.add(asset, secs, {"rows_recomputed": res.rows_written}, seq=res.seq, changed=res.rows_written > 0)
        if "correlations" in selected and not blocked:
            res, secs = _timed(correlations_refresh, conn)
            run.add("correlations", secs, changed=not res["skipped"], window_end=str(res.get("window_end", "")))
        blocked |= _trade_gold(cfg, kafka, conn, run, selected, checks_on)
        if "clean_ticks" in selected and silver.FRESHNESS.key in checks_on:
            run.judge(silver.FRESHNESS, silver.freshness, conn, cfg.freshness_max_age_minutes)
    return blocked, pulls


def _trade_gold(cfg: IncrementalConfig, kafka: KafkaResource, conn, run: _Run, selected: set[str],
                checks_on: set[dg.AssetCheckKey]) -> bool:
    """raw_trades → the trade candles (their sanity check on the bars the pass wrote) → the trade
    anomaly rules and the alert outbox. Returns whether a blocking check failed."""
    widths = tuple(w for w in gold_trades.WIDTHS if w in selected)
    blocked = False
    if widths:
        res, secs = _timed(trade_bars_increment, conn, cfg.trades.bars(), None, widths)
        for w in widths:
            numbers: dict[str, float] = {"bars_written": res.bars[w]}
            if w == "trade_bars_1s":
                numbers["late_trades_quarantined"] = res.late
            run.add(w, secs / len(widths), numbers, seq=res.seqs.get(w), changed=res.bars[w] > 0)
            check = gold_trades.CHECK_BY_ASSET[w]
            if res.bars[w] and check.key in checks_on:
                blocked |= not run.judge(check, gold_trades.trade_bars_sane, conn, w, res.seqs[w])
    if "anomalies" in selected and not blocked:
        res, secs = _timed(trade_anomalies_increment, conn, cfg.trades.anomalies())
        published, psecs = _timed(publish_alerts, conn, kafka)
        run.add("anomalies", secs + psecs, {"new_trade_anomalies": res["new"], "alerts_published": published},
                changed=not res["skipped"])
    return blocked


def _export(lakehouse: LakehouseResource, run: _Run, selected: set[str]) -> None:
    """Rewrite the Parquet hours the passes marked (lake_pending), per dataset."""
    with lakehouse.connect() as conn:
        for asset in selected:
            t = TABLES[asset]
            if t.dataset is None or t.single_file:
                continue
            res, secs = _timed(export_dirty, conn, lakehouse.lake_path, t.dataset, asset, t.time_column, t.export_order)
            run.add(asset, secs, {"parquet_files_rewritten": res.partitions})
        if "correlations" in selected and "correlations" in run.changed:
            _, secs = _timed(_write_single_file, conn, lakehouse.lake_path, TABLES["correlations"])
            run.add("correlations", secs)


def _write_single_file(conn, lake_root: Path, table: Table) -> None:
    """A table rebuilt whole each time (correlations): one file, replaced atomically. No fsync:
    its rows stay in DuckDB and the next refresh writes the file again (see atomic_files)."""
    assert table.dataset is not None, table.name  # a single-file table has a mirror
    directory = lake_root / table.dataset
    directory.mkdir(parents=True, exist_ok=True)
    with atomic_write(directory / f"{table.name}.parquet", fsync=False) as tmp:
        conn.execute(f"COPY (SELECT * FROM {table.name} ORDER BY {table.export_order}) TO '{tmp}' (FORMAT parquet)")


def _new_rows(asset: str, run: _Run) -> str:
    """The predicate that selects the rows this run wrote (for time range and preview)."""
    seq_col = TABLES[asset].seq_column
    if asset == "anomalies":
        return f"detected_at >= '{run.started.isoformat()}'"
    if seq_col is None or not run.seqs[asset]:
        return "TRUE" if asset == "correlations" else "FALSE"
    return f"{seq_col} BETWEEN {min(run.seqs[asset])} AND {max(run.seqs[asset])}"


_CORRELATIONS_PREVIEW = "corr DESC NULLS LAST"  # the strongest pairs first


def _results(lakehouse: LakehouseResource, run: _Run, selected: set[str], blocked: bool):
    with lakehouse.connect() as conn:
        for asset in KEYS:
            if asset not in selected or (blocked and asset not in run.changed):
                continue
            t0 = time.perf_counter()
            t = TABLES[asset]
            md: dict[str, Any] = table_metadata(conn, asset, t.time_column,
                                                _CORRELATIONS_PREVIEW if asset == "correlations" else None,
                                                new_rows=_new_rows(asset, run))
            md.update({k: (int(v) if float(v).is_integer() else round(v, 4)) for k, v in run.sums[asset].items()})
            md.update(run.last[asset])
            if asset in gold_trades.WIDTHS and asset in run.changed:
                md.update(gold_trades.products_written(conn, asset, _new_rows(asset, run)))
            if asset == "raw_trades" and asset in run.changed:
                md.update(bronze.trades_metadata(conn, _new_rows(asset, run)))
            if asset == "anomalies":
                by_rule = conn.sql(f"SELECT rule, severity, count(*) FROM anomalies WHERE {_new_rows(asset, run)} "
                                   "GROUP BY ALL ORDER BY ALL").fetchall()
                md["new_by_rule"] = dg.MetadataValue.md(markdown_table(by_rule, ["rule", "severity", "count"]))
            if t.dataset and not t.single_file:
                md["parquet_path"] = dg.MetadataValue.path(str(lakehouse.lake_path / t.dataset))
            md["passes"] = run.passes
            md["duration_s"] = round(run.seconds[asset] + time.perf_counter() - t0, 4)
            yield dg.MaterializeResult(asset_key=asset, metadata=md)
    for key, v in run.verdicts.items():
        md = dict(v.metadata)
        md["duration_s"] = round(run.check_seconds[key], 4)
        md["passes"] = run.passes
        yield dg.AssetCheckResult(asset_key=key.asset_key, check_name=key.name, passed=v.passed, metadata=md,
                                  severity=SEVERITY.get(key, ERROR), description=v.description or None)


@dg.multi_asset(
    name="incremental",
    specs=SPECS,
    check_specs=CHECK_SPECS,
    can_subset=True,
    pool=DUCKDB_POOL,
    description="The incremental path in one step: pull the Kafka backlog and carry it through silver and gold, "
    "pass after pass for `drain_seconds` (as the backlog sensor launches it), checks on each pass's rows.",
)
def incremental(context: dg.AssetExecutionContext, config: IncrementalConfig, kafka: KafkaResource,
                lakehouse: LakehouseResource):
    selected = {k.to_user_string() for k in context.selected_asset_keys}
    checks_on = set(context.selected_asset_check_keys)
    run = _Run()
    deadline = time.monotonic() + config.drain_seconds
    last_export = time.monotonic()
    bronze_assets = selected & {"raw_ticks", "raw_trades"}
    probe = BacklogProbe(kafka) if config.drain_seconds > 0 and bronze_assets else None
    latest: dict[str, PullResult] = {}  # topic -> its newest pull: where the probe compares from
    pulled = set(bronze_assets)  # the first pass pulls every topic (resets, an interrupted DLQ send)
    try:
        while True:
            pass_start = time.monotonic()
            blocked, pulls = _pass(context, config, kafka, lakehouse, run, selected, checks_on, pulled)
            latest.update({p.topic: p for p in pulls})
            run.passes += 1
            if config.export_parquet and time.monotonic() - last_export >= config.export_interval_seconds:
                _export(lakehouse, run, selected)
                last_export = time.monotonic()
            if blocked or probe is None or not latest:
                break
            not_before = max(pass_start + config.pass_interval_seconds, time.monotonic() + config.pause_seconds)
            fresh = probe.wait_for_messages(list(latest.values()), not_before=not_before, deadline=deadline)
            if not fresh:
                break
            pulled = {asset for asset, topic in (("raw_ticks", kafka.raw_topic), ("raw_trades", kafka.trades_topic))
                      if topic in fresh} & bronze_assets
    finally:
        if probe is not None:
            probe.close()
    if "raw_trades" in run.changed and bronze.TRADE_GAPS.key in checks_on:
        with lakehouse.connect() as conn:  # the state the run leaves: gaps healed in a later pass count
            run.judge(bronze.TRADE_GAPS, bronze.trade_gaps, conn)
    if config.export_parquet:
        _export(lakehouse, run, selected)
    context.log.info(f"{run.passes} passes; changed: {sorted(run.changed) or 'nothing'}")
    yield from _results(lakehouse, run, selected, blocked)
