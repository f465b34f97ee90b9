"""Anomalies and their alerts on Kafka."""

import dagster as dg

from crypto_assets.assets.ingest import DUCKDB_POOL
from crypto_assets.assets.metadata import markdown_table, table_metadata
from crypto_assets.lake import export_dirty, mark_dirty
from crypto_assets.resources import KafkaResource, LakehouseResource
from crypto_assets.transforms.market import anomalies_increment, publish_alerts


@dg.asset(
    deps=["market_features"],
    group_name="gold",
    kinds={"duckdb", "kafka"},
    owners=["team:data-eng"],
    pool=DUCKDB_POOL,
    code_version="1",
)
def anomalies(context: dg.AssetExecutionContext, lakehouse: LakehouseResource, kafka: KafkaResource) -> dg.MaterializeResult:
    """|z| > 3 against the 15-minute window and 24h-volume spikes > 200 % vs the previous tick,
    with rule, severity and values. Each new anomaly is published once to `crypto_alerts`."""
    with lakehouse.connect() as conn:
        res = anomalies_increment(conn)
        mark_dirty(conn, "gold/anomalies", "SELECT event_time, symbol FROM anomalies WHERE published_at IS NULL")
        published = publish_alerts(conn, kafka)
        export_dirty(conn, lakehouse.lake_path, "gold/anomalies", "anomalies", "event_time", "event_time")
        md = table_metadata(conn, "anomalies", "event_time")
        by_rule = conn.sql("SELECT rule, severity, count(*) FROM anomalies GROUP BY ALL ORDER BY ALL").fetchall()
    md.update(
        {
            "new_anomalies": res["new"],
            "alerts_published": published,
            "alerts_topic": kafka.alerts_topic,
            "by_rule": dg.MetadataValue.md(markdown_table(by_rule, ["rule", "severity", "count"])),
        }
    )
    return dg.MaterializeResult(metadata=md)
