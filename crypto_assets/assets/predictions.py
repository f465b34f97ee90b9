"""Predictions from the champion models, published to Kafka."""

from datetime import datetime, timezone

import dagster as dg
import orjson
import polars as pl
from dagster_pyspark import LazyPySparkResource
from pydantic import Field

from crypto_assets.assets.ingest import DUCKDB_POOL
from crypto_assets.assets.metadata import markdown_table
from crypto_assets.ml.registry import champion_artifact, champion_version, load_champion
from crypto_assets.ml.scoring import score_linear
from crypto_assets.ml.training_set import FEATURES, REGRESSION_HORIZONS, feature_rows
from crypto_assets.resources import KafkaResource, LakehouseResource
from crypto_assets.resources.mlflow import MlflowResource
from crypto_assets.db import transaction
from crypto_assets.state import get_state, set_state

PREDICTIONS_DDL = """
CREATE TABLE IF NOT EXISTS predictions (
    coin_id                VARCHAR NOT NULL,
    symbol                 VARCHAR NOT NULL,
    event_time             TIMESTAMPTZ NOT NULL,
    price_usd              DOUBLE NOT NULL,
    trend_prob_up          DOUBLE,
    trend_model_version    VARCHAR,
    anomaly_prob           DOUBLE,
    anomaly_model_version  VARCHAR,
    forecast_return_1h     DOUBLE,
    forecast_return_4h     DOUBLE,
    forecast_return_24h    DOUBLE,
    price_model_versions   VARCHAR,
    predicted_at           TIMESTAMPTZ NOT NULL,
    published_at           TIMESTAMPTZ,
    PRIMARY KEY (coin_id, event_time)
)
"""


class PredictionsConfig(dg.Config):
    max_age_hours: float = Field(default=24.0, description="score only feature rows newer than this before the newest")


