"""Kafka → DuckDB ingestion (bronze): bulk parsing of contract messages and the exactly-once pull
(pull.py orchestrates; its steps are the modules beside it)."""
