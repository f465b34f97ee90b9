"""Predictions from the champion models, published to Kafka.

The run never holds warehouse.duckdb while MLflow or Spark work: one short connection reads the
feature rows to score, scoring runs without a connection, and one short transaction writes them
if the high-water mark it started from has not moved meanwhile (optimistic: another predictions
run that wrote first wins, and this one scores the rows after it). No pool: the DuckDB file lock
(LakehouseResource.connect waits for it) orders the two short accesses with the pipeline.
"""

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

import dagster as dg
import orjson
import polars as pl
from dagster_pyspark import LazyPySparkResource
from pydantic import Field

from crypto_assets.defs.code_versions import source_version
from crypto_assets.defs.metadata import markdown_table, table_definition_metadata
from crypto_assets.kafka.outbox import Outbox, OutboxMessage, header, idents_frame, publish
from crypto_assets.ml.registry import champion_artifact, champion_version, load_champion
from crypto_assets.ml.scoring import score_linear
from crypto_assets.ml.training_set import FEATURES, REGRESSION_HORIZONS, feature_rows
from crypto_assets.resources import KafkaResource, LakehouseResource
from crypto_assets.resources.mlflow import MlflowResource
from crypto_assets.settings import automation_settings
from crypto_assets.warehouse.lake_export import export_dirty, mark_dirty
from crypto_assets.warehouse.sql import transaction
from crypto_assets.warehouse.tables import TABLES
from crypto_assets.warehouse.watermarks import get_state, set_state

PREDICTIONS_DATASET = cast(str, TABLES["predictions"].dataset)
OUTBOX_COLUMNS = ["coin_id", "event_time", "trend_prob_up", "trend_model_version", "anomaly_prob", "anomaly_model_version",
                  "forecast_return_1h", "forecast_return_4h", "forecast_return_24h", "price_model_versions"]


def predictions_condition(cron: str, tz: str = "UTC") -> dg.AutomationCondition:
    """At most once per `cron` tick, and only when there is something new: a tick has passed AND
    features or a model have been updated since predictions were last requested, and no
    predictions run is in progress. (`on_cron` waits for ALL deps to update after the tick, i.e.
    for a retrain.) Both flags reset when the request is made. The update flag is built from
    `newly_updated` directly (not `any_deps_updated()`, whose AND drops the timestamps), so an
    update that lands between a request and the next evaluation outlives that reset; a training
    run's own model updates therefore trigger one more (cheap) predictions run."""
    requested = dg.AutomationCondition.newly_requested().with_label("predictions requested")
    tick = dg.AutomationCondition.cron_tick_passed(cron, tz).since(requested).with_label(
        f"a '{cron}' ({tz}) tick passed since the last request")
    news = dg.AutomationCondition.any_deps_match(dg.AutomationCondition.newly_updated()).since(requested).with_label(
        "new features or a retrained model since the last request")
    idle = (~dg.AutomationCondition.in_progress()).with_label("no predictions run in progress")
    return (tick & news & idle).with_label(f"every '{cron}' tick with new features or models")


PREDICTIONS_CRON = automation_settings().predictions_cron


class PredictionsConfig(dg.Config):
    max_age_hours: float = Field(default=24.0, description="score only feature rows newer than this before the newest")
    max_attempts: int = Field(default=3, ge=1, description="scorings when another predictions run keeps writing first")
    publish_limit: int = Field(default=100_000, description="most outbox rows published per run (the rest next run)")


@dataclass
class Batch:
    """What one scoring works on: the feature rows and the state they were read at."""

    hwm: int
    seq: int
    upstream: int
    rows: pl.DataFrame


@dataclass
class Champions:
    trend: tuple[str | None, dict | None]
    anomaly: tuple[str | None, object]
    price: dict[str, tuple[str, dict]]

    @property
    def empty(self) -> bool:
        return self.trend[0] is None and self.anomaly[0] is None and not self.price


