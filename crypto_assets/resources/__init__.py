"""Dagster ConfigurableResources: Kafka, the lakehouse (DuckDB + Parquet), Spark, MLflow."""

from crypto_assets.resources.kafka import KafkaResource
from crypto_assets.resources.lakehouse import LakehouseResource

__all__ = ["KafkaResource", "LakehouseResource"]
