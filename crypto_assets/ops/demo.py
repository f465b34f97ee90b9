"""`crypto-assets demo`: the README's first command. Embedded broker, simulated history,
every asset materialized through Dagster (runs recorded in $CRYPTO_HOME/dagster so
`dagster dev` shows them afterwards), and a summary a person can read."""

from __future__ import annotations

import argparse
import os
import shutil
import time
from pathlib import Path

from crypto_assets import settings
from crypto_assets.kafka.embedded_broker import EmbeddedBroker, read_broker_file, remove_broker_file, write_broker_file
from crypto_assets.ops.home import prepare_home
from crypto_assets.ops.processes import pid_alive


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--home", help="data root (default $CRYPTO_HOME or ./var)")
    p.add_argument("--history", default="3d", help="simulated history to produce, e.g. 7d (default 3d)")
    p.add_argument("--interval", default="60s", help="spacing of simulated ticks per coin (default 60s)")
    p.add_argument("--bad-ratio", type=float, default=0.002, help="share of malformed messages to inject")
    p.add_argument("--trade-rate", type=float, default=0.2,
                   help="simulated trades per second per product (0: no trades; default 0.2)")
    p.add_argument("--trade-window", default="3h",
                   help="simulated trades cover the last part of the history, e.g. 3h (default 3h)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--fresh", action="store_true", help="delete the data root first")


def cmd_demo(args) -> int:
    home = Path(args.home).resolve() if args.home else settings.crypto_home()
    if args.fresh and home.exists():
        shutil.rmtree(home)
    home.mkdir(parents=True, exist_ok=True)
    os.environ["CRYPTO_HOME"] = str(home)
    prepare_home(home)
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

    broker = None
    info = read_broker_file(home)
    if settings.kafka_bootstrap_override():
        print(f"using Kafka at {settings.kafka_bootstrap_override()}")
    elif info and (bool(info.get("pid")) and pid_alive(int(info["pid"]))):
        print(f"using the running embedded broker at {info['bootstrap_servers']}")
    else:
        broker = EmbeddedBroker()
        broker.start()
        write_broker_file(home, broker)
        print(f"embedded Kafka broker on {broker.bootstrap_servers} (cluster {broker.cluster_id})")
    try:
        return _run(args, home)
    finally:
        if broker is not None:
            remove_broker_file(home)
            broker.stop()




def _run(args, home: Path) -> int:
    import dagster as dg

    from crypto_assets import definitions
    from crypto_assets.durations import parse_duration
    from crypto_assets.producers.simulator.config import SimulatorConfig
    from crypto_assets.producers.simulator.run import run_simulator
    from crypto_assets.settings import kafka_resource

    defs = definitions.defs
    instance = dg.DagsterInstance.get()
    runs: list[tuple[str, str, bool, float]] = []
    check_results: list[tuple[str, str, bool, str]] = []

    def run_job(name: str) -> None:
        t = time.monotonic()
        res = defs.resolve_job_def(name).execute_in_process(
            instance=instance,
            raise_on_error=False,
            run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}},
        )
        runs.append((name, res.run_id, res.success, time.monotonic() - t))
        if name == "demo_job":
            for ev in res.get_asset_check_evaluations():
                check_results.append(
                    (ev.asset_key.to_user_string(), ev.check_name, ev.passed, ev.severity.value)
                )
        if not res.success:
            for ev in res.all_events:
                if ev.is_failure:
                    print(f"  step failed: {ev.step_key}: {ev.event_specific_data}")

    t0 = time.monotonic()
    trades = args.trade_rate > 0
    cfg = SimulatorConfig(
        seed=args.seed,
        bad_ratio=args.bad_ratio,
        history=parse_duration(args.history),
        interval=parse_duration(args.interval),
        mode="both" if trades else "ticks",
        trade_rate=args.trade_rate if trades else 1.0,
        trade_window=parse_duration(args.trade_window) if trades and args.trade_window else None,
        trade_bad_ratio=args.bad_ratio,
    )
    print(f"producing {args.history} of simulated history at {args.interval} per coin "
          + (f"with {args.trade_rate:g} trades/s per product over the last {args.trade_window} " if trades else "")
          + f"(bad ratio {args.bad_ratio}) and ingesting it as it arrives ...")
    produced = run_simulator(
        kafka_resource(),
        cfg,
        log=lambda m: None,
        chunk_size=30_000,
        chunk_callback=lambda c: run_job("ingest_job"),
    )
    print(f"  produced {produced['sent']:,} messages ({produced['bad_total'] + produced.get('trade_bad_total', 0)} "
          f"malformed) in {produced['chunks']} chunks, each ingested by an ingest_job run")
    run_job("demo_job")
    elapsed = time.monotonic() - t0
    print_summary(home, produced, runs, elapsed, check_results)
    return 0 if all(ok for _, _, ok, _ in runs) else 1