def _predictions(context: dg.AssetExecutionContext, config: PredictionsConfig, lakehouse: LakehouseResource,
                 kafka: KafkaResource, mlflow: MlflowResource, pyspark: LazyPySparkResource) -> dg.MaterializeResult:
    """Trend probability, large-move probability (`anomaly_prob`: a move beyond 3 sigma in the
    next 15 minutes, see ml/training_set.py) and return forecasts for feature rows not yet
    scored, from the `champion` version of each model (recorded per row). Without any champion
    it says so and produces nothing."""
    champs = _champions(mlflow, pyspark)
    if champs.empty:
        context.log.warning("no champion model yet (no version has passed its gate): nothing to predict")
        return dg.MaterializeResult(metadata={"predictions": 0, "reason": "no champion model yet"})
    out, conflicts = None, 0
    for _ in range(config.max_attempts):
        batch = _read_batch(lakehouse, config.max_age_hours)
        if batch.rows.height == 0 and batch.upstream == batch.hwm:
            out = None
            break
        out = _score(batch.rows, champs, pyspark)
        if _write(lakehouse, batch, out):
            break
        conflicts += 1
        context.log.warning(f"predictions high-water mark moved from {batch.hwm} (seq {batch.seq}) while scoring: "
                            "another predictions run wrote first; scoring the rows after it")
    else:
        context.log.warning(f"another predictions run wrote first {conflicts} times: leaving its rows to it")
        return dg.MaterializeResult(metadata={"predictions": 0, "hwm_conflicts": conflicts,
                                              "reason": "superseded by a concurrent predictions run"})
    published = _publish(lakehouse, kafka, config.publish_limit)
    mirrored = _export(lakehouse)
    n = 0 if out is None else out.height
    md = {
        "predictions": n,
        "published": published,
        "hwm_conflicts": conflicts,
        "parquet_files_rewritten": mirrored,
        "trend_model_version": champs.trend[0] or "none",
        "anomaly_model_version": champs.anomaly[0] or "none",
        "price_model_versions": {h: v for h, (v, _) in champs.price.items()},
    }
    if out is not None and n:
        latest = (out.sort("event_time").group_by("coin_id").last().sort("coin_id")
                  .select("coin_id", "event_time", pl.col("trend_prob_up").round(3), pl.col("anomaly_prob").round(3),
                          pl.col("forecast_return_1h").round(5)))
        md["latest_per_coin"] = dg.MetadataValue.md(markdown_table(latest.rows(), ["coin", "time", "p(up)", "p(large move)", "fcst 1h"]))
    return dg.MaterializeResult(metadata=md)


def _has(mlflow: MlflowResource, model: str) -> bool:
    try:
        mlflow.client().get_registered_model(mlflow.registered_name(model))
        return True
    except Exception:  # noqa: BLE001
        return False


def _champions(mlflow: MlflowResource, pyspark: LazyPySparkResource) -> Champions:
    """Every champion's version and what scoring needs (coefficients; the forest as a Spark model)."""
    trend = champion_artifact(mlflow, mlflow.registered_name("trend_model"), "linear_coefficients.json")
    price = {}
    for h in REGRESSION_HORIZONS:
        try:
            v, c = champion_artifact(mlflow, mlflow.registered_name(f"price_model_{h}"), "linear_coefficients.json")
        except Exception:  # noqa: BLE001 - model never registered
            v, c = None, None
        if v is not None:
            price[h] = (v, c)
    anomaly: tuple[str | None, object] = (None, None)
    if _has(mlflow, "anomaly_model") and champion_version(mlflow, mlflow.registered_name("anomaly_model")):
        pyspark.spark_session  # noqa: B018 - mlflow.spark.load_model needs a live session (JVM)
        anomaly = load_champion(mlflow, mlflow.registered_name("anomaly_model"))
    return Champions(trend, anomaly, price)


def _read_batch(lakehouse: LakehouseResource, max_age_hours: float) -> Batch:
    """One short connection: the state and the feature rows past the high-water mark."""
    with lakehouse.connect() as conn:
        conn.execute(TABLES["predictions"].ddl)
        hwm, seq = get_state(conn, "predictions")
        upstream = get_state(conn, "market_features")[1]
        rows = feature_rows(conn, hwm, upstream, max_age_hours)
    return Batch(hwm, seq, upstream, rows)


def _score(rows: pl.DataFrame, champs: Champions, pyspark: LazyPySparkResource) -> pl.DataFrame:
    """The predictions table's rows for `rows`, without any DuckDB connection."""
    n = rows.height
    (trend_v, trend_coef), (anomaly_v, anomaly_model) = champs.trend, champs.anomaly
    null = pl.lit(None, dtype=pl.Float64)
    out = rows.select("coin_id", "symbol", "event_time", "price_usd").with_columns(
        trend_prob_up=pl.Series(score_linear(rows, trend_coef)) if trend_coef and n else null,
        trend_model_version=pl.lit(trend_v, dtype=pl.String),
    )
    if anomaly_model is not None and n:
        from pyspark.ml.functions import vector_to_array
        from pyspark.sql.functions import col

        # Arrow both ways: one double column back instead of VectorUDT objects unpickled row by row
        sdf = pyspark.spark_session.createDataFrame(rows.select(FEATURES).to_pandas())
        model = cast(Any, anomaly_model)  # a Spark PipelineModel (load_champion)
        probs = model.transform(sdf).select(vector_to_array(col("probability"))[1].alias("p")).toPandas()
        out = out.with_columns(anomaly_prob=pl.Series(probs["p"].to_numpy()))
    else:
        out = out.with_columns(anomaly_prob=null)
    out = out.with_columns(anomaly_model_version=pl.lit(anomaly_v, dtype=pl.String))
    for h in REGRESSION_HORIZONS:
        fc = pl.Series(score_linear(rows, champs.price[h][1])) if h in champs.price and n else null
        out = out.with_columns(fc.alias(f"forecast_return_{h}"))
    return out.with_columns(
        price_model_versions=pl.lit(",".join(f"{h}:v{v}" for h, (v, _) in champs.price.items()) or None, dtype=pl.String),
        predicted_at=pl.lit(datetime.now(UTC)),
        published_at=pl.lit(None, dtype=pl.Datetime("us", "UTC")),
    )


