"""The one Definitions object holds exactly the jobs, sensors, schedules, assets and checks the
README names, wired as it describes."""

import dagster as dg

from crypto_assets.definitions import defs

TRADE_BARS = ["trade_bars_1s", "trade_bars_1m", "trade_bars_1h"]
INCREMENTAL_ASSETS = {"raw_ticks", "raw_trades", "clean_ticks", "market_features", "ohlcv_1m", "ohlcv_1h", "hourly_stats",
                      "correlations", "anomalies", *TRADE_BARS}
MODEL_ASSETS = {"trend_model", "anomaly_model", "price_model", "coin_clusters"}
HISTORY_ASSETS = {"klines_1m"}
ALL_ASSETS = INCREMENTAL_ASSETS | MODEL_ASSETS | {"training_set", "predictions", "market_report"} | HISTORY_ASSETS
HISTORY_CHECKS = {("klines_1m", "klines_1m_complete")}
# External assets (crypto_assets/defs/sources.py): lineage only, never materialised by a job
SOURCES = {"coingecko_api", "coinbase_exchange", "binance_exchange"}
TOPICS = {"crypto_raw", "crypto_trades", "crypto_raw_dlq", "crypto_trades_dlq", "crypto_alerts", "crypto_predictions"}
# README "asset checks": blocking / non-blocking per-pass checks, the schema drift checks, the gates
BLOCKING_PASS_CHECKS = {
    ("clean_ticks", "clean_ticks_unique"),
    ("clean_ticks", "clean_ticks_positive_price"),
    ("market_features", "market_features_finite"),
    ("ohlcv_1m", "ohlcv_1m_rsi_range"),
    *((w, "trade_bars_sane") for w in TRADE_BARS),
}
NON_BLOCKING_PASS_CHECKS = {
    ("clean_ticks", "clean_ticks_freshness"),
    ("raw_ticks", "raw_ticks_quarantine_rate"),
    ("raw_ticks", "raw_ticks_offset_contiguity"),
    ("raw_trades", "raw_trades_gaps"),
    ("clean_ticks", "clean_ticks_reconciliation"),
}
SCHEMA_CHECKS = {(t, f"{t}_schema_matches_code") for t in
                 ["raw_ticks", "raw_trades", "clean_ticks", "market_features", "ohlcv_1m", "ohlcv_1h", "hourly_stats", "anomalies",
                  *TRADE_BARS]}
GATE_CHECKS = {(m, f"{m}_gate") for m in MODEL_ASSETS}


def _keys(keys) -> set[str]:
    return {k.to_user_string() for k in keys}


def _checks(keys) -> set[tuple[str, str]]:
    return {(k.asset_key.to_user_string(), k.name) for k in keys}


def test_definitions_load_with_exactly_the_named_assets_and_checks():
    dg.Definitions.validate_loadable(defs)
    graph = defs.resolve_asset_graph()
    assert _keys(graph.get_all_asset_keys()) == ALL_ASSETS | SOURCES | TOPICS
    assert _keys(k for k in graph.get_all_asset_keys() if not graph.get(k).is_materializable) == SOURCES | TOPICS
    assert _checks(graph.asset_check_keys) == (BLOCKING_PASS_CHECKS | NON_BLOCKING_PASS_CHECKS | SCHEMA_CHECKS
                                               | GATE_CHECKS | HISTORY_CHECKS)
    blocking = {(k.asset_key.to_user_string(), k.name) for k in graph.asset_check_keys
                if graph.get_check_spec(k).blocking}
    assert blocking == BLOCKING_PASS_CHECKS | GATE_CHECKS
    # the eight incremental assets and their per-pass checks are one step, `incremental`
    step = defs.resolve_assets_def("raw_ticks")
    assert step.node_def.name == "incremental"
    assert _keys(step.keys) == INCREMENTAL_ASSETS
    assert _checks(step.check_keys) == BLOCKING_PASS_CHECKS | NON_BLOCKING_PASS_CHECKS


def _ancestors(graph, key: str) -> set[str]:
    seen: set[str] = set()
    todo = [dg.AssetKey(key)]
    while todo:
        for parent in graph.get(todo.pop()).parent_keys:
            if parent.to_user_string() not in seen:
                seen.add(parent.to_user_string())
                todo.append(parent)
    return seen