def print_summary(home: Path, produced: dict, runs, elapsed: float, check_results=()) -> None:
    from crypto_assets.settings import lakehouse_resource

    lakehouse = lakehouse_resource()
    with lakehouse.connect() as conn:
        raw = conn.sql("SELECT count(*) FROM raw_ticks").fetchall()[0][0]
        quarantined = conn.sql(
            "SELECT reason, count(*) FROM quarantine GROUP BY 1 ORDER BY 2 DESC"
        ).fetchall()
        coins = conn.sql(
            """
            WITH last AS (
                SELECT coin_id, max(event_time) AS t FROM market_features GROUP BY 1
            ), f AS (
                SELECT m.coin_id, m.price_usd, m.volatility_15m, m.event_time, l.t
                FROM market_features m JOIN last l USING (coin_id)
            )
            SELECT f.coin_id,
                   (SELECT count(*) FROM clean_ticks c WHERE c.coin_id = f.coin_id) AS ticks,
                   arg_max(f.price_usd, f.event_time) AS last_price,
                   100 * (arg_max(f.price_usd, f.event_time)
                          / arg_max(f.price_usd, f.event_time) FILTER (f.event_time <= f.t - INTERVAL 1 HOUR) - 1)
                       AS change_1h_pct,
                   arg_max(f.volatility_15m, f.event_time) AS vol_15m,
                   (SELECT count(*) FROM anomalies a WHERE a.coin_id = f.coin_id) AS anomalies,
                   (SELECT arg_max(rsi_14, minute) FROM ohlcv_1m o WHERE o.coin_id = f.coin_id) AS rsi
            FROM f WHERE f.event_time >= f.t - INTERVAL 2 HOUR
            GROUP BY f.coin_id ORDER BY f.coin_id
            """
        ).fetchall()
        counts = {
            t: conn.sql(f"SELECT count(*) FROM {t}").fetchall()[0][0]
            for t in ("clean_ticks", "market_features", "ohlcv_1m", "ohlcv_1h", "hourly_stats", "correlations", "anomalies")
        }
        trade_rows = _trade_summary(conn)
        top_corr = conn.sql(
            "SELECT coin_a, coin_b, corr FROM correlations WHERE window_name = '24h' ORDER BY corr DESC NULLS LAST LIMIT 1"
        ).fetchall()
        lag = conn.sql(
            "SELECT count(DISTINCT batch_id), sum(message_count) FROM ingest_offsets"
        ).fetchall()[0]
    print()
    print("=" * 78)
    print(f"crypto_assets demo — done in {elapsed:,.1f}s; data under {home}")
    print("=" * 78)
    print(f"messages produced   {produced['sent']:>10,}")
    print(f"bronze rows         {raw:>10,}   (raw_ticks, exactly once: {lag[1]:,} offsets in {lag[0]} batches)")
    print(f"quarantined         {sum(n for _, n in quarantined):>10,}   "
          + ", ".join(f"{r}={n}" for r, n in quarantined))
    if "trades_sent" in produced:
        raw_trades, bars, products, trades_in_bars = trade_rows
        print(f"trades produced     {produced['trades_sent']:>10,}   ({produced['trade_bad_total']} malformed) "
              f"-> raw_trades {raw_trades:,}; trade_bars_1m {bars:,} bars of {trades_in_bars:,} trades, "
              f"{products} products")
    print()
    print("tables              " + ", ".join(f"{t}={n:,}" for t, n in counts.items()))
    if top_corr:
        a, b, c = top_corr[0]
        print(f"most correlated     {a}/{b} over 24h: {c:.2f}")
    print()
    print(f"{'coin':<11}{'ticks':>8}{'last price':>14}{'1h change':>11}{'vol 15m':>10}{'RSI 1m':>8}{'anomalies':>11}")
    for coin, n, price, chg, vol, anomalies, rsi in coins:
        chg_s = f"{chg:+.2f}%" if chg is not None else "n/a"
        vol_s = f"{vol * 100:.3f}%" if vol is not None else "n/a"
        rsi_s = f"{rsi:.1f}" if rsi is not None else "n/a"
        print(f"{coin:<11}{n:>8,}{price:>14,.6g}{chg_s:>11}{vol_s:>10}{rsi_s:>8}{anomalies:>11,}")
    print()
    if check_results:
        passed = sum(1 for *_, ok, _ in check_results if ok)
        # a WARN result is a finding (a model not promoted or skipped, stale data), an ERROR a failure
        print(f"asset checks        {passed}/{len(check_results)} passed"
              + "".join(f"\n  {'FAILED' if sev == 'ERROR' else 'warning'} ({sev}) {asset}:{name}"
                        for asset, name, ok, sev in check_results if not ok))
    try:
        from crypto_assets.ml.registry import model_summary, summary_baseline, summary_lift, summary_number
        from crypto_assets.settings import mlflow_resource

        models = model_summary(mlflow_resource())
    except Exception as exc:  # noqa: BLE001 - the summary must not hide the run's own result
        models = []
        print(f"models              (MLflow not readable: {exc})")
    if models:
        print()
        print(f"{'model (MLflow)':<20}{'version':>8}  {'gate':<9}{'metric':<11}{'value':>10}  "
              f"{'strongest baseline':<26}{'lift, CI':<30}champion")
        for m in models:
            print(f"{m['model']:<20}{m['latest_version']:>8}  {m['gate']:<9}{m['metric']:<11}{summary_number(m['value']):>10}  "
                  f"{summary_baseline(m):<26}{summary_lift(m):<30}{'v' + m['champion_version'] if m['champion_version'] else 'none'}")
            if m["baselines"]:
                print(f"{'':<20}  baselines: " + ", ".join(f"{k} {v:.4f}" for k, v in m["baselines"].items()))
        print(f"MLflow store: {mlflow_resource().uri()}  (browse: .venv/bin/mlflow ui --backend-store-uri <that>)")
    print()
    print("Dagster runs (see them with `make ui` / dagster dev):")
    for name, run_id, ok, secs in runs[-4:]:
        print(f"  {name:<14} {run_id[:8]}  {'SUCCESS' if ok else 'FAILURE'}  {secs:5.1f}s")
    if len(runs) > 4:
        print(f"  ... {len(runs) - 4} earlier ingest runs")
    print(f"warehouse: {home / 'warehouse.duckdb'}   parquet: {home / 'lake'}")


def _trade_summary(conn) -> tuple[int, int, int, int]:
    """(raw_trades rows, trade_bars_1m bars, products, trades in bars); bars 0 without the table."""
    raw = conn.sql("SELECT count(*) FROM raw_trades").fetchall()[0][0]
    has_bars = conn.sql("SELECT count(*) FROM duckdb_tables() WHERE table_name = 'trade_bars_1m'").fetchall()[0][0]
    if not has_bars:
        return raw, 0, 0, 0
    bars, products, trades = conn.sql(
        "SELECT count(*), count(DISTINCT (exchange, product)), coalesce(sum(trade_count), 0) FROM trade_bars_1m"
    ).fetchall()[0]
    return raw, bars, products, int(trades)