def _write(lakehouse: LakehouseResource, batch: Batch, out: pl.DataFrame) -> bool:
    """One short transaction: the rows and the new state, only if the state is still the one the
    batch was read at (False: someone else moved it; nothing is written)."""
    with lakehouse.connect() as conn, transaction(conn):
        if get_state(conn, "predictions") != (batch.hwm, batch.seq):
            return False
        conn.register("pred_new", out.to_arrow())
        conn.execute("INSERT OR REPLACE INTO predictions SELECT * FROM pred_new")
        mark_dirty(conn, PREDICTIONS_DATASET, "SELECT event_time, symbol FROM pred_new")
        conn.unregister("pred_new")
        set_state(conn, "predictions", batch.upstream, batch.seq + 1)
    return True


def _export(lakehouse: LakehouseResource) -> int:
    """One short connection: rewrite the Parquet hours of gold/predictions the writes marked (the
    read API serves the mirror, never this file). After the publish, so published_at is current."""
    t = TABLES["predictions"]
    with lakehouse.connect() as conn:
        conn.execute(t.ddl)
        res = export_dirty(conn, lakehouse.lake_path, PREDICTIONS_DATASET, t.name, "event_time", cast(str, t.export_order))
    return res.partitions


def _publish(lakehouse: LakehouseResource, kafka: KafkaResource, limit: int = 100_000) -> int:
    """Outbox to crypto_predictions (key = coin_id), exactly once also across a kill
    (crypto_assets.kafka.outbox), with no connection open while sending. A row is marked by its
    key and predicted_at: a row re-scored meanwhile stays unpublished."""
    return publish(kafka, predictions_outbox(kafka), lakehouse.connect, limit)


def predictions_outbox(kafka: KafkaResource) -> Outbox:
    """The predictions: a JSON message of OUTBOX_COLUMNS per row, identified by its key and its
    `event_time` and `predicted_at` headers."""
    return Outbox(name="predictions", topic=kafka.predictions_topic, pending=_pending_predictions,
                  mark_sent=_mark_predictions_sent, identity=_prediction_identity)


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat()


def _pending_predictions(conn, limit: int) -> list[OutboxMessage]:
    conn.execute(TABLES["predictions"].ddl)
    rows = conn.sql(
        f"SELECT {', '.join(OUTBOX_COLUMNS)}, predicted_at FROM predictions WHERE published_at IS NULL "
        "ORDER BY event_time, coin_id LIMIT ?",
        params=[limit],
    ).fetchall()
    out = []
    for r in rows:
        doc = dict(zip(OUTBOX_COLUMNS, r, strict=False))
        event_time, predicted_at = _iso(doc["event_time"]), _iso(r[-1])
        doc["event_time"] = event_time.replace("+00:00", "Z")
        out.append(OutboxMessage((doc["coin_id"], event_time, predicted_at), doc["coin_id"], orjson.dumps(doc),
                                 [("event_time", event_time.encode()), ("predicted_at", predicted_at.encode())]))
    return out


def _prediction_identity(message) -> tuple[str, str, str] | None:
    event_time, predicted_at = header(message, "event_time"), header(message, "predicted_at")
    if message.key() is None or event_time is None or predicted_at is None:
        return None
    return message.key().decode(), event_time, predicted_at


def _mark_predictions_sent(conn, sent: list[tuple[str, str, str]]) -> None:
    parsed = [(coin, datetime.fromisoformat(t), datetime.fromisoformat(p)) for coin, t, p in sent]
    conn.register("pred_sent", idents_frame(parsed, {"coin_id": pl.String, "event_time": pl.Datetime("us", "UTC"),
                                                     "predicted_at": pl.Datetime("us", "UTC")}))
    try:
        conn.execute(
            "UPDATE predictions p SET published_at = now() FROM pred_sent s WHERE p.coin_id = s.coin_id "
            "AND p.event_time = s.event_time AND p.predicted_at = s.predicted_at AND p.published_at IS NULL"
        )
    finally:
        conn.unregister("pred_sent")


# Decorated here, at the end, so that its code version can hash its source and every helper
# above that it calls (see defs/code_versions.py).
predictions = dg.asset(
    name="predictions",
    deps=["market_features", "trend_model", "anomaly_model", "price_model"],
    group_name="models",
    kinds={"duckdb", "kafka", "mlflow"},
    owners=["team:ml"],
    code_version=source_version(_predictions, PredictionsConfig),
    automation_condition=predictions_condition(PREDICTIONS_CRON),
    metadata=table_definition_metadata("predictions"),
)(_predictions)
