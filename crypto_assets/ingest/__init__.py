"""Kafka → DuckDB ingestion: bulk parsing of contract messages and the exactly-once pull."""