@dg.asset(
    deps=["market_features", "trend_model", "anomaly_model", "price_model"],
    group_name="models",
    kinds={"duckdb", "kafka", "mlflow"},
    owners=["team:ml"],
    pool=DUCKDB_POOL,
    code_version="1",
)
def predictions(context: dg.AssetExecutionContext, config: PredictionsConfig, lakehouse: LakehouseResource,
                kafka: KafkaResource, mlflow: MlflowResource, pyspark: LazyPySparkResource) -> dg.MaterializeResult:
    """Trend probability, anomaly probability and return forecasts for feature rows not yet
    scored, from the `champion` version of each model (recorded per row). Without any champion
    it says so and produces nothing."""
    trend_v, trend_coef = champion_artifact(mlflow, mlflow.registered_name("trend_model"), "linear_coefficients.json")
    price = {}
    for h in REGRESSION_HORIZONS:
        try:
            v, c = champion_artifact(mlflow, mlflow.registered_name(f"price_model_{h}"), "linear_coefficients.json")
        except Exception:  # noqa: BLE001 - model never registered
            v, c = None, None
        if v is not None:
            price[h] = (v, c)
    anomaly_v, anomaly_model = None, None
    if _has(mlflow, "anomaly_model") and champion_version(mlflow, mlflow.registered_name("anomaly_model")):
        pyspark.spark_session  # noqa: B018 - mlflow.spark.load_model needs a live session (JVM)
        anomaly_v, anomaly_model = load_champion(mlflow, mlflow.registered_name("anomaly_model"))
    if trend_v is None and anomaly_v is None and not price:
        context.log.warning("no champion model yet (no version has passed its gate): nothing to predict")
        return dg.MaterializeResult(metadata={"predictions": 0, "reason": "no champion model yet"})

    with lakehouse.connect() as conn:
        conn.execute(PREDICTIONS_DDL)
        hwm, seq = get_state(conn, "predictions")
        upstream = get_state(conn, "market_features")[1]
        rows = feature_rows(conn, hwm, upstream, config.max_age_hours)
        n = rows.height
        now = datetime.now(timezone.utc)
        out = rows.select("coin_id", "symbol", "event_time", "price_usd")
        out = out.with_columns(
            trend_prob_up=pl.Series(score_linear(rows, trend_coef)) if trend_coef and n else pl.lit(None, dtype=pl.Float64),
            trend_model_version=pl.lit(trend_v),
        )
        if anomaly_model is not None and n:
            spark = pyspark.spark_session
            from pyspark.ml.functions import vector_to_array

            # Arrow both ways: one double column back instead of VectorUDT objects unpickled row by row
            sdf = spark.createDataFrame(rows.select(FEATURES).to_pandas())
            probs = anomaly_model.transform(sdf).select(vector_to_array("probability")[1].alias("p")).toPandas()
            out = out.with_columns(anomaly_prob=pl.Series(probs["p"].to_numpy()))
        else:
            out = out.with_columns(anomaly_prob=pl.lit(None, dtype=pl.Float64))
        out = out.with_columns(anomaly_model_version=pl.lit(anomaly_v))
        for h in REGRESSION_HORIZONS:
            if h in price and n:
                out = out.with_columns(pl.Series(f"forecast_return_{h}", score_linear(rows, price[h][1])))
            else:
                out = out.with_columns(pl.lit(None, dtype=pl.Float64).alias(f"forecast_return_{h}"))
        out = out.with_columns(
            price_model_versions=pl.lit(",".join(f"{h}:v{v}" for h, (v, _) in price.items()) or None, dtype=pl.String),
            predicted_at=pl.lit(now),
            published_at=pl.lit(None, dtype=pl.Datetime("us", "UTC")),
        )
        with transaction(conn):
            conn.register("pred_new", out.to_arrow())
            conn.execute("INSERT OR REPLACE INTO predictions SELECT * FROM pred_new")
            conn.unregister("pred_new")
            set_state(conn, "predictions", upstream, seq + 1)
        published = _publish(conn, kafka)
        preview = conn.sql(
            "SELECT coin_id, event_time, round(trend_prob_up, 3), round(anomaly_prob, 3), round(forecast_return_1h, 5) "
            "FROM predictions QUALIFY row_number() OVER (PARTITION BY coin_id ORDER BY event_time DESC) = 1 ORDER BY 1"
        ).fetchall()
    return dg.MaterializeResult(
        metadata={
            "predictions": n,
            "published": published,
            "trend_model_version": trend_v or "none",
            "anomaly_model_version": anomaly_v or "none",
            "price_model_versions": {h: v for h, (v, _) in price.items()},
            "latest_per_coin": dg.MetadataValue.md(markdown_table(preview, ["coin", "time", "p(up)", "p(anomaly)", "fcst 1h"])),
        }
    )


def _has(mlflow: MlflowResource, model: str) -> bool:
    try:
        mlflow.client().get_registered_model(mlflow.registered_name(model))
        return True
    except Exception:  # noqa: BLE001
        return False


def _publish(conn, kafka: KafkaResource, limit: int = 100_000) -> int:
    """Outbox to crypto_predictions (key = coin_id)."""
    rows = conn.sql(
        "SELECT coin_id, event_time, trend_prob_up, trend_model_version, anomaly_prob, anomaly_model_version, "
        "forecast_return_1h, forecast_return_4h, forecast_return_24h, price_model_versions "
        "FROM predictions WHERE published_at IS NULL ORDER BY event_time LIMIT ?",
        params=[limit],
    ).fetchall()
    if not rows:
        return 0
    from crypto_assets.sources.producer import TickProducer

    keys = ["coin_id", "event_time", "trend_prob_up", "trend_model_version", "anomaly_prob", "anomaly_model_version",
            "forecast_return_1h", "forecast_return_4h", "forecast_return_24h", "price_model_versions"]
    producer = TickProducer(kafka, topic=kafka.predictions_topic)
    for r in rows:
        doc = dict(zip(keys, r))
        doc["event_time"] = doc["event_time"].astimezone(timezone.utc).isoformat().replace("+00:00", "Z")
        producer.send_raw(doc["coin_id"], orjson.dumps(doc))
    producer.flush()
    conn.execute("UPDATE predictions SET published_at = now() WHERE published_at IS NULL AND event_time <= ?",
                 [max(r[1] for r in rows)])
    return len(rows)