def test_lineage_starts_at_the_sources_and_ends_at_the_output_topics():
    graph = defs.resolve_asset_graph()

    def up(key: str) -> set[str]:
        return _keys(graph.get(dg.AssetKey(key)).parent_keys)

    assert up("crypto_raw") == {"coingecko_api"} and up("raw_ticks") == {"crypto_raw"}
    assert up("crypto_trades") == {"coinbase_exchange", "binance_exchange"} and up("raw_trades") == {"crypto_trades"}
    assert up("klines_1m") == {"coinbase_exchange", "binance_exchange"}
    assert up("crypto_alerts") == {"anomalies"} and up("crypto_predictions") == {"predictions"}
    assert up("crypto_raw_dlq") == {"raw_ticks"} and up("crypto_trades_dlq") == {"raw_trades"}
    # every source reaches both output topics through the pipeline; nothing leaves them
    assert SOURCES <= _ancestors(graph, "crypto_alerts")  # tick and trade anomalies alike
    assert "coingecko_api" in _ancestors(graph, "crypto_predictions")
    for topic in ("crypto_alerts", "crypto_predictions"):
        assert not graph.get(dg.AssetKey(topic)).child_keys
    assert {graph.get(dg.AssetKey(k)).group_name for k in SOURCES} == {"sources"}
    assert {graph.get(dg.AssetKey(k)).group_name for k in TOPICS} == {"topics"}


def test_jobs_and_their_selections():
    jobs = {j.name for j in defs.resolve_all_job_defs() if not j.name.startswith("__")}
    assert jobs == {"ingest_job", "incremental_job", "training_job", "demo_job", "maintenance_job", "klines_backfill_job",
                    "report_job"}

    def selection(name: str) -> tuple[set[str], set[tuple[str, str]]]:
        layer = defs.resolve_job_def(name).asset_layer
        return _keys(layer.selected_asset_keys), _checks(layer.asset_graph.asset_check_keys)

    raw_checks = {c for c in NON_BLOCKING_PASS_CHECKS if c[0] in ("raw_ticks", "raw_trades")}
    assert selection("ingest_job") == ({"raw_ticks", "raw_trades"}, raw_checks)
    assert set(defs.resolve_job_def("ingest_job").graph.node_dict) == {"incremental"}
    # the cheap path: no training, no schema drift checks (those run with training)
    assert selection("incremental_job") == (INCREMENTAL_ASSETS, BLOCKING_PASS_CHECKS | NON_BLOCKING_PASS_CHECKS)
    assert selection("training_job") == (MODEL_ASSETS | {"training_set", "predictions"}, SCHEMA_CHECKS | GATE_CHECKS)
    # the history backfill needs the exchanges and a partition: its own job, not the demo's
    assert selection("demo_job")[0] == ALL_ASSETS - HISTORY_ASSETS
    assert selection("klines_backfill_job") == (HISTORY_ASSETS, HISTORY_CHECKS)
    assert selection("demo_job")[1] == BLOCKING_PASS_CHECKS | NON_BLOCKING_PASS_CHECKS | SCHEMA_CHECKS | GATE_CHECKS
    backfill = defs.resolve_job_def("klines_backfill_job")
    assert isinstance(backfill.partitions_def, dg.DailyPartitionsDefinition)
    assert backfill.partitions_def.start.strftime("%Y-%m-%d") == "2025-01-01"
    assert defs.resolve_assets_def("klines_1m").op.pool == "exchange_history"
    maintenance = defs.resolve_job_def("maintenance_job")
    assert set(maintenance.graph.node_dict) == {"purge_dagster_storage", "prune_mlflow", "compact_lake"}
    assert selection("report_job") == ({"market_report"}, set())


def test_sensors_and_schedules():
    assert defs.sensors is not None and defs.schedules is not None
    sensors = {s.name: s for s in defs.sensors}
    assert set(sensors) == {"kafka_backlog_sensor", "predictions_automation", "run_failure_alerts"}
    assert sensors["kafka_backlog_sensor"].job_name == "incremental_job"
    auto = sensors["predictions_automation"]
    assert isinstance(auto, dg.AutomationConditionSensorDefinition)
    assert auto.minimum_interval_seconds == 30
    graph = defs.resolve_asset_graph()
    with_condition = {k.to_user_string() for k in graph.get_all_asset_keys() if graph.get(k).automation_condition}
    assert with_condition == {"predictions"}
    condition = graph.get(dg.AssetKey("predictions")).automation_condition
    assert condition is not None
    assert condition.get_label() == "every '*/5 * * * *' tick with new features or models"

    schedules: dict[str, dg.ScheduleDefinition] = {}
    for s in defs.schedules:
        assert isinstance(s, dg.ScheduleDefinition), s  # cron schedules of jobs: nothing left to resolve
        schedules[s.name] = s
    assert {n: (s.job_name, s.cron_schedule, s.execution_timezone) for n, s in schedules.items()} == {
        "retraining_schedule": ("training_job", "0 * * * *", "UTC"),
        "maintenance_schedule": ("maintenance_job", "*/30 * * * *", "UTC"),
        "report_schedule": ("report_job", "*/15 * * * *", "UTC"),
    }
